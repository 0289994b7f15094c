"""Model serving: KServe InferenceServices and their model-server pods.

Model version rule (docs/serving.md): the `--serving.version-label` label of the
pod, else the same label on the InferenceService, else the pod's Knative revision
(`serving.knative.dev/revision`), else empty. Model-server metrics are scraped per
pod, so `ml_model_pod_info` is how the rules attribute them to a model and version.
"""

from __future__ import annotations

from typing import Any

from exporter import catalogue as c
from exporter.exposition import Family
from exporter.kube import ResourceKind
from exporter.sources import Callbacks, WatchSource, conditions_of, metadata_of, status_of
from exporter.sources.training import PODS
from exporter.watch import MalformedObject

INFERENCE_SERVICE = ResourceKind("serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService")
ISVC_POD_LABEL = "serving.kserve.io/inferenceservice"
COMPONENT_LABEL = "component"
REVISION_LABEL = "serving.knative.dev/revision"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
MODEL_STATES = {"Pending": "pending", "Standby": "standby", "Loading": "loading", "Loaded": "loaded",
                "FailedToLoad": "failed_to_load"}  # fmt: skip


class ServingSource(WatchSource):
    name = "serving"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.version_label = self.options.serving_version_label
        self.isvc_versions: dict[tuple[str, str], str] = {}  # (namespace, isvc) -> version label value
        # uid -> (namespace, pod, inference service, component, own version label, revision, node)
        self.pods: dict[str, tuple[str, str, str, str, str, str, str]] = {}
        self.watch(INFERENCE_SERVICE, Callbacks(self.upsert_isvc, self.delete_isvc))
        self.watch(PODS, Callbacks(self.upsert_pod, self.delete_pod), label_selector=ISVC_POD_LABEL)

    def upsert_isvc(self, obj: dict[str, Any]) -> None:
        metadata, namespace, name, labels = metadata_of(obj)
        status = status_of(obj)
        spec = obj.get("spec") or {}
        if not isinstance(spec, dict):
            raise MalformedObject("bad_spec")
        predictor = spec.get("predictor") or {}
        model = predictor.get("model") or {} if isinstance(predictor, dict) else {}
        if not isinstance(model, dict):
            raise MalformedObject("bad_predictor")
        model_format = str((model.get("modelFormat") or {}).get("name") or "")
        runtime = str(model.get("runtime") or "")
        if not model_format:  # the older per-framework predictor shape: spec.predictor.<framework>
            frameworks = [k for k, v in predictor.items() if isinstance(v, dict) and k not in ("model", "containers")]
            model_format = frameworks[0] if frameworks else ""
        annotations = metadata.get("annotations") or {}
        # The annotation, else what KServe (>= 0.16) reports; Serverless/RawDeployment are now Knative/Standard.
        mode = str(annotations.get(DEPLOYMENT_MODE_ANNOTATION) or status.get("deploymentMode") or "")
        conditions = conditions_of(status)
        ready = any(cond.get("type") == "Ready" and cond.get("status") == "True" for cond in conditions)
        key = (namespace, name)
        active = (((status.get("modelStatus") or {}).get("states") or {}).get("activeModelState")) or ""
        state = MODEL_STATES.get(str(active), "")
        lines: dict[Family, str] = {
            c.INFERENCE_SERVICE_INFO: c.INFERENCE_SERVICE_INFO.sample((*key, runtime, model_format, mode), 1),
            c.INFERENCE_SERVICE_READY: c.INFERENCE_SERVICE_READY.sample(key, ready),
            c.INFERENCE_SERVICE_CONDITION: "".join(
                c.INFERENCE_SERVICE_CONDITION.sample((*key, str(cond["type"])), cond.get("status") == "True")
                for cond in conditions if isinstance(cond.get("type"), str)
            ),
            c.INFERENCE_SERVICE_REVISION: "".join(
                c.INFERENCE_SERVICE_REVISION.sample((*key, str(component), str(info["latestReadyRevision"])), 1)
                for component, info in sorted((status.get("components") or {}).items())
                if isinstance(info, dict) and info.get("latestReadyRevision")
            ),
        }  # fmt: skip
        if state:
            lines[c.INFERENCE_SERVICE_MODEL_STATE] = "".join(
                c.INFERENCE_SERVICE_MODEL_STATE.sample((*key, s), s == state) for s in MODEL_STATES.values()
            )
        self.store.put(f"serving/isvc/{metadata['uid']}", lines)
        version = str(labels.get(self.version_label) or "")
        if self.isvc_versions.get(key) != version:
            self.isvc_versions[key] = version
            for uid, pod in self.pods.items():
                if (pod[0], pod[2]) == key:
                    self._render_pod(uid)

    def delete_isvc(self, uid: str) -> None:
        self.store.delete(f"serving/isvc/{uid}")

    def upsert_pod(self, obj: dict[str, Any]) -> None:
        metadata, namespace, name, labels = metadata_of(obj)
        isvc = labels.get(ISVC_POD_LABEL)
        if not isinstance(isvc, str) or not isvc:
            raise MalformedObject("no_workload_label")
        spec = obj.get("spec") or {}
        node = str(spec.get("nodeName") or "") if isinstance(spec, dict) else ""
        component = str(labels.get(COMPONENT_LABEL) or "predictor")
        own_version = str(labels.get(self.version_label) or "")
        revision = str(labels.get(REVISION_LABEL) or "")
        self.pods[metadata["uid"]] = (namespace, name, isvc, component, own_version, revision, node)
        self._render_pod(metadata["uid"])

    def _render_pod(self, uid: str) -> None:
        namespace, name, isvc, component, own_version, revision, node = self.pods[uid]
        version = own_version or self.isvc_versions.get((namespace, isvc), "") or revision
        workload = (namespace, name, "InferenceService", isvc, node, component)
        lines = {
            c.MODEL_POD_INFO: c.MODEL_POD_INFO.sample((namespace, name, isvc, component, version), 1),
            c.WORKLOAD_POD_INFO: c.WORKLOAD_POD_INFO.sample(workload, 1),
        }
        self.store.put(f"serving/pod/{uid}", lines)

    def delete_pod(self, uid: str) -> None:
        self.store.delete(f"serving/pod/{uid}")
        self.pods.pop(uid, None)
