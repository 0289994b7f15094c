"""Sources: asyncio tasks that keep the store current. One module per source."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from exporter.health import HealthRegistry
from exporter.kube import KubeClient, ResourceKind
from exporter.store import Store
from exporter.watch import Handler, NamespaceScope, Reflector, WatchSettings


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
    ) -> None:
        self.store = store
        self.health = registry.source(self.name)
        self.client = client
        self.scope = scope
        self.settings = settings
        self.reflectors: list[Reflector] = []

    def watch(self, kind: ResourceKind, handler: Handler, label_selector: str | None = None) -> None:
        resource = str(kind) if not label_selector else f"{kind}[{label_selector}]"
        for namespace in self.scope.watch_namespaces:
            health = self.health.resource(resource if namespace is None else f"{resource}@{namespace}")
            reflector = Reflector(
                self.client,
                kind,
                handler,
                health,
                self.settings,
                namespace=namespace,
                label_selector=label_selector,
                accept=self.scope.accept(),
            )
            self.scope.register(reflector)
            self.reflectors.append(reflector)

    async def run(self) -> None:
        await self.scope.ready.wait()
        await asyncio.gather(*(r.run() for r in self.reflectors))


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
