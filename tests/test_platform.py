"""DataScienceCluster / DSCInitialization -> metrics."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from exporter.emulator.scenario import platform_scenario
from exporter.health import HealthRegistry
from exporter.sources.platform import PlatformSource
from exporter.store import Store
from exporter.watch import MalformedObject, NamespaceScope, WatchSettings
from tests.conftest import series_values, unused_client


@pytest.fixture
def source(store: Store, registry: HealthRegistry) -> PlatformSource:
    return PlatformSource(store, registry, unused_client(), NamespaceScope(["team-a"]), WatchSettings())


def fixture(kind: str) -> dict[str, Any]:
    objs, _ = platform_scenario()
    obj = copy.deepcopy(next(o for k, o in objs if k.kind == kind))
    obj["metadata"]["uid"] = kind
    return obj


def test_cluster_scoped_kinds_are_watched_once_outside_the_namespace_scope(source: PlatformSource) -> None:
    assert [(r.namespace, r.accept) for r in source.reflectors] == [(None, None), (None, None)]


def test_components_and_their_readiness(source: PlatformSource, store: Store) -> None:
    source.upsert_dsc(fixture("DataScienceCluster"))
    _, expected = platform_scenario()
    ready = {k.split('"')[1]: v for k, v in series_values(store, "ml_platform_component_ready").items()}
    assert ready == expected.components  # ray is Removed: no readiness series
    info = series_values(store, "ml_platform_component_info")
    assert '{component="ray",management_state="Removed"}' in info and len(info) == 6
    assert series_values(store, "ml_platform_ready") == {'{kind="DataScienceCluster",name="default-dsc"}': 0}


def test_pre_2_23_lowercase_conditions(source: PlatformSource, store: Store) -> None:
    dsc = fixture("DataScienceCluster")
    dsc["status"]["conditions"] = [
        {"type": "dashboardReady", "status": "True"},
        {"type": "ReconcileComplete", "status": "True"},
    ]
    dsc["status"]["phase"] = "Ready"
    source.upsert_dsc(dsc)
    assert series_values(store, "ml_platform_component_ready") == {'{component="dashboard"}': 1}
    assert series_values(store, "ml_platform_ready") == {'{kind="DataScienceCluster",name="default-dsc"}': 1}


def test_dsci(source: PlatformSource, store: Store) -> None:
    source.upsert_dsci(fixture("DSCInitialization"))
    assert series_values(store, "ml_platform_info") == {
        '{name="default-dsci",applications_namespace="opendatahub",monitoring="Managed"}': 1
    }
    assert series_values(store, "ml_platform_ready") == {'{kind="DSCInitialization",name="default-dsci"}': 1}


def test_malformed_components(source: PlatformSource) -> None:
    dsc = fixture("DataScienceCluster")
    dsc["spec"]["components"] = ["dashboard"]
    with pytest.raises(MalformedObject, match="bad_components"):
        source.upsert_dsc(dsc)
