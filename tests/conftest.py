from __future__ import annotations

import asyncio
import contextlib
import copy
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from exporter import catalogue
from exporter.emulator.apiserver import ApiServer, kubeconfig_for
from exporter.emulator.scenario import (
    Expected,
    NotebookExpected,
    PipelineExpected,
    PlatformExpected,
    ServingExpected,
    notebooks_scenario,
    pipelines_scenario,
    platform_scenario,
    serving_scenario,
    training_scenario,
)
from exporter.health import HealthRegistry
from exporter.kube import KubeClient, ResourceKind, load_configuration, offline_client
from exporter.pack import DASHBOARDS_DIR, perses
from exporter.pack import local as harness
from exporter.sources.training import PODS, TRAINJOB, V1_KINDS, TrainingSource
from exporter.store import Store
from exporter.watch import NAMESPACES, NamespaceScope, WatchSettings


def pytest_sessionstart(session: pytest.Session) -> None:
    # The suite runs real Prometheus and promtool; a missing binary is a set-up error, not a skip.
    for binary in ("prometheus", "promtool"):
        if shutil.which(binary) is None:
            raise pytest.UsageError(f"{binary} is not installed; `make test` installs Debian's prometheus package")


@dataclass
class Cluster:
    api: ApiServer
    url: str
    kubeconfig: Path

    def client(self) -> KubeClient:
        return KubeClient(load_configuration(str(self.kubeconfig)))


@pytest.fixture
async def make_cluster(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Cluster]]]:
    """Start emulated API servers on loopback in the test's event loop."""
    runners: list[tuple[ApiServer, web.AppRunner]] = []

    async def start(
        kinds: Iterable[ResourceKind],
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        **kwargs: Any,
    ) -> Cluster:
        api = ApiServer(kinds, token=token, **kwargs)
        runner = web.AppRunner(api.app(), handle_signals=False, shutdown_timeout=1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        runners.append((api, runner))
        scheme = "https" if ssl_context else "http"
        url = f"{scheme}://127.0.0.1:{runner.addresses[0][1]}"
        kubeconfig = tmp_path / f"kubeconfig-{len(runners)}.yaml"
        kubeconfig.write_text(kubeconfig_for(url, token))
        return Cluster(api, url, kubeconfig)

    yield start
    for api, runner in runners:
        api.close_watches()
        await runner.cleanup()


async def until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `predicate` on the event loop until it holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def store() -> Store:
    return Store(catalogue.FAMILIES)


@pytest.fixture
def registry() -> HealthRegistry:
    return HealthRegistry("cluster")


PYTORCH = V1_KINDS[0]
FAST = WatchSettings(page_size=2, watch_timeout=30, backoff_initial=0.01, backoff_max=0.05, absent_retry=0.2)
ALL_KINDS = (*V1_KINDS, TRAINJOB, PODS, NAMESPACES)


def jobs_in(store: Store) -> set[str]:
    text = b"".join(store.render()).decode()
    return {
        line.split('job_name="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("ml_training_job_info{")
    }


def status_of(store: Store, job: str) -> str:
    for line in b"".join(store.render()).decode().splitlines():
        if line.startswith("ml_training_job_status{") and f'job_name="{job}"' in line and line.endswith(" 1"):
            return line.split('status="')[1].split('"')[0]
    raise AssertionError(f"no status for {job}")


@contextlib.asynccontextmanager
async def training(
    cluster: Cluster,
    store: Store,
    registry: HealthRegistry,
    scope: NamespaceScope | None = None,
    settings: WatchSettings = FAST,
    client: KubeClient | None = None,
) -> AsyncIterator[TrainingSource]:
    client = client or cluster.client()
    scope = scope or NamespaceScope()
    source = TrainingSource(store, registry, client, scope, settings)
    task = asyncio.create_task(source.run())
    try:
        yield source
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()


MakeCluster = Callable[..., Awaitable[Cluster]]


@dataclass
class Stack:
    """The running end-to-end stack and what its scenario implies."""

    api: str  # the emulated cluster
    prom: str
    exporter: str
    started: float
    expected: Expected
    notebooks: NotebookExpected
    pipelines: PipelineExpected
    serving: ServingExpected
    platform: PlatformExpected


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e")
    expected, notebooks = training_scenario()[1], notebooks_scenario()[1]
    with contextlib.ExitStack() as es:
        url, kubeconfig, started = es.enter_context(harness.emulator(tmp))
        exporter = es.enter_context(
            harness.exporter(
                tmp, kubeconfig, "--namespace-selector", "opendatahub.io/dashboard=true",
                "--notebooks.probe", "true", "--notebooks.probe-interval", "1",
                "--notebooks.probe-url", url + "/notebook/{namespace}/{name}",
            )
        )  # fmt: skip
        scrape = harness.scrape_configs(exporter, url, es.enter_context(harness.gpu_agents(tmp)))
        prom = es.enter_context(harness.prometheus(tmp, scrape, harness.fast_rules(tmp)))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            gpu = harness.query(prom, "namespace_job_name:ml_training_job_gpu_utilization:avg")
            cpu = harness.query(
                prom,
                'namespace_job_name:ml_training_job_cpu_usage_cores:sum_rate5m{job_name="bert-finetune"}',
            )
            idle = harness.query(prom, "namespace_notebook:ml_notebook_idle_seconds:max")
            # The 5 s rate window is full and the probe has reported.
            if len(gpu) >= 2 and cpu and float(cpu[0]["value"][1]) > 4.9 and len(idle) >= 3:
                break
            time.sleep(0.5)
        else:
            logs = "\n".join((tmp / name).read_text()[-3000:] for name in ("exporter.log", "prometheus.log"))
            pytest.fail(f"recording rules produced no data within 90s\n{logs}")
        yield Stack(url, prom, exporter, started, expected, notebooks, pipelines_scenario()[1], serving_scenario()[1],
                    platform_scenario()[1])  # fmt: skip


def unused_client() -> KubeClient:
    return offline_client()


def series_values(store: Store, family: str) -> dict[str, float]:
    """The store's samples of one family: '{labels}' -> value."""
    out = {}
    for line in b"".join(store.render()).decode().splitlines():
        if line.startswith(family + "{"):
            key, value = line.rsplit(" ", 1)
            out[key[len(family) :]] = float(value)
    return out


def panel_queries(dashboard: str) -> list[perses.Query]:
    return perses.queries(yaml.safe_load((DASHBOARDS_DIR / f"{dashboard}.yaml").read_text()))


def query_panel(
    stack: Stack,
    dashboard: str,
    panel: str,
    *,
    index: int = 0,
    range_s: int = 3600,
    variables: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Run the panel's `index`-th query as Perses would: unset variables at "All" (.*), built-ins filled in."""
    spec = perses.dashboard_spec(yaml.safe_load((DASHBOARDS_DIR / f"{dashboard}.yaml").read_text()))
    values = {v["spec"]["name"]: ".*" for v in spec.get("variables", [])}
    values.update(variables or {})
    values.update(harness.builtin_variables(range_s))
    q = [q for q in panel_queries(dashboard) if q.panel == panel][index]
    return harness.query(stack.prom, harness.fill_variables(q.promql, values))


def scalar(result: list[dict[str, Any]]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def assert_every_query_returns_data(stack: Stack, dashboard: str) -> None:
    seen: dict[str, int] = {}
    for q in panel_queries(dashboard):
        index = seen.get(q.panel, 0)
        seen[q.panel] = index + 1
        assert query_panel(stack, dashboard, q.panel, index=index), (
            f"{dashboard}: panel {q.panel} query {index} returned no data"
        )


def with_uid(obj: dict[str, Any], uid: str) -> dict[str, Any]:
    """A copy of an object fixture as the API server returns it, with its uid."""
    obj = copy.deepcopy(obj)
    obj["metadata"]["uid"] = uid
    return obj


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def self_signed(directory: Path, name: str, cn: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt",
            "-days", "1", "-subj", f"/CN={cn}", cwd=directory)  # fmt: skip


def issue_certificate(pki: Path, name: str, cn: str, server: bool = True) -> tuple[Path, Path]:
    """A certificate from the test CA (for 127.0.0.1 when `server`): (certificate, key)."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={cn}", cwd=pki)  # fmt: skip
    extra = ["-extfile", "san.ext"] if server else []
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "1", *extra, cwd=pki)  # fmt: skip
    return pki / f"{name}.crt", pki / f"{name}.key"


def issue_server_certificate(pki: Path, name: str) -> tuple[Path, Path]:
    return issue_certificate(pki, name, "127.0.0.1")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1, a client certificate and an unrelated self-signed
    pair (other.crt/other.key), made with openssl."""
    d = tmp_path_factory.mktemp("pki")
    self_signed(d, "ca", "emulator-ca")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    issue_certificate(d, "server", "127.0.0.1")
    issue_certificate(d, "client", "system:serviceaccount:monitoring:ml-exporter", server=False)
    self_signed(d, "other", "someone-else")
    return d
