"""A minimal Prometheus Pushgateway for the emulated cluster: PUT/POST/DELETE /metrics/job/<grouping>,
and the pushed samples at /metrics/pushgateway (each push replaces its group)."""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    groups: dict[str, list[str]] = {}

    async def push(request: web.Request) -> web.Response:
        if request.method == "DELETE":
            groups.pop(request.match_info["grouping"], None)
        else:
            text = await request.text()
            # Samples only: without HELP/TYPE lines the groups can be concatenated safely.
            groups[request.match_info["grouping"]] = [
                line for line in text.splitlines() if line.strip() and not line.startswith("#")
            ]
        return web.Response(status=200)

    async def scrape(_: web.Request) -> web.Response:
        return web.Response(text="".join(line + "\n" for lines in groups.values() for line in lines))

    for method in ("PUT", "POST", "DELETE"):
        app.router.add_route(method, "/metrics/job/{grouping:.*}", push)
    app.router.add_get("/metrics/pushgateway", scrape)
