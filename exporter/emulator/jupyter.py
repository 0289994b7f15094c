"""Simulated Jupyter servers for the emulated notebooks (`/notebook/<ns>/<name>/api/...`).

Kernels and terminals come from the Notebook's `sim.ml-observability.io/kernels`
and `.../terminals` annotations (execution state, last_activity). A
notebook that is not running answers 503, as its Service would have no endpoint.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from exporter.emulator.apiserver import ApiServer
from exporter.emulator.scenario import NOTEBOOK_KIND, SIM


def _notebook(api: ApiServer, request: web.Request) -> dict[str, Any]:
    obj = api.get(NOTEBOOK_KIND, request.match_info["namespace"], request.match_info["name"])
    if obj is None or not (obj.get("status") or {}).get("readyReplicas"):
        raise web.HTTPServiceUnavailable(text="no endpoints available for service")
    return obj


def add_routes(app: web.Application, api: ApiServer) -> None:
    async def kernels(request: web.Request) -> web.Response:
        notes = _notebook(api, request)["metadata"].get("annotations", {})
        items = json.loads(notes.get(SIM + "kernels", "[]"))
        body = [{"id": f"k{i}", "name": "python3", "execution_state": k["state"], "connections": 1,
                 "last_activity": k["last_activity"]} for i, k in enumerate(items)]  # fmt: skip
        return web.json_response(body)

    async def terminals(request: web.Request) -> web.Response:
        notes = _notebook(api, request)["metadata"].get("annotations", {})
        items = json.loads(notes.get(SIM + "terminals", "[]"))
        return web.json_response([{"name": str(i + 1), **t} for i, t in enumerate(items)])

    app.router.add_get("/notebook/{namespace}/{name}/api/kernels", kernels)
    app.router.add_get("/notebook/{namespace}/{name}/api/terminals", terminals)
