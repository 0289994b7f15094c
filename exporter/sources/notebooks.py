"""Notebooks (workbenches): Kubeflow `Notebook` objects, their pods, and the culler's settings.

Status rule (docs/notebooks.md): stopped when the `kubeflow-resource-stopped`
annotation is set (the dashboard's stop button and the culler both set it);
otherwise running once `status.readyReplicas` >= 1; otherwise starting.
The optional Jupyter activity probe lives in `exporter.sources.jupyter`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter import catalogue as c
from exporter.exposition import Family
from exporter.kube import ResourceKind
from exporter.sources import (
    Callbacks,
    WatchSource,
    metadata_of,
    parse_quantity,
    parse_time,
    resource_unit,
    status_of,
)
from exporter.sources.jupyter import ActivityProbe
from exporter.sources.training import PODS
from exporter.watch import MalformedObject

NOTEBOOK = ResourceKind("kubeflow.org", "v1", "notebooks", "Notebook")
CONFIGMAPS = ResourceKind("", "v1", "configmaps", "ConfigMap")
STATUSES = ("running", "starting", "stopped")
CULLER_CONFIGMAP = "notebook-controller-culler-config"

STOPPED_ANNOTATION = "kubeflow-resource-stopped"
LAST_ACTIVITY_ANNOTATION = "notebooks.kubeflow.org/last-activity"
USER_ANNOTATION = "opendatahub.io/username"
USER_LABEL = "opendatahub.io/user"
IMAGE_ANNOTATION = "notebooks.opendatahub.io/last-image-selection"
ACCELERATOR_ANNOTATION = "opendatahub.io/accelerator-name"
POD_LABEL = "notebook-name"


@dataclass(frozen=True)
class NotebookFacts:
    namespace: str
    name: str
    status: str


def _resources(spec: dict[str, Any], field: str) -> dict[str, float]:
    """Requests or limits of the pod template, summed over its containers."""
    template = (spec.get("template") or {}).get("spec") or {}
    totals: dict[str, float] = {}
    for container in template.get("containers") or []:
        values = ((container or {}).get("resources") or {}).get(field) or {}
        if not isinstance(values, dict):
            raise MalformedObject("bad_resources")
        for resource, quantity in values.items():
            totals[resource] = totals.get(resource, 0.0) + parse_quantity(quantity)
    return totals


def _image(name: str, spec: dict[str, Any], annotations: dict[str, Any]) -> str:
    selected = annotations.get(IMAGE_ANNOTATION)
    if isinstance(selected, str) and selected:
        return selected
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    # The notebook container is named after the Notebook; sidecars (oauth-proxy) are not.
    for container in containers:
        if isinstance(container, dict) and container.get("name") == name:
            return str(container.get("image") or "")
    return str(containers[0].get("image") or "") if containers and isinstance(containers[0], dict) else ""


def notebook_status(annotations: dict[str, Any], status: dict[str, Any]) -> str:
    if STOPPED_ANNOTATION in annotations:
        return "stopped"
    ready = status.get("readyReplicas") or 0
    return "running" if isinstance(ready, int) and ready >= 1 else "starting"


class NotebookSource(WatchSource):
    name = "notebooks"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.notebooks: dict[str, NotebookFacts] = {}
        self.probe = ActivityProbe(self.store, self.options) if self.options.notebooks_probe else None
        self.watch(NOTEBOOK, Callbacks(self.upsert_notebook, self.delete_notebook))
        self.watch(PODS, Callbacks(self.upsert_pod, self.delete_pod), label_selector=POD_LABEL)
        self.watch(
            CONFIGMAPS,
            Callbacks(self.upsert_culler_config, self.delete_culler_config),
            field_selector=f"metadata.name={CULLER_CONFIGMAP}",
            namespace=self.options.notebooks_controller_namespace,
        )

    def background(self) -> list[Any]:
        return [self.probe.run()] if self.probe else []

    def upsert_notebook(self, obj: dict[str, Any]) -> None:
        metadata, namespace, name, labels = metadata_of(obj)
        status = status_of(obj)
        spec = obj.get("spec") or {}
        annotations = metadata.get("annotations") or {}
        if not isinstance(spec, dict) or not isinstance(annotations, dict):
            raise MalformedObject("bad_spec")
        state = notebook_status(annotations, status)
        user = annotations.get(USER_ANNOTATION) or labels.get(USER_LABEL) or ""
        accelerator = annotations.get(ACCELERATOR_ANNOTATION) or ""
        nb = (namespace, name)
        image = _image(name, spec, annotations)
        lines: dict[Family, str] = {
            c.NOTEBOOK_INFO: c.NOTEBOOK_INFO.sample((*nb, str(user), image, str(accelerator)), 1),
            c.NOTEBOOK_STATUS: "".join(c.NOTEBOOK_STATUS.sample((*nb, s), s == state) for s in STATUSES),
        }
        for family, field in ((c.NOTEBOOK_REQUESTS, "requests"), (c.NOTEBOOK_LIMITS, "limits")):
            amounts = sorted(_resources(spec, field).items())
            lines[family] = "".join(family.sample((*nb, r, resource_unit(r)), v) for r, v in amounts)
        started = ((status.get("containerState") or {}).get("running") or {}).get("startedAt")
        for family, value in (
            (c.NOTEBOOK_CREATED, metadata.get("creationTimestamp")),
            (c.NOTEBOOK_START, started if state != "stopped" else None),
            (c.NOTEBOOK_LAST_ACTIVITY, annotations.get(LAST_ACTIVITY_ANNOTATION)),
            (c.NOTEBOOK_STOPPED, annotations.get(STOPPED_ANNOTATION)),
        ):
            # An unreadable timestamp drops that one series, not the notebook.
            timestamp = parse_time(value)
            if timestamp is not None:
                lines[family] = family.sample(nb, timestamp)
        uid = metadata["uid"]
        self.store.put(f"notebooks/nb/{uid}", lines)
        self.notebooks[uid] = NotebookFacts(namespace, name, state)
        if self.probe is not None:
            self.probe.track(uid, namespace, name, running=state == "running")

    def delete_notebook(self, uid: str) -> None:
        self.store.delete(f"notebooks/nb/{uid}")
        self.notebooks.pop(uid, None)
        if self.probe is not None:
            self.probe.forget(uid)

    def upsert_pod(self, obj: dict[str, Any]) -> None:
        metadata, namespace, name, labels = metadata_of(obj)
        spec = obj.get("spec") or {}
        node = spec.get("nodeName") or "" if isinstance(spec, dict) else ""
        notebook = labels.get(POD_LABEL)
        if not isinstance(notebook, str) or not notebook:
            raise MalformedObject("no_workload_label")
        line = c.WORKLOAD_POD_INFO.sample((namespace, name, NOTEBOOK.kind, notebook, str(node), ""), 1)
        self.store.put(f"notebooks/pod/{metadata['uid']}", {c.WORKLOAD_POD_INFO: line})

    def delete_pod(self, uid: str) -> None:
        self.store.delete(f"notebooks/pod/{uid}")

    def upsert_culler_config(self, obj: dict[str, Any]) -> None:
        metadata, namespace, _, _ = metadata_of(obj)
        data = obj.get("data") or {}
        if not isinstance(data, dict):
            raise MalformedObject("bad_data")
        lines: dict[Family, str] = {}
        enabled = str(data.get("ENABLE_CULLING", "false")).strip().lower() == "true"
        lines[c.CULLING_ENABLED] = c.CULLING_ENABLED.sample((namespace,), 1 if enabled else 0)
        # Both settings are in minutes.
        for family, key in ((c.CULLING_IDLE, "CULL_IDLE_TIME"), (c.CULLING_PERIOD, "IDLENESS_CHECK_PERIOD")):
            try:
                minutes = float(str(data[key]).strip())
            except (KeyError, ValueError):
                continue
            lines[family] = family.sample((namespace,), minutes * 60)
        self.store.put(f"notebooks/culler/{metadata['uid']}", lines)

    def delete_culler_config(self, uid: str) -> None:
        self.store.delete(f"notebooks/culler/{uid}")
