"""Sources: asyncio tasks that keep the store current. One module per source."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from exporter.config import Config, defaults
from exporter.health import HealthRegistry
from exporter.kube import KubeClient, ResourceKind
from exporter.store import SeriesLimit, Store
from exporter.watch import Handler, MalformedObject, NamespaceScope, Reflector, WatchSettings


class WatchSource:
    """Base of the cluster-role sources: owns reflectors for the kinds it watches."""

    name = "source"

    def __init__(
        self,
        store: Store,
        registry: HealthRegistry,
        client: KubeClient,
        scope: NamespaceScope,
        settings: WatchSettings,
        options: Config | None = None,
    ) -> None:
        self.options = options or defaults()
        self.health = registry.source(self.name)
        self.store: Store | SeriesLimit = store
        if self.options.limits_series_per_source:
            self.store = self.health.limit = SeriesLimit(store, self.options.limits_series_per_source)
        self.client = client
        self.scope = scope
        self.settings = settings
        self.reflectors: list[Reflector] = []

    def watch(
        self,
        kind: ResourceKind,
        handler: Handler,
        label_selector: str | None = None,
        *,
        field_selector: str | None = None,
        namespace: str | None = None,
    ) -> None:
        """Watch `kind` in every namespace in scope, or in `namespace` only, whatever the scope
        (for objects of the platform itself, such as a controller's ConfigMap). Cluster-scoped
        kinds are watched once and are outside any namespace scope."""
        selectors = ",".join(filter(None, (label_selector, field_selector)))
        resource = f"{kind}[{selectors}]" if selectors else str(kind)
        unscoped = bool(namespace) or not kind.namespaced
        if unscoped and not self.scope.owns_singletons:
            return  # another shard serves cluster-scoped and fixed-namespace objects
        for ns in [namespace] if namespace else ([None] if not kind.namespaced else self.scope.watch_namespaces):
            reflector = Reflector(
                self.client,
                kind,
                handler,
                self.health.resource(resource if ns is None else f"{resource}@{ns}"),
                self.settings,
                namespace=ns,
                label_selector=label_selector,
                field_selector=field_selector,
                accept=None if unscoped else self.scope.accept(),
            )
            if not unscoped:
                self.scope.register(reflector)
            self.reflectors.append(reflector)

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """Tasks besides the reflectors (pollers); they start with them."""
        return []

    async def run(self) -> None:
        await self.scope.ready.wait()
        await asyncio.gather(*(r.run() for r in self.reflectors), *self.background())


def parse_time(value: Any) -> float | None:
    """RFC 3339 timestamp -> unix seconds; None when absent or unreadable."""
    if not value or not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def conditions_of(status: dict[str, Any]) -> list[dict[str, Any]]:
    conditions = status.get("conditions") or []
    if not isinstance(conditions, list):
        return []
    return [c for c in conditions if isinstance(c, dict)]


_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$")
_SUFFIX = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
}  # fmt: skip


def resource_unit(resource: str) -> str:
    """The unit label kube-state-metrics gives a resource: core, byte, else integer."""
    return {"cpu": "core", "memory": "byte", "ephemeral-storage": "byte"}.get(resource, "integer")


def parse_quantity(value: Any) -> float:
    """A Kubernetes resource quantity ("500m", "1.5Gi", "2", "1e3") as a plain number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    m = _QUANTITY.match(str(value).strip())
    if m is None:
        raise MalformedObject("bad_quantity")
    number, exponent, suffix = m.groups()
    if exponent:
        return float(number + exponent)
    return float(number) * (_SUFFIX[suffix] if suffix else 1)


def metadata_of(obj: dict[str, Any]) -> tuple[dict[str, Any], str, str, dict[str, str]]:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        raise MalformedObject("no_metadata")
    namespace, name = metadata.get("namespace"), metadata.get("name")
    if not isinstance(namespace, str) or not isinstance(name, str) or not namespace or not name:
        raise MalformedObject("no_name")
    labels = metadata.get("labels") or {}
    if not isinstance(labels, dict):
        raise MalformedObject("bad_labels")
    return metadata, namespace, name, labels


def status_of(obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status") or {}
    if not isinstance(status, dict):
        raise MalformedObject("bad_status")
    return status


class Callbacks:
    """A reflector handler made of two functions."""

    def __init__(self, upsert: Callable[[dict[str, Any]], None], delete: Callable[[str], None]) -> None:
        self.upsert, self.delete = upsert, delete
