"""Pipeline runs and steps: KFP-shaped Workflows -> metrics, histogram idempotence, retention."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from typing import Any

import pytest

from exporter import config
from exporter.emulator.apiserver import Fault, now_rfc3339
from exporter.emulator.scenario import (
    OOM,
    WORKFLOW_KIND,
    Task,
    kfp_workflow,
    oom_kill_running_preprocess,
    pipelines_scenario,
)
from exporter.health import HealthRegistry
from exporter.sources.pipelines import PipelineSource, failure_reason
from exporter.store import Store
from exporter.watch import MalformedObject, NamespaceScope, WatchSettings
from tests.conftest import ALL_KINDS, FAST, MakeCluster, series_values, until, unused_client, with_uid


def make_source(store: Store, registry: HealthRegistry, *flags: str) -> PipelineSource:
    options = config.load(list(flags), environ={})
    return PipelineSource(store, registry, unused_client(), NamespaceScope(), WatchSettings(), options)


@pytest.fixture
def source(store: Store, registry: HealthRegistry) -> PipelineSource:
    return make_source(store, registry)


def observed(store: Store) -> dict[str, float]:
    """Histogram series with observations (every step also has zero series from its first sight)."""
    return {k: v for k, v in series_values(store, "ml_pipeline_step_duration_seconds_count").items() if v}


def current(store: Store, family: str) -> set[str]:
    return {k for k, v in series_values(store, family).items() if v == 1}


def scenario_workflow(name: str) -> dict[str, Any]:
    objs, _ = pipelines_scenario()
    return next(o for k, o in objs if k.kind == "Workflow" and o["metadata"]["name"] == name)


def test_failed_run_with_oom_killed_step_and_omitted_step(source: PipelineSource, store: Store) -> None:
    source.upsert_workflow(with_uid(scenario_workflow("fraud-training-pipeline-abc12"), "w1"))
    assert series_values(store, "ml_pipeline_run_info") == {
        '{namespace="team-a",run_id="run-0001",run_name="nightly 2026-12-03",pipeline="fraud-training-pipeline",'
        'engine="argo"}': 1
    }
    assert current(store, "ml_pipeline_run_status") == {'{namespace="team-a",run_id="run-0001",status="failed"}'}
    # KFP driver pods and DAG nodes are not steps; the executor takes its task's name.
    assert current(store, "ml_pipeline_step_status") == {
        '{namespace="team-a",run_id="run-0001",step="load-data",status="succeeded"}',
        '{namespace="team-a",run_id="run-0001",step="preprocess",status="failed"}',
        '{namespace="team-a",run_id="run-0001",step="train",status="skipped"}',
    }
    assert current(store, "ml_pipeline_step_failure_info") == {
        '{namespace="team-a",run_id="run-0001",step="preprocess",reason="OOMKilled"}'
    }
    starts = series_values(store, "ml_pipeline_step_start_timestamp_seconds")
    ends = series_values(store, "ml_pipeline_step_completion_timestamp_seconds")
    key = '{namespace="team-a",run_id="run-0001",step="preprocess"}'
    assert ends[key] - starts[key] == 2700  # 45 minutes, then OOM
    assert series_values(store, "ml_pipeline_run_node_status_offloaded") == {
        '{namespace="team-a",run_id="run-0001"}': 0
    }


def test_cached_step_retries_and_running_run(source: PipelineSource, store: Store) -> None:
    source.upsert_workflow(with_uid(scenario_workflow("fraud-training-pipeline-def34"), "w2"))
    source.upsert_workflow(with_uid(scenario_workflow("churn-pipeline-gh56x"), "w3"))
    status = current(store, "ml_pipeline_step_status")
    assert '{namespace="team-a",run_id="run-0002",step="load-data",status="cached"}' in status
    assert '{namespace="team-a",run_id="run-0002",step="preprocess",status="running"}' in status
    # Retried: the last attempt decides; attempts are counted.
    assert '{namespace="team-a",run_id="run-0003",step="extract",status="succeeded"}' in status
    assert (
        series_values(store, "ml_pipeline_step_attempts")['{namespace="team-a",run_id="run-0003",step="extract"}'] == 2
    )
    assert '{namespace="team-a",run_id="run-0002"}' not in series_values(
        store, "ml_pipeline_run_completion_timestamp_seconds"
    )
    assert not any('step="preprocess"' in k and "run-0002" in k
                   for k in series_values(store, "ml_pipeline_step_completion_timestamp_seconds"))  # fmt: skip


def test_offloaded_node_status_is_marked_not_misreported(source: PipelineSource, store: Store) -> None:
    source.upsert_workflow(with_uid(scenario_workflow("big-pipeline-zz9yy"), "w4"))
    assert series_values(store, "ml_pipeline_run_node_status_offloaded") == {
        '{namespace="team-b",run_id="run-0004"}': 1
    }
    assert current(store, "ml_pipeline_run_status") == {'{namespace="team-b",run_id="run-0004",status="running"}'}
    assert series_values(store, "ml_pipeline_step_status") == {}


def test_histogram_observes_each_finished_attempt_once(source: PipelineSource, store: Store) -> None:
    before = scenario_workflow("fraud-training-pipeline-def34")
    source.upsert_workflow(with_uid(before, "w2"))
    assert observed(store) == {}  # nothing finished since start
    # ... but the running step's outcomes exist at zero, so its first end is an increase.
    assert len(series_values(store, "ml_pipeline_step_duration_seconds_count")) == 3
    after = with_uid(oom_kill_running_preprocess(), "w2")
    for _ in range(3):  # the same state again: a relist, a watch restart, a MODIFIED with no change
        source.upsert_workflow(copy.deepcopy(after))
    counts = observed(store)
    assert counts == {'{namespace="team-a",pipeline="fraud-training-pipeline",step="preprocess",status="failed"}': 1}
    buckets = series_values(store, "ml_pipeline_step_duration_seconds_bucket")
    labels = 'namespace="team-a",pipeline="fraud-training-pipeline",step="preprocess",status="failed"'
    assert buckets[f'{{{labels},le="600"}}'] == 0 and buckets[f'{{{labels},le="1200"}}'] == 1
    assert buckets[f'{{{labels},le="+Inf"}}'] == 1
    total = series_values(store, "ml_pipeline_step_duration_seconds_sum")[f"{{{labels}}}"]
    assert total == pytest.approx(880, abs=2)


def test_steps_that_finished_before_the_exporter_started_are_not_observed(source: PipelineSource,
                                                                         store: Store) -> None:  # fmt: skip
    source.upsert_workflow(with_uid(scenario_workflow("fraud-training-pipeline-abc12"), "w1"))
    assert observed(store) == {}


def test_retention_drops_finished_runs_and_keeps_the_histogram(store: Store, registry: HealthRegistry) -> None:
    source = make_source(store, registry, "--pipelines.retention", "60")
    source.started_at = time.time() - 10_000  # as if the exporter had watched these runs finish
    source.upsert_workflow(with_uid(scenario_workflow("fraud-training-pipeline-abc12"), "w1"))  # finished 580 s ago
    source.upsert_workflow(with_uid(scenario_workflow("fraud-training-pipeline-def34"), "w2"))  # running
    runs = series_values(store, "ml_pipeline_run_info")
    assert len(runs) == 1 and "run-0002" in next(iter(runs))  # expired on arrival
    histogram = observed(store)
    assert len(histogram) == 2  # load-data and preprocess of run-0001 were observed and stay
    source.upsert_workflow(with_uid(oom_kill_running_preprocess(), "w2"))  # finishes now
    assert len(series_values(store, "ml_pipeline_run_info")) == 1
    source.runs["w2"].finished = time.time() - 120
    assert source.expire() == 1
    assert series_values(store, "ml_pipeline_run_info") == {} and series_values(store, "ml_pipeline_step_status") == {}
    counts = observed(store)
    assert counts['{namespace="team-a",pipeline="fraud-training-pipeline",step="preprocess",status="failed"}'] == 2


def test_step_pods_join_to_run_and_step(source: PipelineSource, store: Store) -> None:
    objs, _ = pipelines_scenario()
    pod = next(o for k, o in objs if k.kind == "Pod")
    source.upsert_pod(with_uid(pod, "p1"))
    assert series_values(store, "ml_workload_pod_info") == {}  # its Workflow is not known yet
    source.upsert_workflow(with_uid(scenario_workflow("fraud-training-pipeline-def34"), "w2"))
    (key,) = series_values(store, "ml_workload_pod_info")
    assert 'workload_kind="PipelineRun",workload="run-0002"' in key and 'replica_type="preprocess"' in key
    source.delete_run("w2")
    source.upsert_pod(with_uid(pod, "p1"))
    assert series_values(store, "ml_workload_pod_info") == {}


@pytest.mark.parametrize(
    ("condition", "status"),
    [
        (None, "pending"),
        ({"type": "Succeeded", "status": "Unknown", "reason": "PipelineRunPending"}, "pending"),
        ({"type": "Succeeded", "status": "Unknown", "reason": "Running"}, "running"),
        ({"type": "Succeeded", "status": "True", "reason": "Completed"}, "succeeded"),
        ({"type": "Succeeded", "status": "False", "reason": "Cancelled"}, "failed"),
        ({"type": "Succeeded", "status": "False", "reason": "PipelineRunTimeout"}, "failed"),
    ],
)
def test_tekton_pipelinerun(source: PipelineSource, store: Store, condition: dict[str, str] | None,
                            status: str) -> None:  # fmt: skip
    obj = {"metadata": {"name": "pr", "namespace": "ns", "uid": "t1", "labels": {"tekton.dev/pipeline": "etl"}},
           "status": {"startTime": now_rfc3339(-100), "completionTime": now_rfc3339(-10),
                      "conditions": [condition] if condition else []}}  # fmt: skip
    source.upsert_pipelinerun(obj)
    assert current(store, "ml_pipeline_run_status") == {f'{{namespace="ns",run_id="t1",status="{status}"}}'}
    assert 'pipeline="etl",engine="tekton"' in next(iter(series_values(store, "ml_pipeline_run_info")))
    assert bool(series_values(store, "ml_pipeline_run_completion_timestamp_seconds")) == (
        status in ("succeeded", "failed")
    )


def test_pipeline_server_readiness(source: PipelineSource, store: Store) -> None:
    objs, _ = pipelines_scenario()
    for i, obj in enumerate(o for k, o in objs if k.kind == "DataSciencePipelinesApplication"):
        source.upsert_dspa(with_uid(obj, f"d{i}"))
    assert series_values(store, "ml_pipeline_server_ready") == {'{namespace="team-a",dspa="dspa"}': 1,
                                                        '{namespace="team-b",dspa="dspa"}': 0}  # fmt: skip
    assert (
        series_values(store, "ml_pipeline_server_condition")[
            '{namespace="team-b",dspa="dspa",condition="APIServerReady"}'
        ]
        == 0
    )


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (OOM, "OOMKilled"),
        ("OOMKilled (exit code 137)", "OOMKilled"),
        ("Pod was active on the node longer than the specified deadline: DeadlineExceeded", "DeadlineExceeded"),
        ("main: Error (exit code 1)", "Error"),
        ("pod deleted", "Unknown"),
    ],
)
def test_failure_reasons(message: str, reason: str) -> None:
    assert failure_reason(message) == reason


def test_malformed_nodes_skip_the_workflow(source: PipelineSource) -> None:
    obj, _ = kfp_workflow("ns", "wf-x", "r", "r", "Running", 10, None, [Task("a", [("Running", 5, None, "")])])
    obj["status"]["nodes"] = ["not", "a", "map"]
    with pytest.raises(MalformedObject, match="bad_nodes"):
        source.upsert_workflow(with_uid(obj, "w9"))


async def test_histogram_survives_a_relist_through_the_api(make_cluster: MakeCluster, store: Store,
                                                           registry: HealthRegistry) -> None:  # fmt: skip
    cluster = await make_cluster((*ALL_KINDS, WORKFLOW_KIND))
    client = cluster.client()
    source = PipelineSource(store, registry, client, NamespaceScope(), FAST)
    task = asyncio.create_task(source.run())
    try:
        await until(lambda: registry.ready, what="first sync")
        cluster.api.apply(WORKFLOW_KIND, scenario_workflow("fraud-training-pipeline-def34"))
        cluster.api.apply(WORKFLOW_KIND, oom_kill_running_preprocess())
        await until(lambda: bool(observed(store)), what="observation")
        cluster.api.faults.append(Fault("gone", path="workflows", watch=True))  # the next watch: 410 Gone
        cluster.api.close_watches()
        resource = next(r for r in registry.sources[0].resources if r.resource == "workflows.argoproj.io")
        await until(lambda: resource.restarts["gone"] >= 1, what="410 Gone")
        await until(
            lambda: (
                len(cluster.api.requests) > 0
                and sum("workflows" in p and "watch" not in p for _, p in cluster.api.requests) >= 2
            ),
            what="relist",
        )
        await asyncio.sleep(0.2)
        assert list(observed(store).values()) == [1]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()


def test_resubmitted_run_has_no_stale_completion(source: PipelineSource, store: Store) -> None:
    obj = with_uid(scenario_workflow("fraud-training-pipeline-abc12"), "w1")
    obj["status"]["phase"] = "Running"  # resubmitted: Argo keeps the old finishedAt for a while
    source.upsert_workflow(obj)
    assert series_values(store, "ml_pipeline_run_completion_timestamp_seconds") == {}
    assert current(store, "ml_pipeline_run_status") == {'{namespace="team-a",run_id="run-0001",status="running"}'}
