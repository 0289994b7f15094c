"""End to end for pipelines: the OOM story through the emulator, the exporter, Prometheus and the dashboard.

Yesterday's nightly run died in `preprocess` of OOM after 45 minutes. Today's run is
in `preprocess`, at 95 % of its memory limit; the test then OOM-kills it (as the
kubelet would) and the dashboard's queries must tell the whole story.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from exporter.emulator.scenario import oom_kill_running_preprocess
from exporter.pack import local as harness
from exporter.steps import publish_records_processed
from tests.conftest import Stack, assert_every_query_returns_data, query_panel, scalar

WORKFLOW_PATH = "/apis/argoproj.io/v1alpha1/namespaces/team-a/workflows/fraud-training-pipeline-def34"


def by(result: list[dict[str, Any]], *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(r["metric"][k] for k in labels): float(r["value"][1]) for r in result}


def run(stack: Stack, panel: str, index: int = 0, run_id: str = ".*") -> list[dict[str, Any]]:
    return query_panel(stack, "data-pipeline-metrics", panel, index=index, variables={"run": run_id})


def wait(stack: Stack, promql: str, what: str) -> list[dict[str, Any]]:
    return harness.eventually(lambda: harness.query(stack.prom, promql), f"{what} ({promql})")


def test_the_oom_story(stack: Stack) -> None:
    expected = stack.pipelines
    publish_records_processed(125_000, run_id="run-0002", step="preprocess", gateway=stack.api, namespace="team-a")
    wait(stack, "namespace_run_id_step:ml_pipeline_records_processed:max", "records processed")
    wait(stack, 'namespace_run_id_step:ml_pipeline_step_memory_limit_utilization:ratio{run_id="run-0002"}', "memory")

    # Before: today's run is running, its preprocess step close to the memory limit.
    assert scalar(run(stack, "runningRuns")) == 2  # run-0002 and the offloaded run-0004
    rows = by(run(stack, "runsTable"), "run_id", "status")
    assert {k for k in rows} == {("run-0001", "failed"), ("run-0002", "running"), ("run-0003", "succeeded"),
                                  ("run-0004", "running"), ("run-0005", "succeeded")}  # fmt: skip
    for run_id, duration in expected.run_duration.items():
        assert rows[(run_id, "failed" if run_id == "run-0001" else "succeeded")] == pytest.approx(duration, abs=2)
    ratio = by(run(stack, "stepMemoryRatio"), "run_id", "step")
    assert ratio == pytest.approx(expected.memory_limit_ratio, rel=0.01)
    memory = {(r["metric"]["run_id"], r["metric"]["step"]): float(r["value"][1]) for r in run(stack, "stepMemory", 1)}
    assert memory[("run-0002", "preprocess")] == 4 * 1024**3  # the limit, beside the usage
    io = by(run(stack, "stepThroughput"), "run_id", "step", "kind")
    assert io == pytest.approx(expected.io, rel=0.1)
    assert by(run(stack, "recordsProcessed"), "run_id", "step") == {("run-0002", "preprocess"): 125_000}

    counts = by(harness.query(stack.prom, "namespace_pipeline_status:ml_pipeline_runs:count > 0"),
                "namespace", "pipeline", "status")  # fmt: skip
    assert counts == expected.runs_by_status
    # Step by step: yesterday 45 minutes of preprocess, then OOMKilled, and train never ran.
    steps = {(r["metric"]["run_id"], r["metric"]["step"]): r for r in run(stack, "stepBreakdown")}
    assert {key: r["metric"]["status"] for key, r in steps.items()} == expected.step_status
    for key, seconds in expected.step_duration.items():
        assert float(steps[key]["value"][1]) == pytest.approx(seconds, abs=1), key
    assert by(run(stack, "failedSteps"), "run_id", "step", "reason") == {("run-0001", "preprocess", "OOMKilled"): 1}
    assert set(by(run(stack, "stepBreakdown", run_id="run-0002"), "step", "status")) == {
        ("load-data", "cached"),
        ("preprocess", "running"),
    }
    assert scalar(run(stack, "pipelineServers")) == 1  # team-b's server is failing to deploy
    assert scalar(run(stack, "failedRuns")) == 1

    # Today's preprocess is OOM-killed.
    body = json.dumps(oom_kill_running_preprocess()).encode()
    request = urllib.request.Request(stack.api + WORKFLOW_PATH, data=body, method="PUT",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    p95 = wait(stack, 'namespace_pipeline_step:ml_pipeline_step_duration_seconds:p95_1d{step="preprocess"}',
               "step duration p95")  # fmt: skip
    # One observation of ~880 s: the quantile lies in its (600, 1200] bucket.
    assert 600 < float(p95[0]["value"][1]) <= 1200
    assert run(stack, "stepP95")
    wait(stack, 'namespace_run_id_step:ml_pipeline_step_failure_info:max{run_id="run-0002"}', "the new failure")
    assert by(run(stack, "failedSteps"), "run_id", "step", "reason") == {
        ("run-0001", "preprocess", "OOMKilled"): 1,
        ("run-0002", "preprocess", "OOMKilled"): 1,
    }
    assert scalar(run(stack, "failedRuns")) == 2
    assert scalar(run(stack, "runningRuns")) == 1


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    # After test_the_oom_story: the step-duration quantile needs a finished step.
    assert harness.query(stack.prom, "namespace_pipeline_step:ml_pipeline_step_duration_seconds:p95_1d")
    assert_every_query_returns_data(stack, "data-pipeline-metrics")
