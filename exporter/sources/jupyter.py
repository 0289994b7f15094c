"""Optional Jupyter activity probe: what the notebook culler asks, asked by the exporter.

For each running notebook it polls `<base>/api/kernels` and `<base>/api/terminals`
(the Jupyter Server REST API the Kubeflow culler uses), with bounded concurrency,
a timeout per request and exponential backoff per notebook, so idle time is
known even when culling is disabled. A busy kernel counts as activity now, as in
the culler. Failures are counted by reason; a failing notebook reports
`ml_notebook_probe_up 0` and no kernel counts (never stale ones).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from exporter import catalogue as c
from exporter.config import Config
from exporter.exposition import Family
from exporter.sources import parse_time
from exporter.store import SeriesLimit, Store

log = logging.getLogger(__name__)

EXECUTION_STATES = ("idle", "busy", "starting", "other")
MAX_BACKOFF_INTERVALS = 32  # a failing notebook is retried at most every 32 intervals


@dataclass
class Target:
    namespace: str
    name: str
    next_due: float = 0.0
    failures: int = 0
    in_flight: bool = False
    last_activity: float | None = None


class ProbeFailure(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ActivityProbe:
    def __init__(self, store: Store | SeriesLimit, options: Config) -> None:
        self.store = store
        self.url_template = options.notebooks_probe_url
        self.interval = options.notebooks_probe_interval
        self.timeout = options.notebooks_probe_timeout
        self.semaphore = asyncio.Semaphore(options.notebooks_probe_concurrency)
        self.targets: dict[str, Target] = {}
        self.results: Counter[str] = Counter()

    def track(self, uid: str, namespace: str, name: str, running: bool) -> None:
        if not running:
            self.forget(uid)
        elif uid not in self.targets:
            self.targets[uid] = Target(namespace, name)

    def forget(self, uid: str) -> None:
        if self.targets.pop(uid, None) is not None:
            self.store.delete(f"notebooks/probe/{uid}")

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                now = time.time()
                for uid, target in list(self.targets.items()):
                    if not target.in_flight and target.next_due <= now:
                        target.in_flight = True
                        task = asyncio.create_task(self._probe(session, uid, target))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                await asyncio.sleep(min(1.0, self.interval / 4))

    async def _probe(self, session: aiohttp.ClientSession, uid: str, target: Target) -> None:
        base = self.url_template.format(name=target.name, namespace=target.namespace)
        try:
            async with self.semaphore:
                kernels = await self._get(session, base + "/api/kernels", required=True)
                terminals = await self._get(session, base + "/api/terminals", required=False)
            self._record_success(uid, target, kernels, terminals)
            result = "ok"
        except ProbeFailure as exc:
            result = exc.reason
            self._record_failure(uid, target)
        finally:
            target.in_flight = False
        self.results[result] += 1
        self._render_results()

    async def _get(self, session: aiohttp.ClientSession, url: str, required: bool) -> list[dict[str, Any]]:
        try:
            async with session.get(url, headers={"Accept": "application/json"}) as resp:
                if resp.status == 404 and not required:
                    return []  # terminals disabled
                if resp.status != 200:
                    raise ProbeFailure(f"http_{resp.status}")
                body = orjson.loads(await resp.read())
        except TimeoutError:
            raise ProbeFailure("timeout") from None
        except aiohttp.ClientError:
            raise ProbeFailure("connection") from None
        except orjson.JSONDecodeError:
            raise ProbeFailure("invalid") from None
        if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
            raise ProbeFailure("invalid")
        return body

    def _record_success(self, uid: str, target: Target, kernels: list[dict[str, Any]],
                        terminals: list[dict[str, Any]]) -> None:  # fmt: skip
        if uid not in self.targets:
            return  # stopped while we asked
        now = time.time()
        states = Counter(
            k.get("execution_state") if k.get("execution_state") in EXECUTION_STATES[:3] else "other" for k in kernels
        )
        seen = [parse_time(item.get("last_activity")) for item in (*kernels, *terminals)]
        activity = max((t for t in seen if t is not None), default=None)
        if states["busy"]:
            activity = now
        if activity is not None:
            target.last_activity = max(activity, target.last_activity or 0.0)
        nb = (target.namespace, target.name)
        lines: dict[Family, str] = {
            c.NOTEBOOK_KERNELS: "".join(c.NOTEBOOK_KERNELS.sample((*nb, s), states[s]) for s in EXECUTION_STATES),
            c.NOTEBOOK_TERMINALS: c.NOTEBOOK_TERMINALS.sample(nb, len(terminals)),
            c.NOTEBOOK_PROBE_UP: c.NOTEBOOK_PROBE_UP.sample(nb, 1),
        }
        if target.last_activity is not None:
            lines[c.NOTEBOOK_PROBE_ACTIVITY] = c.NOTEBOOK_PROBE_ACTIVITY.sample(nb, target.last_activity)
        self.store.put(f"notebooks/probe/{uid}", lines)
        target.failures = 0
        target.next_due = now + self.interval

    def _record_failure(self, uid: str, target: Target) -> None:
        if uid not in self.targets:
            return
        nb = (target.namespace, target.name)
        lines = {c.NOTEBOOK_PROBE_UP: c.NOTEBOOK_PROBE_UP.sample(nb, 0)}
        if target.last_activity is not None:  # a past observation stays true
            lines[c.NOTEBOOK_PROBE_ACTIVITY] = c.NOTEBOOK_PROBE_ACTIVITY.sample(nb, target.last_activity)
        self.store.put(f"notebooks/probe/{uid}", lines)
        target.failures += 1
        target.next_due = time.time() + self.interval * min(2**target.failures, MAX_BACKOFF_INTERVALS)

    def _render_results(self) -> None:
        family = c.NOTEBOOK_PROBES
        self.store.put(
            "notebooks/probe-results",
            {family: "".join(family.sample((r,), n) for r, n in sorted(self.results.items()))},
        )
