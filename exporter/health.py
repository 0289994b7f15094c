"""Health bookkeeping of sources, rendered as the exporter's own metrics at scrape time."""

from __future__ import annotations

import platform
from collections import Counter
from dataclasses import dataclass, field

from prometheus_client import ProcessCollector

from exporter import __version__, catalogue
from exporter.exposition import Family
from exporter.store import SeriesLimit, Store


@dataclass
class ResourceHealth:
    """State of one watched resource (one kind, in one namespace scope)."""

    source: str
    resource: str
    installed: bool = True
    synced: bool = False
    up: bool = False
    tracked: int = 0
    last_sync: float = 0.0
    events: Counter[str] = field(default_factory=Counter)
    restarts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


class SourceHealth:
    def __init__(self, name: str) -> None:
        self.name = name
        self.resources: list[ResourceHealth] = []
        self.limit: SeriesLimit | None = None

    def resource(self, resource: str) -> ResourceHealth:
        health = ResourceHealth(self.name, resource)
        self.resources.append(health)
        return health

    @property
    def synced(self) -> bool:
        return all(r.synced for r in self.resources)

    @property
    def up(self) -> bool:
        return bool(self.resources) and all(r.up for r in self.resources)

    @property
    def last_sync(self) -> float:
        return min((r.last_sync for r in self.resources), default=0.0) if self.synced else 0.0


class HealthRegistry:
    def __init__(self, role: str) -> None:
        self.role = role
        self.sources: list[SourceHealth] = []
        self.shard: tuple[int, int] | None = None  # (ordinal, total) of a sharded cluster role
        self._process = ProcessCollector(registry=None)

    def source(self, name: str) -> SourceHealth:
        health = SourceHealth(name)
        self.sources.append(health)
        return health

    @property
    def ready(self) -> bool:
        return all(s.synced for s in self.sources)

    def refresh(self, store: Store) -> None:
        """Render the exporter's own series into the store (a few dozen lines per scrape)."""
        build = catalogue.BUILD_INFO.sample((__version__, platform.python_version(), self.role), 1)
        store.put("_self/build", {catalogue.BUILD_INFO: build})
        if self.shard is not None:
            ordinal, total = self.shard
            store.put("_self/shard", {catalogue.SHARD_ORDINAL: catalogue.SHARD_ORDINAL.sample((), ordinal),
                                      catalogue.TOTAL_SHARDS: catalogue.TOTAL_SHARDS.sample((), total)})  # fmt: skip
        for src in self.sources:
            lines: dict[Family, list[str]] = {}

            def add(
                family: Family, values: tuple[str, ...], value: float, lines: dict[Family, list[str]] = lines
            ) -> None:
                lines.setdefault(family, []).append(family.sample(values, value))

            add(catalogue.SOURCE_UP, (src.name,), 1 if src.up else 0)
            add(catalogue.SOURCE_SYNCED, (src.name,), 1 if src.synced else 0)
            if src.last_sync:
                add(catalogue.SOURCE_LAST_SYNC, (src.name,), src.last_sync)
            if src.limit is not None:
                add(catalogue.SOURCE_SERIES, (src.name,), src.limit.series)
                add(catalogue.SERIES_DROPPED, (src.name,), src.limit.dropped)
            for r in src.resources:
                key = (src.name, r.resource)
                add(catalogue.RESOURCE_INSTALLED, key, 1 if r.installed else 0)
                add(catalogue.TRACKED_OBJECTS, key, r.tracked)
                for counter, family in (
                    (r.events, catalogue.WATCH_EVENTS),
                    (r.restarts, catalogue.WATCH_RESTARTS),
                    (r.errors, catalogue.API_ERRORS),
                    (r.skipped, catalogue.OBJECTS_SKIPPED),
                ):
                    for label, count in sorted(counter.items()):
                        add(family, (*key, label), count)
            store.put(f"_self/source/{src.name}", {f: "".join(v) for f, v in lines.items()})
        process: dict[Family, str] = {}
        for metric in self._process.collect():
            for sample in metric.samples:
                known = catalogue.BY_NAME.get(sample.name)
                if known is not None:
                    process[known] = known.sample((), sample.value)
        store.put("_self/process", process)
