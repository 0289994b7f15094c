"""Command line entry point: `ml-workload-exporter` / `python -m exporter`."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from aiohttp import web

from exporter import __version__, catalogue, config
from exporter.health import HealthRegistry
from exporter.kube import KubeAccess, KubeClient, KubeConfigError, load_configuration
from exporter.server import make_app
from exporter.sources import WatchSource
from exporter.sources.notebooks import NotebookSource
from exporter.sources.nvml import GpuSource
from exporter.sources.pipelines import PipelineSource
from exporter.sources.platform import PlatformSource
from exporter.sources.podresources import PodResourcesSource
from exporter.sources.serving import ServingSource
from exporter.sources.training import TrainingSource
from exporter.store import Store
from exporter.watch import NAMESPACES, NamespaceScope, Reflector, WatchSettings
from exporter.websecurity import KubernetesAuth, ReloadingCertificate

log = logging.getLogger("exporter")

SOURCES: dict[str, type[WatchSource]] = {
    "training": TrainingSource,
    "notebooks": NotebookSource,
    "pipelines": PipelineSource,
    "serving": ServingSource,
    "platform": PlatformSource,
}


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if "--version" in argv:
        print(f"ml-workload-exporter {__version__}")
        return 0
    if argv[:1] == ["demo"]:
        from exporter import demo

        return demo.main(list(argv[1:]))
    try:
        cfg = config.load(argv)
    except config.ConfigError as exc:
        for problem in exc.problems:
            print(f"ml-workload-exporter: configuration error: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=cfg.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if cfg.role == "node":
        node_access = None
        if cfg.web_auth == "kubernetes":  # the node role calls the API only to review scrapes' tokens
            try:
                node_access = load_configuration(cfg.kubeconfig, cfg.kube_context)
            except KubeConfigError as exc:
                print(f"ml-workload-exporter: {exc}", file=sys.stderr)
                return 2
        return _serve(run_node(cfg, node_name(cfg), node_access))
    try:
        kube_access = load_configuration(cfg.kubeconfig, cfg.kube_context)
    except KubeConfigError as exc:
        print(f"ml-workload-exporter: {exc}", file=sys.stderr)
        return 2
    return _serve(run_cluster(cfg, kube_access))


def _serve(job: Coroutine[Any, Any, None]) -> int:
    try:
        asyncio.run(job)
    except OSError as exc:  # e.g. the listen address is taken
        print(f"ml-workload-exporter: {exc}", file=sys.stderr)
        return 1
    return 0


def node_name(cfg: config.Config) -> str:
    """--node-name, else NODE_NAME (the DaemonSet sets it from spec.nodeName), else the host name."""
    name = cfg.node_name or os.environ.get("NODE_NAME")
    if not name:
        name = socket.gethostname()
        log.warning("neither --node-name nor NODE_NAME is set; using the host name %r as the node name", name)
    return name


async def run_node(cfg: config.Config, node: str, access: KubeAccess | None = None) -> None:
    """The node role: GPUs through NVML and their pods through PodResources; the Kubernetes API
    only with --web.auth=kubernetes, to review the scrapes' tokens."""
    store = Store(catalogue.FAMILIES)
    registry = HealthRegistry(cfg.role)
    gpus = GpuSource(store, registry, cfg, node)
    allocations = PodResourcesSource(store, registry, cfg, node)
    client = KubeClient(access) if access is not None else None
    try:
        await _run(cfg, store, registry, [gpus.run(), allocations.run()], f"node {node}", client)
    finally:
        if client is not None:
            await client.close()


async def run_cluster(cfg: config.Config, kube_access: KubeAccess) -> None:
    store = Store(catalogue.FAMILIES)
    registry = HealthRegistry(cfg.role)
    settings = WatchSettings(
        page_size=cfg.watch_page_size, watch_timeout=cfg.watch_timeout, absent_retry=cfg.watch_absent_retry
    )
    client = KubeClient(kube_access)
    scope = NamespaceScope(list(cfg.namespaces or ()), cfg.namespace_selector, (cfg.shard, cfg.total_shards))
    registry.shard = (cfg.shard, cfg.total_shards)
    tasks: list[asyncio.Task[None]] = []
    if cfg.namespace_selector:
        ns_health = registry.source("namespaces").resource("namespaces")
        namespace_reflector = Reflector(
            client, NAMESPACES, scope, ns_health, settings, label_selector=cfg.namespace_selector
        )
        scope.ready = namespace_reflector.synced  # sources start once the namespace set is known
        tasks.append(asyncio.create_task(namespace_reflector.run()))
    sources = cluster_sources(store, registry, client, scope, settings, cfg)
    try:
        await _run(cfg, store, registry, [*tasks, *(source.run() for source in sources)], client.host, client)
    finally:
        await client.close()


def cluster_sources(
    store: Store,
    registry: HealthRegistry,
    client: KubeClient,
    scope: NamespaceScope,
    settings: WatchSettings,
    cfg: config.Config,
) -> list[WatchSource]:
    """The sources `cfg.sources` names, in the order the catalogue lists them."""
    return [SOURCES[name](store, registry, client, scope, settings, cfg) for name in cfg.sources]


async def _run(
    cfg: config.Config,
    store: Store,
    registry: HealthRegistry,
    jobs: Sequence[Coroutine[Any, Any, None] | asyncio.Task[None]],
    against: str,
    client: KubeClient | None = None,
) -> None:
    """Serve HTTP (over TLS, with token review, when asked) and run the sources until SIGTERM or SIGINT."""
    middlewares = []
    if cfg.web_auth == "kubernetes":
        assert client is not None
        middlewares.append(KubernetesAuth(client).middleware())
    jobs = list(jobs)
    certificate = None
    if cfg.web_tls_cert_file and cfg.web_tls_key_file:
        certificate = ReloadingCertificate(cfg.web_tls_cert_file, cfg.web_tls_key_file)
        jobs.append(certificate.watch())
    app = make_app(store, registry, cfg.web_telemetry_path, middlewares)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = cfg.web_listen_address
    await web.TCPSite(runner, host, port, ssl_context=certificate.context if certificate else None).start()
    scheme = "https" if certificate else "http"
    log.info("serving on %s://%s:%d%s (%s; auth: %s)", scheme, host, port, cfg.web_telemetry_path, against,
             cfg.web_auth)  # fmt: skip

    tasks = [job if isinstance(job, asyncio.Task) else asyncio.create_task(job) for job in jobs]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()
