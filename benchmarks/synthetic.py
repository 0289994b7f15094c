"""The synthetic cluster of the scale benchmarks (issue: 10k pods, 5k training jobs, 2k notebooks,
1k pipeline runs x 20 steps, 500 InferenceServices, 64 GPU nodes), built from the emulator's
object fixtures so every object is shaped like the real one."""

from __future__ import annotations

import random
from typing import Any

from exporter.emulator import scenario as s
from exporter.kube import ResourceKind
from exporter.watch import NAMESPACES

Objects = list[tuple[ResourceKind, dict[str, Any]]]
STATES = ("running", "succeeded", "failed", "pending", "restarting")


def cluster(factor: float = 1.0, seed: int = 7) -> Objects:
    """`factor` scales every count (1.0: the issue's sizes). Every object has a uid."""
    rng = random.Random(seed)
    objs: Objects = []

    def n(count: int) -> int:
        return max(1, int(count * factor))

    namespaces = [f"team-{i:02d}" for i in range(40)]
    objs += [(NAMESPACES, s.namespace(ns)) for ns in namespaces]
    objs += [(s.NODE_KIND, s.node(f"gpu-{i:02d}", 64, 512, 8)) for i in range(n(64))]
    for i in range(n(5000)):
        ns, name = namespaces[i % 40], f"job-{i:05d}"
        state = STATES[i % len(STATES)]
        objs.append((s.KINDS["PyTorchJob"], s.v1_job("PyTorchJob", ns, name, state, started=rng.uniform(60, 7200),
                                                    finished=60.0 if state in ("succeeded", "failed") else None,
                                                    queue="default", replicas={"Worker": {"active": 2}})))  # fmt: skip
        for r in range(2):  # 10k pods
            objs.append((s.KINDS["Pod"], s.kubeflow_pod("PyTorchJob", ns, name, "worker", r, node=f"gpu-{i % 64:02d}",
                                                        cpu=1.0, memory=2**30)))  # fmt: skip
    for i in range(n(2000)):
        objs.append((s.NOTEBOOK_KIND, s.notebook(namespaces[i % 40], f"nb-{i:04d}", state="running", user=f"u{i}",
                                                 requests={"cpu": "1", "memory": "4Gi"},
                                                 kernels=[{"state": "idle", "ago": 600}])))  # fmt: skip
    steps = [s.Task(f"step-{k:02d}", [("Succeeded", 3600 - 100 * k, 3550 - 100 * k, "")]) for k in range(20)]
    for i in range(n(1000)):
        workflow, _ = s.kfp_workflow(namespaces[i % 40], f"pipeline-{i:04d}", f"run-{i:04d}", f"run {i}",
                                     "Succeeded", 3700, 100, steps)  # fmt: skip
        objs.append((s.WORKFLOW_KIND, workflow))
    for i in range(n(500)):
        service = s.inference_service(namespaces[i % 40], f"model-{i:03d}", model_format="onnx", runtime="ovms",
                                      mode="RawDeployment", ready=i % 10 != 0)  # fmt: skip
        objs.append((s.ISVC_KIND, service))
    for index, (_, obj) in enumerate(objs):
        obj["metadata"]["uid"] = f"uid-{index:06d}"
        obj["metadata"]["resourceVersion"] = "1"
    return objs
