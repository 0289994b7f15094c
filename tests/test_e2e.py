"""End to end: emulated cluster -> exporter process -> real Prometheus -> recording rules -> dashboard.

Every query of the training dashboard, with its variables filled in, must return
the values the training scenario implies.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from exporter.emulator.scenario import training_scenario
from exporter.pack import local as harness
from tests.conftest import Stack, assert_every_query_returns_data, query_panel, scalar

RANGE_S = 3600


def run(stack: Stack, panel: str, range_s: int = RANGE_S, **variables: str) -> list[dict[str, Any]]:
    return query_panel(stack, "training-jobs-overview", panel, range_s=range_s, variables=variables)


def by_job(result: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    return {(r["metric"]["namespace"], r["metric"]["job_name"]): float(r["value"][1]) for r in result}


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    assert_every_query_returns_data(stack, "training-jobs-overview")


def test_status_stats(stack: Stack) -> None:
    # The exporter watches Data Science Projects only: sandbox/scratch is not counted.
    assert scalar(run(stack, "runningJobs")) == 3  # bert-finetune, resnet-trainjob, ray-tune
    assert scalar(run(stack, "runningJobs", namespace="team-a")) == 1
    assert scalar(run(stack, "waitingJobs")) == 2  # churn-xgb pending, ocr-paddle suspended
    assert scalar(run(stack, "succeededJobs")) == 1  # mnist-tf finished 30 min ago; jax-sweep 67 min ago
    assert scalar(run(stack, "succeededJobs", range_s=7200)) == 2
    assert scalar(run(stack, "failedJobs")) == 0  # allreduce-bench failed 115 min ago
    assert scalar(run(stack, "failedJobs", range_s=7200)) == 1


def _expected_duration(stack: Stack, key: tuple[str, str], at: float) -> float:
    base = stack.expected.duration[key]
    running = stack.expected.status[key] in ("running", "restarting")
    return base + (at - stack.started) if running else base


def test_job_table_status_and_duration(stack: Stack) -> None:
    at = time.time()
    rows = run(stack, "jobTable")
    seen = {(r["metric"]["namespace"], r["metric"]["job_name"]): r for r in rows}
    dsp_jobs = {k: v for k, v in stack.expected.status.items() if k[0] != "sandbox"}
    assert set(seen) == set(dsp_jobs)
    for key, status in dsp_jobs.items():
        assert seen[key]["metric"]["status"] == status, key
        value = float(seen[key]["value"][1])
        if key in stack.expected.duration:
            # Within a scrape plus a rule evaluation (1 s each) and the scenario's clock rounding.
            assert abs(value - _expected_duration(stack, key, at)) <= 4, (key, value)
        else:
            assert value == 0, key  # not started


def test_duration_per_job(stack: Stack) -> None:
    at = time.time()
    durations = by_job(run(stack, "jobDuration"))
    expected = {k for k in stack.expected.duration if k[0] != "sandbox"}
    assert set(durations) == expected
    for key in expected:
        assert abs(durations[key] - _expected_duration(stack, key, at)) <= 4, key


@pytest.mark.parametrize("panel", ["jobCpu", "topCpu"])
def test_cpu_per_job(stack: Stack, panel: str) -> None:
    cpu = by_job(run(stack, panel))
    assert set(cpu) == set(stack.expected.cpu_cores)  # the ghost pod's job does not exist
    for key, cores in stack.expected.cpu_cores.items():
        assert cpu[key] == pytest.approx(cores, rel=0.05), key


@pytest.mark.parametrize("panel", ["jobMemory", "topMemory"])
def test_memory_per_job(stack: Stack, panel: str) -> None:
    memory = by_job(run(stack, panel))
    assert memory == pytest.approx(stack.expected.memory_bytes)


def test_gpu_per_job(stack: Stack) -> None:
    # bert-finetune: two GPUs through the NVML agent, one through dcgm-exporter (exported_* labels);
    # llama-pretrain: the same GPU from both, counted once.
    gpu = by_job(run(stack, "jobGpu"))
    assert gpu == pytest.approx(stack.expected.gpu_utilization)
    busy = by_job(run(stack, "topGpu"))
    assert busy == pytest.approx({("team-a", "bert-finetune"): 1.8, ("team-a", "llama-pretrain"): 0.5})


def test_job_variable_filters(stack: Stack) -> None:
    assert set(by_job(run(stack, "jobCpu", job="bert-finetune|ray-tune"))) == {
        ("team-a", "bert-finetune"),
        ("team-b", "ray-tune"),
    }


def test_prometheus_scraped_the_exporter_cleanly(stack: Stack) -> None:
    up = harness.query(stack.prom, 'up{job="ml-workload-exporter"}')
    assert [float(r["value"][1]) for r in up] == [1.0]
    assert harness.query(stack.prom, 'ml_exporter_source_up{source="training"}')[0]["value"][1] == "1"
    # honor_labels kept the workload's namespace: nothing was renamed to exported_namespace.
    assert not harness.query(stack.prom, '{job="ml-workload-exporter", exported_namespace!=""}')
    assert not harness.query(stack.prom, 'scrape_samples_post_metric_relabeling{job="ml-workload-exporter"} == 0')


def test_scenario_matches_itself() -> None:
    objs, expected = training_scenario()
    names = {(o["metadata"].get("namespace"), o["metadata"]["name"]) for _, o in objs}
    assert set(expected.status) <= names
