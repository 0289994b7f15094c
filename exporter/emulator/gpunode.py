"""Simulated GPU nodes for the node role: per node, a stub NVML script and a PodResources server.

Both follow the emulated cluster's running pods: every GPU a pod simulates through this exporter's
agent (`sim.ml-observability.io/gpus` with source nvml or both) becomes a device of the pod's node
in that node's `nvml.conf`, and the pod's container holds it in that node's PodResources answer.
The node role then runs once per node, exactly as in a cluster, against `<dir>/<node>/`.
"""

from __future__ import annotations

import asyncio
import math
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from exporter.emulator import nvml
from exporter.emulator.apiserver import ApiServer
from exporter.emulator.kubelet import gpus_of, running_pods
from exporter.emulator.podresources import Allocation, PodResourcesServer

CONFIG = "nvml.conf"
SOCKET = "kubelet.sock"
NODES_FILE = "nodes"


def agent_nodes(api: ApiServer, extra: tuple[str, ...] = ()) -> list[str]:
    """Nodes that host a GPU the agent reports, now or (`extra`) later."""
    nodes = set(extra)
    for pod in running_pods(api):
        if any(source in ("nvml", "both") for _, _, source in gpus_of(pod)):
            nodes.add(pod["spec"]["nodeName"])
    return sorted(nodes)


class GpuNodes:
    def __init__(self, api: ApiServer, directory: Path, nodes: list[str], pattern: float = 0) -> None:
        """`pattern`: 0 keeps each GPU at its pod's utilisation; else the period in seconds of a wave
        each GPU follows around it (its own phase), as training steps and evaluation alternate."""
        self.api = api
        self.pattern = pattern
        self.directory = directory
        self.nodes = nodes
        self.started = time.time()
        self.allocations: dict[str, list[Allocation]] = {node: [] for node in nodes}
        self.servers = [PodResourcesServer(self.path(node, SOCKET), self._lister(node)) for node in nodes]

    def path(self, node: str, name: str) -> Path:
        return self.directory / node / name

    def _lister(self, node: str) -> Callable[[], list[Allocation]]:
        return lambda: self.allocations[node]

    def refresh(self) -> None:
        devices: dict[str, list[nvml.StubGpu]] = {node: [] for node in self.nodes}
        allocations: dict[str, list[Allocation]] = {node: [] for node in self.nodes}
        elapsed = time.time() - self.started
        for pod in running_pods(self.api):
            node = pod["spec"].get("nodeName", "")
            if node not in devices:
                continue
            container = pod["spec"]["containers"][0]["name"]
            for uuid, base, source in gpus_of(pod):
                if source not in ("nvml", "both"):
                    continue
                utilization = base
                if self.pattern:
                    phase = zlib.crc32(uuid.encode()) % 628 / 100
                    utilization = min(1.0, base * (0.6 + 0.4 * math.sin(2 * math.pi * elapsed / self.pattern + phase)))
                index = len(devices[node])
                power_mw = int((60 + 340 * utilization) * 1000)
                devices[node].append(nvml.StubGpu(
                    uuid, pci_bus_id=f"00000000:{7 + 8 * index:02X}:00.0", utilization=round(utilization * 100),
                    memory_utilization=round(utilization * 60), memory_used=int((2 + 30 * utilization) * nvml.GIB),
                    power_mw=power_mw, energy_mj=int(power_mw * elapsed), temperature=int(35 + 40 * utilization),
                ))  # fmt: skip
                meta = pod["metadata"]
                allocations[node].append((meta["namespace"], meta["name"], container, "nvidia.com/gpu", (uuid,)))
        for node in self.nodes:
            nvml.StubNvml(gpus=devices[node]).write(self.path(node, CONFIG))
        self.allocations = allocations

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            self.path(node, CONFIG).parent.mkdir(parents=True, exist_ok=True)
        self.refresh()
        for server in self.servers:
            server.start()
        (self.directory / NODES_FILE).write_text("".join(f"{node}\n" for node in self.nodes))

    async def run(self, interval: float = 1.0) -> None:
        try:
            while True:
                await asyncio.sleep(interval)
                self.refresh()
        finally:
            for server in self.servers:
                server.stop()
