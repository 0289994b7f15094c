"""Notebook objects -> metrics, for ODH-shaped and plain-Kubeflow-shaped Notebooks."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.emulator.scenario import notebook, notebook_pod
from exporter.health import HealthRegistry
from exporter.sources import parse_quantity
from exporter.sources.notebooks import NotebookSource
from exporter.store import Store
from exporter.watch import MalformedObject, NamespaceScope, WatchSettings
from tests.conftest import series_values, unused_client


@pytest.fixture
def source(store: Store, registry: HealthRegistry) -> NotebookSource:
    # Driven directly: the client is never used.
    return NotebookSource(store, registry, unused_client(), NamespaceScope(), WatchSettings())


def upsert(source: NotebookSource, obj: dict[str, Any], uid: str = "u1") -> None:
    obj["metadata"]["uid"] = uid
    source.upsert_notebook(obj)


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("500m", 0.5),
        ("2", 2),
        ("1Gi", 2**30),
        ("1.5G", 1.5e9),
        ("100Mi", 100 * 2**20),
        ("1e3", 1000),
        (4, 4),
        ("250u", 0.00025),
    ],
)
def test_quantities(value: Any, number: float) -> None:
    assert parse_quantity(value) == pytest.approx(number)


@pytest.mark.parametrize("value", ["", "lots", "1.2.3", "5 Gi", True])
def test_bad_quantities(value: Any) -> None:
    with pytest.raises(MalformedObject):
        parse_quantity(value)


def test_odh_notebook(source: NotebookSource, store: Store) -> None:
    nb = notebook(
        "team-a",
        "alice-wb",
        state="running",
        user="alice",
        accelerator="NVIDIA GPU",
        requests={"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"},
        limits={"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"},
        culler_activity=3600,
    )
    upsert(source, nb)
    info = series_values(store, "ml_notebook_info")
    assert info == {
        '{namespace="team-a",notebook="alice-wb",user="alice",image="odh-minimal-notebook:2024.2",'
        'accelerator="NVIDIA GPU"}': 1
    }
    assert series_values(store, "ml_notebook_status") == {
        '{namespace="team-a",notebook="alice-wb",status="running"}': 1,
        '{namespace="team-a",notebook="alice-wb",status="starting"}': 0,
        '{namespace="team-a",notebook="alice-wb",status="stopped"}': 0,
    }
    requests = series_values(store, "ml_notebook_resource_requests")
    # The oauth-proxy sidecar's requests count: the pod holds them.
    assert requests['{namespace="team-a",notebook="alice-wb",resource="cpu",unit="core"}'] == pytest.approx(2.1)
    assert requests['{namespace="team-a",notebook="alice-wb",resource="memory",unit="byte"}'] == 8 * 2**30 + 64 * 2**20
    assert requests['{namespace="team-a",notebook="alice-wb",resource="nvidia.com/gpu",unit="integer"}'] == 1
    limits = series_values(store, "ml_notebook_resource_limits")
    assert limits['{namespace="team-a",notebook="alice-wb",resource="cpu",unit="core"}'] == pytest.approx(4.1)
    assert len(series_values(store, "ml_notebook_last_activity_timestamp_seconds")) == 1
    assert len(series_values(store, "ml_notebook_start_timestamp_seconds")) == 1


def test_plain_kubeflow_notebook_without_annotations(source: NotebookSource, store: Store) -> None:
    nb = notebook(
        "kubeflow-user",
        "scipy",
        state="starting",
        odh=False,
        image="kubeflownotebookswg/jupyter-scipy:v1.8.0",
        requests={"cpu": "500m", "memory": "1Gi"},
    )
    nb["metadata"]["annotations"] = {}
    upsert(source, nb)
    assert series_values(store, "ml_notebook_info") == {
        '{namespace="kubeflow-user",notebook="scipy",user="",image="kubeflownotebookswg/jupyter-scipy:v1.8.0",'
        'accelerator=""}': 1
    }
    status = series_values(store, "ml_notebook_status")
    assert status['{namespace="kubeflow-user",notebook="scipy",status="starting"}'] == 1
    for family in (
        "ml_notebook_last_activity_timestamp_seconds",
        "ml_notebook_stopped_timestamp_seconds",
        "ml_notebook_start_timestamp_seconds",
    ):
        assert series_values(store, family) == {}


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"state": "stopped", "stopped": 60}, "stopped"),  # stopped from the dashboard
        ({"state": "running", "stopped": 10, "culler_activity": 90000}, "stopped"),  # culled; pod still up
        ({"state": "starting"}, "starting"),
        ({"state": "running"}, "running"),
    ],
)
def test_status_rule(source: NotebookSource, store: Store, kwargs: dict[str, Any], status: str) -> None:
    upsert(source, notebook("ns", "nb", requests={"cpu": "1"}, **kwargs))
    current = [k for k, v in series_values(store, "ml_notebook_status").items() if v == 1]
    assert current == [f'{{namespace="ns",notebook="nb",status="{status}"}}']
    assert bool(series_values(store, "ml_notebook_stopped_timestamp_seconds")) == ("stopped" in kwargs)


def test_malformed_timestamps_drop_only_that_series(source: NotebookSource, store: Store) -> None:
    nb = notebook("ns", "nb", state="running", requests={"cpu": "1"})
    nb["metadata"]["annotations"]["notebooks.kubeflow.org/last-activity"] = "yesterday-ish"
    nb["metadata"]["annotations"]["kubeflow-resource-stopped"] = "not-a-time"
    upsert(source, nb)
    assert series_values(store, "ml_notebook_last_activity_timestamp_seconds") == {}
    assert series_values(store, "ml_notebook_stopped_timestamp_seconds") == {}
    # The stopped annotation is present, so the notebook is stopped whatever its value.
    assert series_values(store, "ml_notebook_status")['{namespace="ns",notebook="nb",status="stopped"}'] == 1
    assert len(series_values(store, "ml_notebook_info")) == 1


def test_malformed_requests_skip_the_notebook(source: NotebookSource, store: Store) -> None:
    nb = notebook("ns", "nb", state="running", requests={"cpu": "a lot"})
    with pytest.raises(MalformedObject, match="bad_quantity"):
        upsert(source, nb)


def test_notebook_pod_join(source: NotebookSource, store: Store) -> None:
    pod = notebook_pod("team-a", "alice-wb", node="gpu-node-4", cpu=1, memory=1)
    pod["metadata"]["uid"] = "p1"
    source.upsert_pod(pod)
    assert series_values(store, "ml_workload_pod_info") == {
        '{namespace="team-a",pod="alice-wb-0",workload_kind="Notebook",workload="alice-wb",node="gpu-node-4",'
        'replica_type=""}': 1
    }
    source.delete_pod("p1")
    assert series_values(store, "ml_workload_pod_info") == {}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"ENABLE_CULLING": "true", "CULL_IDLE_TIME": "1440", "IDLENESS_CHECK_PERIOD": "5"},
            {
                "ml_notebook_culling_enabled": 1,
                "ml_notebook_culling_idle_threshold_seconds": 86400,
                "ml_notebook_culling_check_period_seconds": 300,
            },
        ),
        ({"ENABLE_CULLING": "false"}, {"ml_notebook_culling_enabled": 0}),
        ({"ENABLE_CULLING": "True", "CULL_IDLE_TIME": "soon"}, {"ml_notebook_culling_enabled": 1}),
    ],
)
def test_culler_config(source: NotebookSource, store: Store, data: dict[str, str], expected: dict[str, float]) -> None:
    source.upsert_culler_config(
        {
            "metadata": {
                "name": "notebook-controller-culler-config",
                "namespace": "opendatahub",
                "uid": "cm1",
            },
            "data": data,
        }
    )
    for family in (
        "ml_notebook_culling_enabled",
        "ml_notebook_culling_idle_threshold_seconds",
        "ml_notebook_culling_check_period_seconds",
    ):
        got = series_values(store, family)
        if family in expected:
            assert got == {'{namespace="opendatahub"}': expected[family]}
        else:
            assert got == {}
