"""End to end for "Infrastructure Health" and "ML Platform Overview" through a real Prometheus.

Expected numbers come from the emulated cluster itself (its nodes, pods and platform objects),
read over its API the way kube-state-metrics would see them.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from exporter.emulator.kubelet import gpus_of
from exporter.emulator.scenario import SIM
from exporter.pack import local as harness
from tests.conftest import Stack, assert_every_query_returns_data, query_panel, scalar


def pods(stack: Stack) -> list[dict[str, Any]]:
    _, body = harness.http_get(stack.api + "/api/v1/pods")
    return list(json.loads(body)["items"])


def run(stack: Stack, dashboard: str, panel: str, index: int = 0) -> list[dict[str, Any]]:
    return query_panel(stack, dashboard, panel, index=index)


@pytest.fixture(scope="module")
def infra(stack: Stack) -> Stack:
    harness.eventually(
        lambda: (
            harness.query(stack.prom, "cluster:ml_cpu_utilization:ratio")
            and harness.query(stack.prom, "component:ml_platform_component_ready:max")
        ),
        "infrastructure series",
    )
    time.sleep(6)  # let the shortened rate windows fill
    return stack


def test_cluster_stats(infra: Stack) -> None:
    expected = infra.platform
    running = [p for p in pods(infra) if p["status"].get("phase") == "Running"]
    cores = sum(float(p["metadata"]["annotations"].get(SIM + "cpu-cores", 0)) for p in running)
    assert scalar(run(infra, "infrastructure-health", "cpuUtil")) == pytest.approx(
        cores / expected.allocatable["cpu"], rel=0.1
    )
    holding = [p for p in pods(infra) if p["status"].get("phase") in ("Running", "Pending")]
    gpus = sum(len(p["metadata"]["annotations"].get(SIM + "gpus", "").split(",")) for p in holding
               if p["metadata"]["annotations"].get(SIM + "gpus"))  # fmt: skip
    allocated = scalar(run(infra, "infrastructure-health", "gpuAllocated"))
    assert allocated == pytest.approx(gpus / expected.allocatable["nvidia.com/gpu"])
    assert scalar(run(infra, "infrastructure-health", "nodesReady")) == expected.nodes_ready
    assert scalar(run(infra, "infrastructure-health", "nodesNotReady")) == expected.nodes_not_ready
    assert scalar(run(infra, "infrastructure-health", "componentsHealthy")) == sum(expected.components.values())
    assert 0 < scalar(run(infra, "infrastructure-health", "storageUtil")) == pytest.approx(0.25)


def test_nodes_and_platform_tables(infra: Stack) -> None:
    expected = infra.platform
    ready = {r["metric"]["node"]: float(r["value"][1]) for r in run(infra, "infrastructure-health", "nodeTable", 2)}
    assert ready["cpu-node-3"] == 0 and sum(ready.values()) == expected.nodes_ready
    pressure = {r["metric"]["node"] for r in run(infra, "infrastructure-health", "nodeConditions")}
    assert pressure == {"cpu-node-3"}
    deployments = {
        r["metric"]["deployment"]: float(r["value"][1]) for r in run(infra, "infrastructure-health", "deployments")
    }
    assert deployments == expected.deployments
    health = {
        r["metric"]["component"]: float(r["value"][1]) for r in run(infra, "infrastructure-health", "componentHealth")
    }
    assert health == expected.components
    sources = {
        r["metric"]["source"]: float(r["value"][1]) for r in run(infra, "infrastructure-health", "exporterHealth")
    }
    assert sources and all(v == 1 for v in sources.values())


def test_overview(infra: Stack) -> None:
    # Data Science Projects only (the exporter's namespace selector): bert-finetune, resnet-trainjob, ray-tune.
    assert scalar(run(infra, "ml-platform-overview", "runningJobs")) == 3
    assert scalar(run(infra, "ml-platform-overview", "activeNotebooks")) == sum(infra.notebooks.active.values())
    assert scalar(run(infra, "ml-platform-overview", "readyModels")) == infra.serving.ready_models
    assert scalar(run(infra, "ml-platform-overview", "failedRuns")) >= 1  # yesterday's OOM at least
    assert scalar(run(infra, "ml-platform-overview", "componentsDown")) == 1  # kserve
    assert 0 < scalar(run(infra, "ml-platform-overview", "gpuUtil")) < 1


def test_gpu_panels_from_the_node_agents_and_dcgm(infra: Stack) -> None:
    """Per-node figures from the real node role on each simulated GPU node (stub NVML); dcgm-exporter
    covers the GPUs the agent does not; a GPU both report counts once."""
    utilisation: dict[str, list[float]] = {}
    agent_devices: dict[str, list[float]] = {}
    held: dict[str, float] = {}
    for pod in pods(infra):
        if pod["status"].get("phase") != "Running":
            continue
        node, namespace = pod["spec"]["nodeName"], pod["metadata"]["namespace"]
        for _, value, source in gpus_of(pod):
            utilisation.setdefault(node, []).append(value)
            held[namespace] = held.get(namespace, 0) + 1
            if source in ("nvml", "both"):
                agent_devices.setdefault(node, []).append(value)
    per_node = {r["metric"]["node"]: float(r["value"][1]) for r in run(infra, "infrastructure-health", "gpuUtilNode")}
    assert per_node == pytest.approx({node: sum(v) / len(v) for node, v in utilisation.items()})
    memory = {r["metric"]["node"]: float(r["value"][1]) for r in run(infra, "infrastructure-health", "gpuMemoryNode")}
    assert memory == pytest.approx({n: sum(int((2 + 30 * u) * 2**30) for u in v) for n, v in agent_devices.items()})
    power = {r["metric"]["node"]: float(r["value"][1]) for r in run(infra, "infrastructure-health", "gpuPowerNode")}
    assert power == pytest.approx({n: sum(60 + 340 * u for u in v) for n, v in agent_devices.items()}, abs=0.01)
    by_namespace = {
        r["metric"]["namespace"]: float(r["value"][1]) for r in run(infra, "infrastructure-health", "gpusByNamespace")
    }
    assert by_namespace == held
    idle = sum(1 for values in utilisation.values() for u in values if u < 0.05)
    assert idle >= 1 and scalar(run(infra, "infrastructure-health", "gpusIdle")) == idle
    assert scalar(run(infra, "infrastructure-health", "gpusDown")) == 0
    assert scalar(run(infra, "infrastructure-health", "xidErrors")) == 0


@pytest.mark.parametrize("dashboard", ["infrastructure-health", "ml-platform-overview"])
def test_every_dashboard_query_returns_data(infra: Stack, dashboard: str) -> None:
    assert_every_query_returns_data(infra, dashboard)
