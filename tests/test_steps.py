"""The records-processed helper pushes to a real HTTP server that speaks the Pushgateway API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from exporter.steps import publish_records_processed


@pytest.fixture
async def pushgateway() -> AsyncIterator[tuple[str, dict[str, str]]]:
    groups: dict[str, str] = {}

    async def put(request: web.Request) -> web.Response:
        groups[request.match_info["grouping"]] = await request.text()  # PUT replaces the group
        return web.Response(status=200)

    app = web.Application()
    app.router.add_put("/metrics/job/{grouping:.*}", put)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", groups
    await runner.cleanup()


async def test_push_replaces_the_steps_total(pushgateway: tuple[str, dict[str, str]]) -> None:
    url, groups = pushgateway
    loop = asyncio.get_running_loop()
    for total in (500, 1250):
        await loop.run_in_executor(
            None,
            lambda t=total: publish_records_processed(  # type: ignore[misc]
                t, run_id="run-0002", step="preprocess", gateway=url, namespace="team-a"
            ),
        )
    assert list(groups) == ["ml-pipeline-step/run_id/run-0002/step/preprocess"]
    (family,) = [
        f
        for f in text_string_to_metric_families(groups[next(iter(groups))])
        if f.name == "ml_pipeline_records_processed"
    ]
    sample = next(s for s in family.samples if s.name.endswith("_total"))
    assert sample.labels == {"namespace": "team-a", "run_id": "run-0002", "step": "preprocess"}
    assert sample.value == 1250


def test_bad_arguments_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ML_PIPELINE_PUSHGATEWAY", raising=False)
    with pytest.raises(ValueError, match="Pushgateway"):
        publish_records_processed(1, run_id="r", step="s")
    with pytest.raises(ValueError, match="negative"):
        publish_records_processed(-1, run_id="r", step="s", gateway="http://127.0.0.1:1")
