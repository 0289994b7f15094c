"""Pre-rendered metric store (render on events, concatenate on scrape).

Each object's lines are rendered to bytes when the object changes and kept per
family under the object's key. A scrape joins bytes family by family, so the
HELP/TYPE header of a family is written once, and only when it has series. All
mutation and rendering happen on the event loop thread, so a scrape always sees
a consistent snapshot without locks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from exporter.exposition import Family


class Store:
    def __init__(self, families: Iterable[Family]) -> None:
        self._families = tuple(families)
        self._series: dict[str, dict[str, bytes]] = {f.name: {} for f in self._families}
        self._families_of: dict[str, tuple[str, ...]] = {}

    def put(self, key: str, rendered: Mapping[Family, str | bytes]) -> None:
        """Replace everything stored under `key` with `rendered` (family -> sample lines)."""
        previous = self._families_of.get(key, ())
        present: list[str] = []
        for family, lines in rendered.items():
            if not lines:
                continue
            self._series[family.name][key] = lines.encode() if isinstance(lines, str) else lines
            present.append(family.name)
        for name in previous:
            if name not in present:
                del self._series[name][key]
        if present:
            self._families_of[key] = tuple(present)
        else:
            self._families_of.pop(key, None)

    def delete(self, key: str) -> None:
        for name in self._families_of.pop(key, ()):
            del self._series[name][key]

    def __contains__(self, key: str) -> bool:
        return key in self._families_of

    def __len__(self) -> int:
        return len(self._families_of)

    def series_count(self) -> int:
        return sum(chunk.count(b"\n") for objs in self._series.values() for chunk in objs.values())

    def render(self, openmetrics: bool = False) -> list[bytes]:
        """The exposition as a list of chunks (join them or write them as they are)."""
        out: list[bytes] = []
        for family in self._families:
            objs = self._series[family.name]
            if objs:
                out.append(family.header_openmetrics if openmetrics else family.header_text)
                out.extend(objs.values())
        return out


class SeriesLimit:
    """A store as one source sees it, holding at most `limit` series of that source.

    An object whose series would go over the limit is not stored (a previous version of it is
    removed, never served stale), and its series are counted in `dropped`: a runaway source (a
    controller creating objects in a loop) cannot grow the exporter's memory or Prometheus's
    cardinality without bound, and the others keep serving.
    """

    def __init__(self, store: Store, limit: int) -> None:
        self.store = store
        self.limit = limit
        self.series = 0
        self.dropped = 0
        self._count: dict[str, int] = {}

    def put(self, key: str, rendered: Mapping[Family, str | bytes]) -> None:
        lines = sum(v.count("\n") if isinstance(v, str) else v.count(b"\n") for v in rendered.values())
        previous = self._count.get(key, 0)
        if self.series - previous + lines > self.limit:
            self.delete(key)
            self.dropped += lines
            return
        self.store.put(key, rendered)
        self.series += lines - previous
        self._count[key] = lines

    def delete(self, key: str) -> None:
        self.series -= self._count.pop(key, 0)
        self.store.delete(key)

    def __contains__(self, key: str) -> bool:
        return key in self.store
