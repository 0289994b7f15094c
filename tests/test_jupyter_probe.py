"""The notebook activity probe against a real HTTP server that answers like Jupyter."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from exporter import catalogue, config
from exporter.emulator.apiserver import now_rfc3339
from exporter.sources.jupyter import ActivityProbe
from exporter.store import Store
from tests.conftest import until

HOUR = 3600.0


def jupyter_app(hits: Counter[str]) -> web.Application:
    """Notebooks: busy, idle, terms (terminals only), denied (403), slow (times out), broken (not JSON)."""

    async def kernels(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        hits[name] += 1
        if name == "denied":
            raise web.HTTPForbidden()
        if name == "slow":
            await asyncio.sleep(5)
        if name == "broken":
            return web.Response(text="<html>proxy error</html>")
        body = {
            "busy": [
                {"id": "a", "execution_state": "busy", "last_activity": now_rfc3339(-HOUR)},
                {"id": "b", "execution_state": "idle", "last_activity": now_rfc3339(-2 * HOUR)},
            ],
            "idle": [
                {"id": "a", "execution_state": "idle", "last_activity": now_rfc3339(-5 * HOUR)},
                {"id": "b", "execution_state": "idle", "last_activity": now_rfc3339(-3 * HOUR)},
                {"id": "c", "execution_state": "dead", "last_activity": "garbage"},
            ],
            "terms": [],
        }[name]
        return web.json_response(body)

    async def terminals(request: web.Request) -> web.Response:
        if request.match_info["name"] == "terms":
            return web.json_response([{"name": "1", "last_activity": now_rfc3339(-HOUR / 2)}])
        if request.match_info["name"] == "idle":
            raise web.HTTPNotFound()  # terminals disabled on this server
        return web.json_response([])

    app = web.Application()
    app.router.add_get("/notebook/{namespace}/{name}/api/kernels", kernels)
    app.router.add_get("/notebook/{namespace}/{name}/api/terminals", terminals)
    return app


@pytest.fixture
async def jupyter() -> AsyncIterator[tuple[str, Counter[str]]]:
    hits: Counter[str] = Counter()
    runner = web.AppRunner(jupyter_app(hits), handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", hits
    await runner.cleanup()


def series(store: Store) -> dict[str, float]:
    out = {}
    for line in b"".join(store.render()).decode().splitlines():
        if not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


async def test_probe_reads_activity_and_survives_failures(jupyter: tuple[str, Counter[str]]) -> None:
    url, hits = jupyter
    options = config.load(
        [
            "--notebooks.probe",
            "true",
            "--notebooks.probe-url",
            url + "/notebook/{namespace}/{name}",
            "--notebooks.probe-interval",
            "1",
            "--notebooks.probe-timeout",
            "0.3",
            "--notebooks.probe-concurrency",
            "2",
        ],
        environ={},
    )
    store = Store(catalogue.FAMILIES)
    probe = ActivityProbe(store, options)
    for uid in ("busy", "idle", "terms", "denied", "slow", "broken"):
        probe.track(uid, "team-a", uid, running=True)
    probe.track("stopped", "team-a", "stopped", running=False)
    task = asyncio.create_task(probe.run())
    try:
        await until(
            lambda: probe.results["ok"] >= 6 and probe.results["timeout"] >= 1,
            timeout=15,
            what="probes of every notebook",
        )
        s = series(store)
        now = time.time()

        def get(family: str, name: str, extra: str = "") -> float:
            return s[f'{family}{{namespace="team-a",notebook="{name}"{extra}}}']

        # A busy kernel is activity now, as in the culler.
        assert now - get("ml_notebook_probe_last_activity_timestamp_seconds", "busy") < 5
        assert get("ml_notebook_kernels", "busy", ',execution_state="busy"') == 1
        # Idle kernels: the latest kernel activity; unknown states count as "other".
        assert now - get("ml_notebook_probe_last_activity_timestamp_seconds", "idle") == pytest.approx(3 * HOUR, abs=5)
        assert get("ml_notebook_kernels", "idle", ',execution_state="idle"') == 2
        assert get("ml_notebook_kernels", "idle", ',execution_state="other"') == 1
        # Terminals only.
        assert now - get("ml_notebook_probe_last_activity_timestamp_seconds", "terms") == pytest.approx(HOUR / 2, abs=5)
        assert get("ml_notebook_terminals", "terms") == 1
        # Failures: down, no (stale) kernel counts, counted by reason.
        for name in ("denied", "slow", "broken"):
            assert get("ml_notebook_probe_up", name) == 0
            assert not any(k.startswith(f'ml_notebook_kernels{{namespace="team-a",notebook="{name}"') for k in s)
        assert probe.results["http_403"] >= 1 and probe.results["invalid"] >= 1
        assert 'ml_exporter_notebook_probes_total{result="http_403"}' in s
        assert "stopped" not in hits

        # Backoff: a failing notebook is asked far less often than a healthy one.
        await asyncio.sleep(3.5)
        assert hits["busy"] >= 4
        assert hits["denied"] <= hits["busy"] / 2

        # A notebook that stops is forgotten with its series.
        probe.track("busy", "team-a", "busy", running=False)
        assert not any('notebook="busy"' in k for k in series(store))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
