"""InferenceService objects -> metrics, and the model version rule."""

from __future__ import annotations

from typing import Any

import pytest

from exporter import config
from exporter.emulator.scenario import inference_service, pod
from exporter.health import HealthRegistry
from exporter.sources.serving import ServingSource
from exporter.store import Store
from exporter.watch import NamespaceScope, WatchSettings
from tests.conftest import series_values, unused_client, with_uid


@pytest.fixture
def source(store: Store, registry: HealthRegistry) -> ServingSource:
    return ServingSource(store, registry, unused_client(), NamespaceScope(), WatchSettings(), config.defaults())


@pytest.mark.parametrize(
    ("kwargs", "ready", "state", "mode"),
    [
        ({"mode": "Serverless", "ready": True, "revision": "m-predictor-00003"}, 1, "loaded", "Serverless"),
        ({"mode": "RawDeployment", "ready": True}, 1, "loaded", "RawDeployment"),
        ({"mode": "Serverless", "ready": False, "model_state": "FailedToLoad"}, 0, "failed_to_load", "Serverless"),
        ({"mode": "Standard", "ready": False, "model_state": "Loading"}, 0, "loading", "Standard"),
    ],
)
def test_inference_service(source: ServingSource, store: Store, kwargs: dict[str, Any], ready: int, state: str,
                           mode: str) -> None:  # fmt: skip
    source.upsert_isvc(with_uid(inference_service("ns", "m", model_format="onnx", runtime="ovms", **kwargs), "i1"))
    assert series_values(store, "ml_inference_service_info") == {
        f'{{namespace="ns",inference_service="m",runtime="ovms",model_format="onnx",deployment_mode="{mode}"}}': 1
    }
    assert series_values(store, "ml_inference_service_ready") == {'{namespace="ns",inference_service="m"}': ready}
    states = series_values(store, "ml_inference_service_model_state")
    assert [k for k, v in states.items() if v == 1] == [f'{{namespace="ns",inference_service="m",state="{state}"}}']
    assert len(states) == 5
    conditions = series_values(store, "ml_inference_service_condition")
    assert conditions['{namespace="ns",inference_service="m",condition="PredictorReady"}'] == ready
    revisions = series_values(store, "ml_inference_service_latest_ready_revision_info")
    assert bool(revisions) == ("revision" in kwargs)


def test_old_predictor_shape_and_no_status(source: ServingSource, store: Store) -> None:
    obj = {"metadata": {"name": "legacy", "namespace": "ns", "uid": "i2"},
           "spec": {"predictor": {"sklearn": {"storageUri": "s3://models/iris"}}}}  # fmt: skip
    source.upsert_isvc(obj)
    info = series_values(store, "ml_inference_service_info")
    assert 'model_format="sklearn"' in next(iter(info))
    assert series_values(store, "ml_inference_service_ready") == {'{namespace="ns",inference_service="legacy"}': 0}
    assert series_values(store, "ml_inference_service_model_state") == {}


def test_model_version_rule(source: ServingSource, store: Store) -> None:
    labels = {"serving.kserve.io/inferenceservice": "m", "component": "predictor",
              "serving.knative.dev/revision": "m-predictor-00007"}  # fmt: skip
    source.upsert_pod(with_uid(pod("ns", "m-pod-a", dict(labels), node="n1", cpu=1, memory=1), "p1"))
    (info,) = series_values(store, "ml_model_pod_info")
    assert 'version="m-predictor-00007"' in info  # the Knative revision, nothing better known
    source.upsert_isvc(with_uid(inference_service("ns", "m", model_format="onnx", runtime="ovms", mode="Serverless",
                                                  ready=True, version="v2"), "i1"))  # fmt: skip
    (info,) = series_values(store, "ml_model_pod_info")
    assert 'version="v2"' in info  # the InferenceService's version label
    canary = {**labels, "serving.kserve.io/model-version": "v3"}
    source.upsert_pod(with_uid(pod("ns", "m-pod-b", canary, node="n1", cpu=1, memory=1), "p2"))
    versions = sorted(k.split('version="')[1].rstrip('"}') for k in series_values(store, "ml_model_pod_info"))
    assert versions == ["v2", "v3"]  # a pod's own label wins: canary and stable side by side
    pods = series_values(store, "ml_workload_pod_info")
    assert all('workload_kind="InferenceService",workload="m"' in k and 'replica_type="predictor"' in k for k in pods)
    source.delete_pod("p2")
    assert len(series_values(store, "ml_model_pod_info")) == 1
