"""End to end for workbenches: emulator -> exporter (with the activity probe) -> Prometheus -> dashboard."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import Stack, assert_every_query_returns_data, query_panel, scalar


def run(stack: Stack, panel: str, index: int = 0, **variables: str) -> list[dict[str, Any]]:
    return query_panel(stack, "workbench-notebook-resources", panel, index=index, variables=variables)


def by_notebook(result: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    return {(r["metric"]["namespace"], r["metric"]["notebook"]): float(r["value"][1]) for r in result}


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    assert_every_query_returns_data(stack, "workbench-notebook-resources")


def test_stats(stack: Stack) -> None:
    expected = stack.notebooks
    # carol-wb is stopped and dave-nb is starting: neither is active.
    assert scalar(run(stack, "activeNotebooks")) == sum(expected.active.values())
    assert scalar(run(stack, "activeNotebooks", namespace="team-a")) == expected.active["team-a"]
    assert scalar(run(stack, "activeNotebooks", user="bob")) == 1
    assert scalar(run(stack, "gpusAllocated")) == expected.gpus_allocated
    utilisation = sum(expected.gpu_utilization.values()) / len(expected.gpu_utilization)
    assert scalar(run(stack, "avgGpuUtil")) == pytest.approx(utilisation, abs=0.01)
    assert scalar(run(stack, "idleGpuHolders")) == len(expected.idle_gpu_holders)


def test_idle_time_grows_for_idle_notebooks_and_stays_low_for_busy_ones(stack: Stack) -> None:
    first = by_notebook(run(stack, "idleTime"))
    assert set(first) == set(stack.notebooks.idle)  # running notebooks only
    elapsed = time.time() - stack.started
    for key, idle in stack.notebooks.idle.items():
        if idle:
            assert first[key] == pytest.approx(idle + elapsed, abs=10), key
    assert first[("team-a", "bob-wb")] < 5  # a busy kernel: activity now
    time.sleep(3)
    second = by_notebook(run(stack, "idleTime"))
    assert second[("team-a", "alice-wb")] > first[("team-a", "alice-wb")] + 1
    assert second[("team-a", "bob-wb")] < 5


def test_notebook_table(stack: Stack) -> None:
    rows = {(r["metric"]["namespace"], r["metric"]["notebook"]): r["metric"] for r in run(stack, "notebookTable")}
    assert rows[("team-a", "alice-wb")]["user"] == "alice"
    assert rows[("team-a", "alice-wb")]["image"] == "odh-minimal-notebook:2024.2"
    assert rows[("team-a", "carol-wb")]["status"] == "stopped"
    assert rows[("team-b", "dave-nb")]["status"] == "starting"
    assert rows[("team-b", "erin-nb")]["image"] == "kubeflownotebookswg/jupyter-pytorch-cuda:v1.8.0"
    gpus = by_notebook(run(stack, "notebookTable", index=3))
    assert gpus == {("team-a", "alice-wb"): 1, ("team-b", "erin-nb"): 1}


def test_resources_and_right_sizing(stack: Stack) -> None:
    cpu = by_notebook(run(stack, "notebookCpu"))
    assert cpu == pytest.approx({("team-a", "alice-wb"): 0.05, ("team-a", "bob-wb"): 0.9,
                                 ("team-b", "erin-nb"): 0.2}, rel=0.1)  # fmt: skip
    gpu = by_notebook(run(stack, "notebookGpu"))
    assert gpu == pytest.approx(stack.notebooks.gpu_utilization)
    ratios = {(r["metric"]["notebook"], r["metric"]["resource"]): float(r["value"][1])
              for r in run(stack, "rightSizing")}  # fmt: skip
    for (_, name), ratio in stack.notebooks.cpu_request_utilization.items():
        assert ratios[(name, "cpu")] == pytest.approx(ratio, rel=0.1), name
    # alice-wb: idle past 24 h and 2 % busy; erin-nb: half busy and used 90 minutes ago, so not wasted.
    assert set(by_notebook(run(stack, "wastedGpus"))) == stack.notebooks.idle_gpu_holders


def test_culled_in(stack: Stack) -> None:
    cull = by_notebook(run(stack, "cullIn"))
    assert cull[("team-a", "alice-wb")] == 0  # idle past the 24 h culling threshold
    assert cull[("team-a", "bob-wb")] == pytest.approx(86400, abs=10)
