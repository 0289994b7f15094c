"""Status derivation and series of the training source (docs/training.md is the contract)."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.emulator.apiserver import now_rfc3339
from exporter.emulator.scenario import kubeflow_pod, pod, v1_job
from exporter.health import HealthRegistry
from exporter.sources import training as t
from exporter.store import Store
from exporter.watch import MalformedObject, NamespaceScope, WatchSettings
from tests.conftest import unused_client, with_uid

PYTORCH = t.V1_KINDS[0]


@pytest.fixture
def source(store: Store, registry: HealthRegistry) -> t.TrainingSource:
    # The source is driven directly here; its client is never used.
    return t.TrainingSource(store, registry, unused_client(), NamespaceScope(), WatchSettings())


def series(store: Store) -> list[str]:
    return [line for line in b"".join(store.render()).decode().splitlines() if not line.startswith("#")]


def current_status(store: Store, job: str) -> str:
    (line,) = [
        s for s in series(store) if s.startswith("ml_training_job_status{") and f'"{job}"' in s and s.endswith(" 1")
    ]
    return line.split('status="')[1].split('"')[0]


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([], "pending"),
        ([("Created", "True")], "pending"),
        ([("Created", "True"), ("Running", "True")], "running"),
        ([("Created", "True"), ("Running", "False"), ("Restarting", "True")], "restarting"),
        ([("Created", "True"), ("Suspended", "True")], "suspended"),
        ([("Created", "True"), ("Running", "False"), ("Succeeded", "True")], "succeeded"),
        ([("Created", "True"), ("Running", "False"), ("Failed", "True")], "failed"),
        # The last condition whose status is True wins, whatever came before.
        ([("Running", "True"), ("Restarting", "False")], "running"),
        ([("Created", "True"), ("SomethingNew", "True")], "pending"),
    ],
)
def test_kubeflow_v1_status(
    source: t.TrainingSource, store: Store, conditions: list[tuple[str, str]], expected: str
) -> None:
    obj = {
        "metadata": {"name": "j", "namespace": "ns", "uid": "u1"},
        "status": {"conditions": [{"type": k, "status": s} for k, s in conditions]},
    }
    source.upsert_job(PYTORCH, obj)
    assert current_status(store, "j") == expected
    assert sum(s.startswith("ml_training_job_status{") for s in series(store)) == len(t.STATUSES)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({}, "pending"),
        ({"jobStatus": "PENDING", "jobDeploymentStatus": "Initializing"}, "pending"),
        ({"jobStatus": "RUNNING", "jobDeploymentStatus": "Running"}, "running"),
        ({"jobStatus": "RUNNING", "jobDeploymentStatus": "Retrying"}, "restarting"),
        ({"jobStatus": "", "jobDeploymentStatus": "Suspended"}, "suspended"),
        ({"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete"}, "succeeded"),
        ({"jobStatus": "FAILED", "jobDeploymentStatus": "Complete"}, "failed"),
        ({"jobStatus": "STOPPED", "jobDeploymentStatus": "Complete"}, "failed"),
        ({"jobStatus": "RUNNING", "jobDeploymentStatus": "Failed"}, "failed"),
        ({"jobDeploymentStatus": "ValidationFailed"}, "failed"),
    ],
)
def test_rayjob_status(source: t.TrainingSource, store: Store, status: dict[str, str], expected: str) -> None:
    source.upsert_job(t.RAYJOB, {"metadata": {"name": "r", "namespace": "ns", "uid": "u1"}, "status": status})
    assert current_status(store, "r") == expected


@pytest.mark.parametrize(
    ("conditions", "jobs", "suspend", "expected"),
    [
        ([], [], False, "pending"),
        ([], [{"name": "node", "active": 2}], False, "running"),
        ([("Suspended", "True")], [], True, "suspended"),
        ([], [], True, "suspended"),
        ([("Suspended", "False")], [{"name": "node", "ready": 1}], False, "running"),
        ([("Complete", "True")], [{"name": "node", "succeeded": 2}], False, "succeeded"),
        ([("Failed", "True")], [{"name": "node", "failed": 1}], False, "failed"),
    ],
)
def test_trainjob_status(
    source: t.TrainingSource,
    store: Store,
    conditions: list[tuple[str, str]],
    jobs: list[dict[str, Any]],
    suspend: bool,
    expected: str,
) -> None:
    obj = {
        "metadata": {"name": "tj", "namespace": "ns", "uid": "u1", "creationTimestamp": now_rfc3339(-100)},
        "spec": {"suspend": suspend},
        "status": {
            "conditions": [{"type": k, "status": s, "lastTransitionTime": now_rfc3339(-10)} for k, s in conditions],
            "jobsStatus": jobs,
        },
    }
    source.upsert_job(t.TRAINJOB, obj)
    assert current_status(store, "tj") == expected
    has_completion = any(s.startswith("ml_training_job_completion_timestamp_seconds") for s in series(store))
    assert has_completion == (expected in ("succeeded", "failed"))


def test_timestamps_queue_and_replicas(source: t.TrainingSource, store: Store) -> None:
    job = v1_job(
        "PyTorchJob",
        "team-a",
        "bert",
        "succeeded",
        started=600,
        finished=60,
        queue="research",
        replicas={"Master": {"succeeded": 1}, "Worker": {"succeeded": 3, "failed": 1}},
    )
    job = with_uid(job, "u1")
    source.upsert_job(PYTORCH, job)
    lines = series(store)
    assert 'ml_training_job_info{namespace="team-a",job_name="bert",kind="PyTorchJob",queue="research"} 1' in lines
    start = next(s for s in lines if s.startswith("ml_training_job_start_timestamp_seconds"))
    done = next(s for s in lines if s.startswith("ml_training_job_completion_timestamp_seconds"))
    assert float(done.rsplit(" ", 1)[1]) - float(start.rsplit(" ", 1)[1]) == 540
    assert (
        'ml_training_job_replicas{namespace="team-a",job_name="bert",kind="PyTorchJob",'
        'replica_type="worker",state="failed"} 1'
    ) in lines
    # The Kueue label wins over runPolicy.schedulingPolicy.queue.
    job["metadata"]["labels"] = {t.KUEUE_QUEUE_LABEL: "lq-team-a"}
    source.upsert_job(PYTORCH, job)
    assert any('queue="lq-team-a"' in s for s in series(store))


def test_running_job_has_no_completion_and_pending_no_start(source: t.TrainingSource, store: Store) -> None:
    # A v1 job that restarted after finishing once carries a stale completionTime: not exported.
    running = v1_job("PyTorchJob", "ns", "again", "restarting", started=100, finished=50)
    source.upsert_job(PYTORCH, with_uid(running, "u1"))
    source.upsert_job(PYTORCH, with_uid(v1_job("PyTorchJob", "ns", "waiting", "pending"), "u2"))
    lines = series(store)
    assert not any(s.startswith("ml_training_job_completion_timestamp_seconds") for s in lines)
    starts = [s for s in lines if s.startswith("ml_training_job_start_timestamp_seconds")]
    assert len(starts) == 1 and '"again"' in starts[0]


def test_pod_join_for_every_workload_family(source: t.TrainingSource, store: Store) -> None:
    source.upsert_pod(with_uid(kubeflow_pod("PyTorchJob", "ns", "bert", "worker", 0, node="n1", cpu=1, memory=1), "p1"))
    jobset_pod = pod(
        "ns",
        "tj-node-0-0",
        {t.JOBSET_POD_LABEL: "tj", t.JOBSET_REPLICA_LABEL: "node"},
        node="n2",
        cpu=1,
        memory=1,
    )
    source.upsert_pod(with_uid(jobset_pod, "p2"))
    ray_pod = pod(
        "ns",
        "rc-head",
        {t.RAY_POD_LABEL: "rc-abc", t.RAY_NODE_TYPE_LABEL: "head"},
        node="n3",
        cpu=1,
        memory=1,
    )
    source.upsert_pod(with_uid(ray_pod, "p3"))
    pods = [s for s in series(store) if s.startswith("ml_workload_pod_info")]
    # The JobSet and Ray pods wait until their TrainJob / RayJob is known.
    assert pods == [
        'ml_workload_pod_info{namespace="ns",pod="bert-worker-0",workload_kind="PyTorchJob",'
        'workload="bert",node="n1",replica_type="worker"} 1'
    ]
    source.upsert_job(t.TRAINJOB, {"metadata": {"name": "tj", "namespace": "ns", "uid": "j1"}, "status": {}})
    source.upsert_job(
        t.RAYJOB,
        {
            "metadata": {"name": "tune", "namespace": "ns", "uid": "j2"},
            "status": {"rayClusterName": "rc-abc"},
        },
    )
    pods = [s for s in series(store) if s.startswith("ml_workload_pod_info")]
    assert any('workload_kind="TrainJob",workload="tj",node="n2",replica_type="node"' in s for s in pods)
    assert any('pod="rc-head",workload_kind="RayJob",workload="tune",node="n3",replica_type="head"' in s for s in pods)
    source.delete_job("j2")
    assert not any('pod="rc-head"' in s for s in series(store))
    source.delete_pod("p1")
    assert not any('pod="bert-worker-0"' in s for s in series(store))


def test_label_values_are_escaped(source: t.TrainingSource, store: Store) -> None:
    job = v1_job("PyTorchJob", "ns", "j", "pending")
    job["metadata"]["labels"] = {t.KUEUE_QUEUE_LABEL: 'we"ird\\queue\nx'}
    source.upsert_job(PYTORCH, with_uid(job, "u1"))
    assert any(r'queue="we\"ird\\queue\nx"' in s for s in series(store))


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({"metadata": "x"}, "no_metadata"),
        ({"metadata": {"uid": "u", "namespace": "ns"}}, "no_name"),
        ({"metadata": {"uid": "u", "name": "n", "namespace": "ns", "labels": "x"}}, "bad_labels"),
        ({"metadata": {"uid": "u", "name": "n", "namespace": "ns"}, "status": [1]}, "bad_status"),
    ],
)
def test_malformed_jobs_raise_a_reason(source: t.TrainingSource, obj: dict[str, Any], reason: str) -> None:
    with pytest.raises(MalformedObject) as excinfo:
        source.upsert_job(PYTORCH, obj)
    assert excinfo.value.reason == reason
