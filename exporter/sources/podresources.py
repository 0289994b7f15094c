"""Node role: which container holds which GPU, from the kubelet's PodResources v1 gRPC API.

One channel to the kubelet's unix socket, kept open; after an error it is closed and dialled
again, so a kubelet restart (a new socket at the same path) is picked up. The last good answer is
kept for HOLD_SECONDS while the kubelet is away, so a restart does not blank the attribution of
every GPU on the node; `ml_exporter_source_up{source="podresources"}` says it is stale.

Device ids are GPU UUIDs, `MIG-…` UUIDs, or `<id>::<n>` for the n-th time-sliced replica of a
shared GPU (NVIDIA device plugin); the replica suffix is dropped so the id joins the NVML series.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

import grpc

from exporter import catalogue as c
from exporter.config import Config
from exporter.health import HealthRegistry
from exporter.podresources import api_pb2, api_pb2_grpc
from exporter.store import Store

log = logging.getLogger(__name__)

HOLD_SECONDS = 60.0
KEY = "podresources/allocations"
MAX_MESSAGE = 64 * 2**20  # a kubelet with hundreds of pods answers with a few MiB at most


def device_uuid(device_id: str) -> str:
    """`GPU-…::3` -> `GPU-…` (a time-sliced replica is the GPU itself)."""
    return device_id.split("::", 1)[0]


def render(response: api_pb2.ListPodResourcesResponse, node: str, resources: re.Pattern[str]) -> str:
    lines: set[str] = set()  # two replicas of one shared GPU in a container are one allocation
    for pod in response.pod_resources:
        for container in pod.containers:
            for devices in container.devices:
                if not resources.fullmatch(devices.resource_name):
                    continue
                for device_id in devices.device_ids:
                    values = (pod.namespace, pod.name, container.name, node, device_uuid(device_id),
                              devices.resource_name)  # fmt: skip
                    lines.add(c.GPU_ALLOCATION_INFO.sample(values, 1))
    return "".join(sorted(lines))


class PodResourcesSource:
    name = "podresources"

    def __init__(self, store: Store, registry: HealthRegistry, options: Config, node: str) -> None:
        self.store = store
        self.options = options
        self.node = node
        self.health = registry.source(self.name).resource("pod-resources")
        self.resources = re.compile(options.podresources_resources)
        self.target = "unix://" + options.podresources_socket
        self._channel: grpc.aio.Channel | None = None
        self._last_good = 0.0

    async def run(self) -> None:
        try:
            while True:
                await self.poll()
                await asyncio.sleep(self.options.podresources_interval)
        finally:
            if self._channel is not None:
                await self._channel.close()

    async def poll(self) -> None:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                self.target, options=[("grpc.max_receive_message_length", MAX_MESSAGE)]
            )
        stub = api_pb2_grpc.PodResourcesListerStub(self._channel)  # type: ignore[no-untyped-call]
        try:
            response = await stub.List(api_pb2.ListPodResourcesRequest(), timeout=self.options.podresources_timeout)
        except grpc.aio.AioRpcError as exc:
            await self._failed(exc.code().name.lower(), exc.details() or "")
            return
        lines = render(response, self.node, self.resources)
        self.store.put(KEY, {c.GPU_ALLOCATION_INFO: lines})
        if not self.health.up and self.health.synced:
            log.info("PodResources answers again at %s", self.options.podresources_socket)
        self._last_good = time.monotonic()
        self.health.up = self.health.synced = True
        self.health.tracked = lines.count("\n")
        self.health.last_sync = time.time()

    async def _failed(self, reason: str, details: str) -> None:
        self.health.errors[reason] += 1
        if self.health.up or not self.health.synced:
            log.error("PodResources List at %s failed: %s %s", self.options.podresources_socket, reason, details)
        self.health.up = False
        self.health.synced = True  # ready: GPUs are served without attribution
        if time.monotonic() - self._last_good > HOLD_SECONDS:
            self.store.delete(KEY)
            self.health.tracked = 0
        # Dial again next time: the kubelet may have come back on a new socket at the same path.
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()
