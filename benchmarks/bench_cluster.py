"""Scale of the cluster role on the synthetic cluster (benchmarks/synthetic.py), each in one run:

- resident memory per tracked object (RSS delta and tracemalloc), in a fresh process;
- watch-event ingestion on one core (JSON line -> parsed -> rendered into the store);
- event -> visible in the store, p99, through the emulator's real HTTP watch;
- cold start: an exporter process listing everything through the emulator until /readyz;
- full scrape p50/p99, plain and gzip, while events keep arriving, against prometheus_client
  rendering the same series in the same run.

Prints the figures and returns them to benchmarks/run.py, which writes RESULTS.md. Not a test.

    python -m benchmarks.bench_cluster [--factor 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from benchmarks import synthetic
from benchmarks.bench_scrape import SameSeriesCollector, http_scrapes, pct
from benchmarks.results import Figure
from exporter import catalogue, config
from exporter.cli import cluster_sources
from exporter.emulator.apiserver import ApiServer, kubeconfig_for
from exporter.emulator.scenario import KINDS
from exporter.emulator.selectors import parse_selectors
from exporter.health import HealthRegistry
from exporter.kube import KubeClient, ResourceKind, load_configuration, offline_client
from exporter.pack import local
from exporter.pack.gpu_check import resident_bytes
from exporter.server import make_app
from exporter.sources import WatchSource
from exporter.store import Store
from exporter.watch import NamespaceScope, Reflector, WatchSettings


def sources(store: Store, client: KubeClient | None = None) -> list[WatchSource]:
    options = config.load(["--limits.series-per-source", "0"], environ={})  # the benchmark counts every series
    return cluster_sources(store, HealthRegistry("cluster"), client or offline_client(), NamespaceScope(),
                           WatchSettings(), options)  # fmt: skip


def routes(srcs: list[WatchSource]) -> dict[ResourceKind, list[tuple[Reflector, Callable[[dict[str, Any]], bool]]]]:
    """Which reflectors would receive an object: the kind, and the reflector's selectors."""
    out: dict[ResourceKind, list[tuple[Reflector, Callable[[dict[str, Any]], bool]]]] = {}
    for source in srcs:
        for r in source.reflectors:
            out.setdefault(r.kind, []).append((r, parse_selectors(r.label_selector or "", r.field_selector or "")))
    return out


def ingest(table: dict[ResourceKind, list[tuple[Reflector, Callable[[dict[str, Any]], bool]]]],
           kind: ResourceKind, obj: dict[str, Any]) -> int:  # fmt: skip
    applied = 0
    for reflector, selects in table.get(kind, []):
        if selects(obj):
            reflector._apply(obj)
            applied += 1
    return applied


def rss() -> int:
    return resident_bytes(os.getpid())


def write_objects(objs: synthetic.Objects, path: Path) -> None:
    """The emulator's --objects file: JSON lines {"kind": ..., "object": ...}."""
    with path.open("wb") as handle:
        for kind, obj in objs:
            handle.write(orjson.dumps({"kind": kind.kind, "object": obj}) + b"\n")


def _memory(dump: Path, trace: bool, conn: Connection) -> None:
    # The lines are what list responses carry, parsed one by one. The process never built the
    # synthetic objects, so no freed heap of theirs is there to be reused and hide the store's growth.
    raw = dump.read_bytes().splitlines()
    store = Store(catalogue.FAMILIES)
    table = routes(sources(store))
    gc.collect()
    before = rss()
    if trace:
        tracemalloc.start()
    tracked = 0
    for line in raw:
        entry = orjson.loads(line)
        tracked += bool(ingest(table, KINDS[entry["kind"]], entry["object"]))
    gc.collect()
    conn.send((tracked, tracemalloc.get_traced_memory()[0] if trace else rss() - before, store.series_count()))


def _in_fresh_process(dump: Path, trace: bool) -> tuple[int, int, int]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    proc = context.Process(target=_memory, args=(dump, trace, child))
    proc.start()
    answer: tuple[int, int, int] = parent.recv()
    proc.join(60)
    return answer


def memory_per_object(factor: float) -> list[Figure]:
    # RSS and tracemalloc in separate processes: tracemalloc's own bookkeeping (a trace per live
    # block) would otherwise count as the exporter's resident memory.
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "objects.jsonl"
        write_objects(synthetic.cluster(factor), dump)
        tracked, rss_delta, series = _in_fresh_process(dump, trace=False)
        _, traced, _ = _in_fresh_process(dump, trace=True)
    print(f"memory: {tracked:,} objects tracked, {series:,} series; RSS +{rss_delta / 2**20:.1f} MiB "
          f"({rss_delta / tracked:,.0f} B/object), "
          f"tracemalloc {traced / 2**20:.1f} MiB ({traced / tracked:,.0f} B/object)")  # fmt: skip
    per_object = rss_delta / tracked
    return [
        Figure("resident memory per tracked object (RSS delta)", f"{per_object / 1024:.2f} KiB", "≤ 4 KiB",
               per_object <= 4096),
        Figure("Python heap per tracked object (tracemalloc)", f"{traced / tracked / 1024:.2f} KiB", "≤ 4 KiB",
               traced / tracked <= 4096),
        Figure("objects tracked / series rendered", f"{tracked:,} / {series:,}", "", None),
    ]  # fmt: skip


def ingestion_rate(factor: float) -> list[Figure]:
    """MODIFIED events as the watch stream carries them (one JSON line each), on one core."""
    objs = synthetic.cluster(factor)
    store = Store(catalogue.FAMILIES)
    table = routes(sources(store))
    for kind, obj in objs:
        ingest(table, kind, obj)
    rng = random.Random(3)
    events = []
    for _ in range(20_000):
        kind, obj = rng.choice(objs)
        obj = dict(obj, metadata={**obj["metadata"], "resourceVersion": str(rng.randint(2, 10**9))})
        events.append((kind, orjson.dumps({"type": "MODIFIED", "object": obj})))
    start = time.process_time()
    for kind, line in events:
        ingest(table, kind, orjson.loads(line)["object"])
    seconds = time.process_time() - start
    rate = len(events) / seconds
    print(f"ingestion: {len(events):,} watch events in {seconds:.2f} s of CPU: {rate:,.0f} events/s")
    return [Figure("watch-event ingestion on one core", f"{rate:,.0f} events/s", "≥ 5,000 events/s", rate >= 5000)]


async def _visible_latency(objs: synthetic.Objects, events: int) -> list[float]:
    api = ApiServer({k for k, _ in objs}, bookmark_interval=1)
    for kind, obj in objs:
        api.apply(kind, obj)
    runner = web.AppRunner(api.app(), handle_signals=False)
    await runner.setup()
    port = local.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as kc:
        kc.write(kubeconfig_for(f"http://127.0.0.1:{port}", None))
    client = KubeClient(load_configuration(kc.name))
    store = Store(catalogue.FAMILIES)
    srcs = sources(store, client)
    seen: dict[str, float] = {}
    training = next(s for s in srcs if s.name == "training")
    job_reflector = next(r for r in training.reflectors if r.kind.kind == "PyTorchJob")
    original = job_reflector.handler.upsert

    def upsert(obj: dict[str, Any]) -> None:
        original(obj)
        seen[obj["metadata"].get("annotations", {}).get("bench/seq", "")] = time.perf_counter()

    job_reflector.handler.upsert = upsert  # type: ignore[method-assign]
    tasks = [asyncio.create_task(job_reflector.run())]
    await job_reflector.synced.wait()
    job_kind = job_reflector.kind
    jobs = [o for k, o in objs if k == job_kind]
    sent: dict[str, float] = {}
    for seq in range(events):
        obj = json.loads(json.dumps(jobs[seq % len(jobs)]))
        obj["metadata"].setdefault("annotations", {})["bench/seq"] = str(seq)
        sent[str(seq)] = time.perf_counter()
        api.apply(job_kind, obj)
        await asyncio.sleep(0.005)
    for _ in range(200):
        if len(seen) >= events:
            break
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await client.close()
    await runner.cleanup()
    os.unlink(kc.name)
    return [seen[k] - sent[k] for k in sent if k in seen]


def event_to_visible(factor: float) -> list[Figure]:
    objs = synthetic.cluster(factor)
    latencies = asyncio.run(_visible_latency(objs, 500))
    p50, p99 = pct(latencies, 0.5), pct(latencies, 0.99)
    print(f"event -> visible: {len(latencies)} events over the emulator's HTTP watch: p50 {p50 * 1e3:.1f} ms, "
          f"p99 {p99 * 1e3:.1f} ms")  # fmt: skip
    return [Figure("event → visible in /metrics", f"p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms", "p99 < 1 s",
                   p99 < 1.0)]  # fmt: skip


def cold_start(factor: float) -> list[Figure]:
    """An exporter process against the emulator holding the synthetic cluster: start until /readyz."""
    objs = synthetic.cluster(factor)
    pods = sum(1 for k, _ in objs if k.kind == "Pod")
    jobs = sum(1 for k, _ in objs if k.kind == "PyTorchJob")
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "objects.jsonl"
        write_objects(objs, dump)
        with local.emulator(Path(tmp), "--scenario", "empty", "--objects", str(dump)) as (_, kubeconfig, _):
            port = local.free_port()
            args = [sys.executable, "-m", "exporter", "--kubeconfig", str(kubeconfig), "--web.listen-address",
                    f"127.0.0.1:{port}"]  # fmt: skip
            started = time.monotonic()
            with local.process(args, Path(tmp) / "exporter.log") as proc:
                local.wait_for(f"http://127.0.0.1:{port}/readyz", timeout=120, proc=proc)
                seconds = time.monotonic() - started
    print(
        f"cold start: {pods:,} pods + {jobs:,} jobs (+ notebooks, runs, services) listed until /readyz "
        f"in {seconds:.2f} s"
    )
    return [Figure(f"cold start, {pods:,} pods + {jobs:,} jobs and the rest listed", f"{seconds:.2f} s to /readyz",
                   "< 10 s", seconds < 10)]  # fmt: skip


def _serve_with_events(factor: float, rate: float, conn: Connection) -> None:
    """The exporter's HTTP path in its own process, with events applied at `rate` per second."""

    async def run() -> None:
        objs = synthetic.cluster(factor)
        store = Store(catalogue.FAMILIES)
        table = routes(sources(store))
        for kind, obj in objs:
            ingest(table, kind, obj)
        runner = web.AppRunner(make_app(store, HealthRegistry("cluster")), handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        applied = 0

        async def events() -> None:
            nonlocal applied
            rng = random.Random(5)
            while True:
                for _ in range(int(rate / 20)):
                    kind, obj = rng.choice(objs)
                    ingest(table, kind, orjson.loads(orjson.dumps(obj)))
                    applied += 1
                await asyncio.sleep(0.05)

        ticker = asyncio.create_task(events())
        conn.send((runner.addresses[0][1], store.series_count(), b"".join(store.render()).decode()))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        ticker.cancel()
        conn.send(applied)
        await runner.cleanup()

    asyncio.run(run())


def scrape_under_events(factor: float, rounds: int = 60, rate: float = 500) -> list[Figure]:
    parent, child = multiprocessing.get_context("fork").Pipe()
    proc = multiprocessing.get_context("fork").Process(target=_serve_with_events, args=(factor, rate, child))
    proc.start()
    port, series, text = parent.recv()
    started = time.monotonic()
    plain = asyncio.run(http_scrapes(port, rounds, gzip_=False))
    zipped = asyncio.run(http_scrapes(port, rounds, gzip_=True))
    elapsed = time.monotonic() - started
    parent.send("stop")
    applied = parent.recv()
    proc.join(30)
    registry = CollectorRegistry()
    registry.register(SameSeriesCollector(text))
    client = [_timed(lambda: generate_latest(registry)) for _ in range(5)]
    ratio = statistics.median(client) / pct(plain, 0.5)
    print(f"scrape of {series:,} series while {applied / elapsed:,.0f} events/s arrive: plain p50 "
          f"{pct(plain, 0.5) * 1e3:.1f} ms p99 {pct(plain, 0.99) * 1e3:.1f} ms; gzip p50 {pct(zipped, 0.5) * 1e3:.1f} "
          f"ms p99 {pct(zipped, 0.99) * 1e3:.1f} ms; prometheus_client {statistics.median(client) * 1e3:.0f} ms "
          f"({ratio:.0f}x the plain scrape)")  # fmt: skip
    p99 = pct(plain, 0.99)
    return [
        # §7's 50 ms is for 100k series; this cluster renders several times that.
        Figure(f"full scrape, {series:,} series, {applied / elapsed:,.0f} events/s arriving, plain",
               f"p50 {pct(plain, 0.5) * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms "
               f"({p99 * 1e3 * 100_000 / series:.1f} ms per 100k series)", "p99 ≤ 50 ms per 100k series",
               p99 * 100_000 / series <= 0.05),
        Figure("the same, gzip", f"p50 {pct(zipped, 0.5) * 1e3:.1f} ms, p99 {pct(zipped, 0.99) * 1e3:.1f} ms",
               "", None),
        Figure("prometheus_client rendering the same series / the plain HTTP scrape (p50)", f"{ratio:.0f}x", "≥ 20x",
               ratio >= 20),
    ]  # fmt: skip


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(factor: float = 1.0) -> list[Figure]:
    figures = []
    for bench in (memory_per_object, ingestion_rate, event_to_visible, cold_start, scrape_under_events):
        figures += bench(factor)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factor", type=float, default=1.0, help="scale of the synthetic cluster (1.0: full)")
    args = parser.parse_args()
    for figure in run(args.factor):
        print(figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
