"""Store and /metrics: exposition formats, negotiation, gzip, consistency under concurrent scrapes."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter import catalogue
from exporter.exposition import Family, escape_label_value, format_value
from exporter.health import HealthRegistry
from exporter.pack import promtool
from exporter.server import accepts_gzip, make_app, wants_openmetrics
from exporter.sources.training import STATUSES
from exporter.store import Store

STATUS = catalogue.TRAINING_JOB_STATUS
INFO = catalogue.TRAINING_JOB_INFO


def put_job(store: Store, uid: str, name: str, state: str = "running", queue: str = "") -> None:
    job = ("ns", name, "PyTorchJob")
    store.put(
        uid,
        {
            INFO: INFO.sample((*job, queue), 1),
            STATUS: "".join(STATUS.sample((*job, s), 1 if s == state else 0) for s in STATUSES),
        },
    )


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain", "plain"),
        ('a"b', 'a\\"b'),
        ("a\\b", "a\\\\b"),
        ("line\nbreak", "line\\nbreak"),
        ("ünï", "ünï"),
    ],
)
def test_label_escaping(raw: str, escaped: str) -> None:
    assert escape_label_value(raw) == escaped


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1, "1"),
        (0.5, "0.5"),
        (1.7e9, "1700000000"),
        (float("nan"), "NaN"),
        (float("inf"), "+Inf"),
        (-2.25, "-2.25"),
    ],
)
def test_value_format(value: float, text: str) -> None:
    assert format_value(value) == text


def test_family_rejects_reserved_labels_and_bad_counters() -> None:
    with pytest.raises(ValueError, match="reserved"):
        Family("x", "gauge", "h", ("job",))
    with pytest.raises(ValueError, match="_total"):
        Family("x_count", "counter", "h", ())


def test_headers_once_per_family_and_only_with_series(store: Store) -> None:
    put_job(store, "a", "j1")
    put_job(store, "b", "j2")
    text = b"".join(store.render()).decode()
    assert text.count("# TYPE ml_training_job_status gauge") == 1
    assert "ml_training_job_start_timestamp_seconds" not in text
    store.delete("a")
    store.delete("b")
    assert store.render() == []


def test_put_replaces_families_of_an_object(store: Store) -> None:
    put_job(store, "a", "j1")
    store.put("a", {INFO: INFO.sample(("ns", "j1", "PyTorchJob", ""), 1)})
    assert "ml_training_job_status" not in b"".join(store.render()).decode()
    assert len(store) == 1 and store.series_count() == 1


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        ("", False),
        ("text/plain;version=0.0.4", False),
        (
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
            "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            True,
        ),
        ("text/plain;q=0.9,application/openmetrics-text;q=0.5", False),
        ("application/openmetrics-text;version=2.0.0", False),
        ("*/*", False),
    ],
)
def test_content_negotiation(accept: str, openmetrics: bool) -> None:
    assert wants_openmetrics(accept) is openmetrics


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("gzip", True),
        ("gzip, deflate", True),
        ("identity", False),
        ("gzip;q=0", False),
        ("br, gzip;q=0.5", True),
        ("", False),
    ],
)
def test_gzip_negotiation(header: str, ok: bool) -> None:
    assert accepts_gzip(header) is ok


@pytest.fixture
async def server(store: Store, registry: HealthRegistry) -> AsyncIterator[str]:
    runner = web.AppRunner(make_app(store, registry, "/metrics"), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_both_formats_parse_with_real_parsers(server: str, store: Store, registry: HealthRegistry) -> None:
    health = registry.source("training").resource("pytorchjobs.kubeflow.org")
    health.events["ADDED"] = 3
    for i in range(50):
        put_job(store, f"u{i}", f"job-{i}", queue='q"1')
    async with aiohttp.ClientSession() as session:
        async with session.get(server + "/metrics") as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await resp.text()
        om_accept = {"Accept": "application/openmetrics-text;version=1.0.0"}
        async with session.get(server + "/metrics", headers=om_accept) as resp:
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
            om = await resp.text()
    families = {f.name: f for f in parse_text(text)}
    assert len(families["ml_training_job_status"].samples) == 50 * len(STATUSES)
    assert families["ml_training_job_info"].samples[0].labels["queue"] == 'q"1'
    assert "# TYPE ml_exporter_watch_events_total counter" in text
    assert om.endswith("# EOF\n") and "# TYPE ml_exporter_watch_events counter" in om
    om_families = {f.name: f for f in parse_openmetrics(om)}  # type: ignore[no-untyped-call]
    assert om_families["ml_exporter_watch_events"].samples[0].value == 3
    assert "process_cpu_seconds" in om_families
    lint = promtool.check_metrics(text)
    assert lint.ok, lint


async def test_gzip_body(server: str, store: Store) -> None:
    for i in range(200):
        put_job(store, f"u{i}", f"job-{i}")
    headers = {"Accept-Encoding": "gzip"}
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(server + "/metrics", headers=headers) as resp,
    ):
        assert resp.headers["Content-Encoding"] == "gzip"
        body = gzip.decompress(await resp.read()).decode()
    assert body.count("ml_training_job_info{") == 200


async def test_scrapes_during_updates_see_whole_objects(server: str, store: Store) -> None:
    """Each object's state-set is all there or not there, in every scrape."""
    stop = asyncio.Event()

    async def churn() -> None:
        n = 0
        while not stop.is_set():
            for i in range(100):
                put_job(store, f"u{i}", f"job-{i}", STATUSES[(n + i) % len(STATUSES)])
            for i in range(0, 100, 3):
                store.delete(f"u{i}")
            n += 1
            await asyncio.sleep(0.001)  # yield to the server and the client between batches

    task = asyncio.create_task(churn())
    async with aiohttp.ClientSession() as session:
        for _ in range(30):
            async with session.get(server + "/metrics") as resp:
                text = await resp.text()
            status_lines = [line for line in text.splitlines() if line.startswith("ml_training_job_status{")]
            info_lines = [line for line in text.splitlines() if line.startswith("ml_training_job_info{")]
            assert len(status_lines) == len(STATUSES) * len(info_lines)
            assert sum(line.endswith(" 1") for line in status_lines) == len(info_lines)
    stop.set()
    await task


async def test_health_endpoints(server: str, registry: HealthRegistry) -> None:
    resource = registry.source("training").resource("x")
    async with aiohttp.ClientSession() as session:
        async with session.get(server + "/readyz") as resp:
            assert resp.status == 503
        resource.synced = True
        async with session.get(server + "/readyz") as resp:
            assert resp.status == 200
        async with session.get(server + "/healthz") as resp:
            assert resp.status == 200
