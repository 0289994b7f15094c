"""The ML platform itself: Open Data Hub / OpenShift AI `DataScienceCluster` and `DSCInitialization`.

Both are cluster-scoped singletons, so their series carry no namespace. A component's
readiness is its `<Component>Ready` condition (`DashboardReady`; before ODH 2.23
`dashboardReady`), matched to the component name case-insensitively. Readiness of the
platform's Deployments comes from kube-state-metrics in the rules, not from here.
"""

from __future__ import annotations

from typing import Any

from exporter import catalogue as c
from exporter.exposition import Family
from exporter.kube import ResourceKind
from exporter.sources import Callbacks, WatchSource, conditions_of, status_of
from exporter.watch import MalformedObject

DSC = ResourceKind("datasciencecluster.opendatahub.io", "v1", "datascienceclusters", "DataScienceCluster", False)
DSCI = ResourceKind("dscinitialization.opendatahub.io", "v1", "dscinitializations", "DSCInitialization", False)
# DSC v2 renamed datasciencepipelines to aipipelines; v1 clients see the old name and condition.
CONDITION_ALIASES = {"aipipelines": "datasciencepipelines"}


def _name(obj: dict[str, Any]) -> tuple[dict[str, Any], str]:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        raise MalformedObject("no_name")
    return metadata, metadata["name"]


class PlatformSource(WatchSource):
    name = "platform"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watch(DSC, Callbacks(self.upsert_dsc, self.delete))
        self.watch(DSCI, Callbacks(self.upsert_dsci, self.delete))

    def upsert_dsc(self, obj: dict[str, Any]) -> None:
        metadata, name = _name(obj)
        status = status_of(obj)
        components = (obj.get("spec") or {}).get("components") or {}
        if not isinstance(components, dict):
            raise MalformedObject("bad_components")
        conditions = {str(cond.get("type", "")).lower(): cond for cond in conditions_of(status)}
        ready = conditions.get("ready", {}).get("status") == "True" or status.get("phase") == "Ready"
        info, readiness = [], []
        for component, settings in sorted(components.items()):
            state = (
                str((settings or {}).get("managementState") or "Removed") if isinstance(settings, dict) else "Removed"
            )
            info.append(c.PLATFORM_COMPONENT_INFO.sample((component, state), 1))
            if state == "Removed":
                continue
            key = str(CONDITION_ALIASES.get(component, component)) + "ready"
            cond = conditions.get(key) or conditions.get(component + "ready")
            if cond is not None:
                readiness.append(c.PLATFORM_COMPONENT_READY.sample((component,), cond.get("status") == "True"))
        lines: dict[Family, str] = {
            c.PLATFORM_READY: c.PLATFORM_READY.sample((DSC.kind, name), ready),
            c.PLATFORM_COMPONENT_INFO: "".join(info),
            c.PLATFORM_COMPONENT_READY: "".join(readiness),
        }
        self.store.put(f"platform/{metadata.get('uid')}", lines)

    def upsert_dsci(self, obj: dict[str, Any]) -> None:
        metadata, name = _name(obj)
        status = status_of(obj)
        spec = obj.get("spec") or {}
        if not isinstance(spec, dict):
            raise MalformedObject("bad_spec")
        monitoring = str((spec.get("monitoring") or {}).get("managementState") or "")
        ready = status.get("phase") == "Ready"
        lines: dict[Family, str] = {
            c.PLATFORM_READY: c.PLATFORM_READY.sample((DSCI.kind, name), ready),
            c.PLATFORM_INFO: c.PLATFORM_INFO.sample(
                (name, str(spec.get("applicationsNamespace") or ""), monitoring), 1
            ),
        }
        self.store.put(f"platform/{metadata.get('uid')}", lines)

    def delete(self, uid: str) -> None:
        self.store.delete(f"platform/{uid}")
