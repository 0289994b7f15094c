"""The demo's workload simulator: lifecycles that keep the emulated cluster moving.

- training jobs: `scenario.lifecycle` (pending -> running -> some restart -> succeeded or failed);
- a workbench that is busy, goes idle, is culled (stopped by the culler) and is started again;
- model servers whose traffic rises and falls (`kubelet.requests_served`, a wave per pod);
- GPUs that follow utilisation patterns (the stub NVML of `gpunode.GpuNodes(pattern=...)`);
- `scale` more of everything at start: training jobs with pods and GPUs, and notebooks.

The pipeline story (a step OOM-killed mid-run) is played by the demo itself (`exporter.demo`).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from exporter.emulator import scenario
from exporter.emulator.apiserver import ApiServer
from exporter.emulator.scenario import GIB, KINDS, SIM, kubeflow_pod, notebook, notebook_pod, v1_job

CYCLE = ("busy", "busy", "idle", "idle", "idle", "idle", "culled", "culled", "culled")  # steps of the workbench


def add_scale(api: ApiServer, scale: int, rng: random.Random) -> None:
    """`scale` x 20 running training jobs (2 GPU workers each) and x 10 notebooks, in team-a and team-b."""
    for n in range(20 * scale):
        ns = f"team-{'ab'[n % 2]}"
        job = f"scale-job-{n:04d}"
        api.apply(KINDS["PyTorchJob"], v1_job("PyTorchJob", ns, job, "running", started=rng.uniform(60, 7200),
                                              replicas={"Worker": {"active": 2}}))  # fmt: skip
        for i in range(2):
            node = scenario.GPU_NODES[(2 * n + i) % len(scenario.GPU_NODES)]
            gpus = f"GPU-scale-{n:04d}-{i}={rng.uniform(0.05, 0.95):.2f}@nvml"
            api.apply(KINDS["Pod"], kubeflow_pod("PyTorchJob", ns, job, "worker", i, node=node, started=600,
                                                 cpu=round(rng.uniform(0.5, 4), 2), memory=rng.randint(1, 16) * GIB,
                                                 gpus=gpus))  # fmt: skip
    for n in range(10 * scale):
        ns, name = f"team-{'ab'[n % 2]}", f"scale-nb-{n:04d}"
        idle = rng.choice((60, 3600, 30 * 3600))
        api.apply(scenario.NOTEBOOK_KIND, notebook(ns, name, state="running", user=f"user{n}",
                                                   requests={"cpu": "1", "memory": "4Gi"},
                                                   kernels=[{"state": "idle", "ago": idle}]))  # fmt: skip
        api.apply(KINDS["Pod"], notebook_pod(ns, name, node=scenario.CPU_NODES[n % 2], cpu=0.1, memory=GIB))


def add_traffic_waves(api: ApiServer, period: float, rng: random.Random) -> None:
    """Every model server's request rate follows a wave of `period` seconds."""
    for pod in api.objects(KINDS["Pod"]):
        notes = pod["metadata"].get("annotations", {})
        if SIM + "model-server" in notes:
            notes[SIM + "traffic-wave"] = f"{period * rng.uniform(0.8, 1.2):.0f},{rng.uniform(0.3, 0.7):.2f}"
            api.apply(KINDS["Pod"], pod)


def _workbench(step: str, idle_since: float) -> dict[str, Any]:
    kernels = [{"state": "busy", "ago": 0}] if step == "busy" else [{"state": "idle", "ago": idle_since}]
    return notebook("team-a", "demo-wb", state="stopped" if step == "culled" else "running", user="dana",
                    requests={"cpu": "2", "memory": "8Gi"}, kernels=kernels, culler_activity=idle_since,
                    stopped=0 if step == "culled" else None)  # fmt: skip


async def workbench(api: ApiServer, interval: float) -> None:
    """dana's workbench: busy for two steps, idle for four, culled for three, then started again."""
    loop = asyncio.get_running_loop()
    idle_from = loop.time()
    for step_no in range(1_000_000):
        step = CYCLE[step_no % len(CYCLE)]
        if step == "busy":
            idle_from = loop.time()
        api.apply(scenario.NOTEBOOK_KIND, _workbench(step, loop.time() - idle_from))
        if step == "culled":
            api.delete(KINDS["Pod"], "team-a", "demo-wb-0")
        elif api.get(KINDS["Pod"], "team-a", "demo-wb-0") is None:
            api.apply(KINDS["Pod"], notebook_pod("team-a", "demo-wb", node="cpu-node-2", cpu=1.5, memory=6 * GIB))
        await asyncio.sleep(interval)


async def run(api: ApiServer, interval: float, seed: int) -> None:
    """Every lifecycle, one step per `interval` seconds."""
    add_traffic_waves(api, 40 * interval, random.Random(seed))
    await asyncio.gather(scenario.lifecycle(api, interval, seed), workbench(api, interval))
