"""HTTP layer: /metrics (text 0.0.4 or OpenMetrics 1.0.0, optionally gzip), /healthz, /readyz.

The server only reads the store; it never talks to a source.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

from exporter.exposition import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE
from exporter.health import HealthRegistry
from exporter.store import Store

GZIP_MIN_BYTES = 4096


def wants_openmetrics(accept: str) -> bool:
    """Pick the format the client ranks highest; text 0.0.4 unless OpenMetrics wins."""
    best_q, best = -1.0, False
    for position, item in enumerate(accept.split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        q, version = 1.0, ""
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
            elif key.strip() == "version":
                version = value.strip()
        if media == "application/openmetrics-text" and version in ("", "1.0.0"):
            is_om = True
        elif media in ("text/plain", "*/*", "text/*"):
            is_om = False
        else:
            continue
        if q > best_q or (q == best_q and position == 0):
            best_q, best = q, is_om
    return best


def accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip() == "gzip":
            return "q=0" not in params.replace(" ", "") or "q=0." in params.replace(" ", "")
    return False


def _gzip(body: bytes) -> bytes:
    # Level 1: scrapes happen every few seconds; speed matters more than the last 10 %.
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    return compressor.compress(body) + compressor.flush()


def make_app(
    store: Store, registry: HealthRegistry, telemetry_path: str = "/metrics", middlewares: Sequence[Middleware] = ()
) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        openmetrics = wants_openmetrics(request.headers.get("Accept", ""))
        registry.refresh(store)
        chunks = store.render(openmetrics)  # synchronous: a consistent snapshot
        if openmetrics:
            chunks.append(b"# EOF\n")
        body = b"".join(chunks)
        headers = {"Content-Type": OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE}
        if len(body) >= GZIP_MIN_BYTES and accepts_gzip(request.headers.get("Accept-Encoding", "")):
            body = await asyncio.get_running_loop().run_in_executor(None, _gzip, body)
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        waiting = [s.name for s in registry.sources if not s.synced]
        if waiting:
            return web.Response(status=503, text=f"waiting for first sync of: {', '.join(waiting)}\n")
        return web.Response(text="ok\n")

    async def index(_: web.Request) -> web.Response:
        return web.Response(
            text=f"ml-workload-exporter\n{telemetry_path}  metrics\n/healthz  liveness\n/readyz   readiness\n"
        )

    app = web.Application(middlewares=list(middlewares))
    app.router.add_get(telemetry_path, metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/", index)
    return app
