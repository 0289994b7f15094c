"""A kubelet PodResources v1 server on a unix socket (real gRPC), for tests and the demo.

It answers `List` with whatever `allocations()` returns at the time of the call, so a test can
change assignments between polls, and it can be stopped and started again on the same path to
play a kubelet restart. It serves from its own threads, so it answers whatever the caller's
event loop is doing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent import futures
from pathlib import Path

import grpc

from exporter.podresources import api_pb2, api_pb2_grpc

# (namespace, pod, container, resource name, device ids)
Allocation = tuple[str, str, str, str, tuple[str, ...]]


def response(allocations: Iterable[Allocation]) -> api_pb2.ListPodResourcesResponse:
    pods: dict[tuple[str, str], api_pb2.PodResources] = {}
    for namespace, pod, container, resource, ids in allocations:
        entry = pods.get((namespace, pod))
        if entry is None:
            entry = pods[namespace, pod] = api_pb2.PodResources(name=pod, namespace=namespace)
        holder = next((ctr for ctr in entry.containers if ctr.name == container), None)
        if holder is None:
            holder = entry.containers.add(name=container)
        holder.devices.add(resource_name=resource, device_ids=list(ids))
    return api_pb2.ListPodResourcesResponse(pod_resources=list(pods.values()))


class Lister(api_pb2_grpc.PodResourcesListerServicer):
    def __init__(self, allocations: Callable[[], Iterable[Allocation]]) -> None:
        self.allocations = allocations
        self.calls = 0

    def List(  # the gRPC method's name
        self, request: api_pb2.ListPodResourcesRequest, context: grpc.ServicerContext
    ) -> api_pb2.ListPodResourcesResponse:
        self.calls += 1
        return response(self.allocations())


class PodResourcesServer:
    def __init__(self, socket: Path, allocations: Callable[[], Iterable[Allocation]]) -> None:
        self.socket = socket
        self.lister = Lister(allocations)
        self._server: grpc.Server | None = None

    def start(self) -> None:
        if self.socket.exists():
            os.unlink(self.socket)  # as the kubelet does when it starts
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        api_pb2_grpc.add_PodResourcesListerServicer_to_server(self.lister, self._server)  # type: ignore[no-untyped-call]
        self._server.add_insecure_port(f"unix://{self.socket}")
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None
        if self.socket.exists():
            os.unlink(self.socket)
