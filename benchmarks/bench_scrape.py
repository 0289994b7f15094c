"""Scrape cost: 100k series from the pre-rendered store vs prometheus_client, in one run.

The store is filled through the real training source (10,000 jobs, 10 series each).
prometheus_client renders the same series from a custom collector, the way a
collect-on-scrape exporter would. Prints p50/p99 of each and the ratio against
the DESIGN §7 targets (p99 <= 50 ms, >= 20x faster). Not a test: no assertions.

    python benchmarks/bench_scrape.py [--jobs N] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from benchmarks.results import Figure
from exporter import catalogue
from exporter.emulator.scenario import v1_job
from exporter.health import HealthRegistry
from exporter.kube import offline_client
from exporter.server import make_app
from exporter.sources.training import V1_KINDS, TrainingSource
from exporter.store import Store
from exporter.watch import NamespaceScope, WatchSettings

STATES = ("running", "succeeded", "failed", "pending", "restarting")


def fill_store(jobs: int) -> tuple[Store, list[dict[str, Any]]]:
    store = Store(catalogue.FAMILIES)
    source = TrainingSource(
        store,
        HealthRegistry("cluster"),
        offline_client(),
        NamespaceScope(),
        WatchSettings(),
    )
    objects = []
    for i in range(jobs):
        state = STATES[i % len(STATES)]
        finished = 60.0 if state in ("succeeded", "failed") else None
        obj = v1_job(
            "PyTorchJob",
            f"team-{i % 50}",
            f"job-{i}",
            state,
            started=600,
            finished=finished,
            queue="default",
            replicas={"Worker": {"active": 2}},
        )
        obj["metadata"]["uid"] = f"uid-{i}"
        source.upsert_job(V1_KINDS[0], obj)
        objects.append(obj)
    return store, objects


class SameSeriesCollector(Collector):
    """What a collect-on-scrape exporter does: build every sample at scrape time."""

    def __init__(self, store_text: str) -> None:
        self.samples: dict[str, list[tuple[list[str], list[str], float]]] = {}
        for line in store_text.splitlines():
            if line.startswith("#"):
                continue
            head, value = line.rsplit(" ", 1)
            name, _, labels = head.partition("{")
            pairs = [p.split("=", 1) for p in labels.rstrip("}").split('",') if p]
            keys = [k for k, _ in pairs]
            values = [v.strip('"') for _, v in pairs]
            self.samples.setdefault(name, []).append((keys, values, float(value)))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, rows in self.samples.items():
            known = catalogue.BY_NAME.get(name)
            family = GaugeMetricFamily(name, known.help if known else name, labels=rows[0][0])
            for _, values, value in rows:
                family.add_metric(values, value)
            yield family


def timed(fn: Callable[[], Any], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def serve(jobs: int, conn: Connection) -> None:
    """The exporter's HTTP path in its own process, as in production."""

    async def run() -> None:
        store, _ = fill_store(jobs)
        runner = web.AppRunner(make_app(store, HealthRegistry("cluster")), handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        conn.send(runner.addresses[0][1])
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told to stop
        await runner.cleanup()

    asyncio.run(run())


async def http_scrapes(port: int, rounds: int, gzip_: bool) -> list[float]:
    url = f"http://127.0.0.1:{port}/metrics"
    headers = {"Accept-Encoding": "gzip" if gzip_ else "identity"}
    out = []
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for _ in range(3):  # warm-up: connection set-up, first allocations
            async with session.get(url, headers=headers) as resp:
                await resp.read()
        for _ in range(rounds):
            start = time.perf_counter()
            async with session.get(url, headers=headers) as resp:
                await resp.read()
            out.append(time.perf_counter() - start)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=8_065, help="12.4 series per job: ~100k series")
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    run(args.jobs, args.rounds)
    return 0


def run(jobs: int = 8_065, rounds: int = 100) -> list[Figure]:
    args = argparse.Namespace(jobs=jobs, rounds=rounds)
    store, _ = fill_store(args.jobs)
    series = store.series_count()
    text = b"".join(store.render()).decode()
    registry = CollectorRegistry()
    registry.register(SameSeriesCollector(text))
    client_lines = sum(1 for line in generate_latest(registry).decode().splitlines() if not line.startswith("#"))
    assert client_lines == series, (client_lines, series)  # the same series on both sides

    store_times = timed(lambda: b"".join(store.render()), args.rounds)
    client_times = timed(lambda: generate_latest(registry), max(5, args.rounds // 5))
    parent, child = multiprocessing.get_context("fork").Pipe()
    server = multiprocessing.get_context("fork").Process(target=serve, args=(args.jobs, child))
    server.start()
    port = parent.recv()
    plain = asyncio.run(http_scrapes(port, args.rounds, gzip_=False))
    zipped = asyncio.run(http_scrapes(port, args.rounds, gzip_=True))
    parent.send("stop")
    server.join(30)
    ratio = statistics.median(client_times) / statistics.median(store_times)
    body = b"".join(store.render())

    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}")
    print(
        f"series: {series:,} ({args.jobs:,} jobs); body {len(body) / 1e6:.1f} MB, "
        f"gzip {len(gzip.compress(body, 1)) / 1e6:.1f} MB"
    )
    rows = [
        ("store render+join", store_times),
        ("prometheus_client generate_latest", client_times),
        ("HTTP /metrics plain (separate process)", plain),
        ("HTTP /metrics gzip (separate process)", zipped),
    ]
    print(f"{'path':40} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'n':>4}")
    for name, values in rows:
        p50, p90, p99_ = (pct(values, q) * 1e3 for q in (0.5, 0.9, 0.99))
        print(f"{name:40} {p50:8.2f} {p90:8.2f} {p99_:8.2f} {len(values):4d}")
    p99 = pct(plain, 0.99) * 1e3
    verdict = "met" if ratio >= 20 else "NOT met"
    print(f"ratio prometheus_client / store (p50): {ratio:.1f}x  (target >= 20x: {verdict})")
    print(f"full HTTP scrape p99: {p99:.1f} ms  (target <= 50 ms: {'met' if p99 <= 50 else 'NOT met'})")
    return [
        Figure(f"full HTTP scrape of {series:,} series, plain", f"p50 {pct(plain, 0.5) * 1e3:.1f} ms, p99 {p99:.1f} ms",
               "p99 ≤ 50 ms", p99 <= 50),
        Figure("the same, gzip", f"p50 {pct(zipped, 0.5) * 1e3:.1f} ms, p99 {pct(zipped, 0.99) * 1e3:.1f} ms",
               "", None),
        Figure("prometheus_client rendering the same series / the store's render (p50)", f"{ratio:.0f}x", "≥ 20x",
               ratio >= 20),
    ]  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
