"""`python -m exporter.emulator`: run the emulated cluster until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
from pathlib import Path

from aiohttp import web

from exporter.emulator import gpunode, jupyter, kubelet, pushgateway, scenario, simulator
from exporter.emulator.apiserver import ApiServer, kubeconfig_for


async def serve(args: argparse.Namespace) -> None:
    objs = []
    if args.scenario in ("default", "training"):
        objs += scenario.training_scenario()[0]
    if args.scenario in ("default", "notebooks"):
        objs += scenario.notebooks_scenario()[0]
    if args.scenario in ("default", "pipelines"):
        objs += scenario.pipelines_scenario()[0]
    if args.scenario in ("default", "serving"):
        objs += scenario.serving_scenario()[0]
    if args.scenario in ("default", "platform"):
        objs += scenario.platform_scenario()[0]
    if args.objects:  # JSON lines {"kind": "<Kind>", "object": {...}} (the scale benchmarks' cluster)
        with open(args.objects, encoding="utf-8") as handle:
            objs += [(scenario.KINDS[entry["kind"]], entry["object"]) for entry in map(json.loads, handle)]
    kinds = {kind for kind, _ in objs} | set(scenario.KINDS.values())
    users = dict(item.split("=", 1) for item in args.user)
    api = ApiServer(kinds, token=args.token or None, bookmark_interval=args.bookmark_interval, users=users,
                    metrics_readers=set(args.metrics_reader))  # fmt: skip
    scenario.load(api, objs)
    if args.scale:
        simulator.add_scale(api, args.scale, random.Random(args.seed))
    app = api.app()
    kubelet.add_routes(app, api)
    jupyter.add_routes(app, api)
    pushgateway.add_routes(app)
    tasks = []
    if args.gpu_nodes_dir:
        # The demo's lifecycle puts GPU workers on the first two GPU nodes.
        later = tuple(scenario.GPU_NODES[:2]) if args.lifecycle else ()
        pattern = 30 * args.lifecycle  # GPUs follow utilisation waves in the demo, stay fixed in tests
        nodes = gpunode.GpuNodes(api, Path(args.gpu_nodes_dir), gpunode.agent_nodes(api, later), pattern)
        nodes.start()
        tasks.append(asyncio.create_task(nodes.run()))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://{args.host}:{port}"
    if args.kubeconfig_out:
        with open(args.kubeconfig_out, "w", encoding="utf-8") as handle:
            handle.write(kubeconfig_for(url, args.token or None))
    print(f"emulator listening on {url}", flush=True)
    if args.lifecycle:
        tasks.append(asyncio.create_task(simulator.run(api, args.lifecycle, args.seed)))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m exporter.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--scenario",
        choices=("default", "training", "notebooks", "pipelines", "serving", "platform", "empty"),
        default="default",
    )
    parser.add_argument("--kubeconfig-out", help="write a kubeconfig for the emulator here")
    parser.add_argument("--objects", help='also load these objects: JSON lines {"kind": ..., "object": ...}')
    parser.add_argument("--token", default="", help="require this bearer token")
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="TOKEN=NAME",
        help="TokenReview: this bearer token is this user (repeatable)",
    )
    parser.add_argument(
        "--metrics-reader",
        action="append",
        default=[],
        metavar="NAME",
        help="SubjectAccessReview: this user may get /metrics (repeatable)",
    )
    parser.add_argument("--lifecycle", type=float, default=0.0, help="seconds between simulator steps (0: off)")
    parser.add_argument("--scale", type=int, default=0, help="add 20 x SCALE training jobs and 10 x SCALE notebooks")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the simulator")
    parser.add_argument("--bookmark-interval", type=float, default=5.0)
    parser.add_argument(
        "--gpu-nodes-dir", help="simulate the GPU nodes here: <dir>/<node>/nvml.conf and kubelet.sock, <dir>/nodes"
    )
    asyncio.run(serve(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
