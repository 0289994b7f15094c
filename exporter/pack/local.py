"""Run the pack locally with real processes: the emulator, the exporter and Prometheus.

Used by `make demo` and by the end-to-end tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import yaml

from exporter.pack import ROOT

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    return http_request(url, headers=headers, timeout=timeout)


def http_request(
    url: str, data: bytes | None = None, method: str = "GET", headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:  # fmt: skip
    """(status, body); an HTTP error status is an answer, not an exception. Bodies are JSON."""
    headers = {**({"Content-Type": "application/json"} if data is not None else {}), **(headers or {})}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post(url: str, data: bytes) -> tuple[int, bytes]:
    return http_request(url, data, "POST")


def wait_for(url: str, timeout: float = 20.0, status: int = 200, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} while waiting for {url}")
        with contextlib.suppress(OSError):
            if http_get(url, timeout=1)[0] == status:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer {status} within {timeout}s")


@contextlib.contextmanager
def process(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def emulator(tmp: Path, *extra: str, port: int | None = None) -> Iterator[tuple[str, Path, float]]:
    """The emulated cluster: (url, kubeconfig path, scenario start time). Its GPU nodes are
    simulated under `tmp / "gpu-nodes"` for `gpu_agents`."""
    port = port or free_port()
    kubeconfig = tmp / "kubeconfig.yaml"
    started = time.time()
    args = [
        sys.executable,
        "-m",
        "exporter.emulator",
        "--port",
        str(port),
        "--kubeconfig-out",
        str(kubeconfig),
        "--bookmark-interval",
        "1",
        "--gpu-nodes-dir",
        str(tmp / "gpu-nodes"),
        *extra,
    ]
    with process(args, tmp / "emulator.log") as proc:
        wait_for(f"http://127.0.0.1:{port}/version", proc=proc)
        yield f"http://127.0.0.1:{port}", kubeconfig, started


@contextlib.contextmanager
def exporter(tmp: Path, kubeconfig: Path, *extra: str, ready: bool = True) -> Iterator[str]:
    """The exporter against `kubeconfig`; waits for /readyz (or only /healthz with ready=False)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "exporter", "--kubeconfig", str(kubeconfig), "--web.listen-address",
            f"127.0.0.1:{port}", *extra]  # fmt: skip
    with process(args, tmp / "exporter.log") as proc:
        wait_for(url + ("/readyz" if ready else "/healthz"), proc=proc)
        yield url


class NodeAgent(NamedTuple):
    url: str
    pid: int


@contextlib.contextmanager
def node_agent(
    tmp: Path,
    nvml_config: Path,
    socket_path: Path,
    *extra: str,
    library_dir: Path | None,
    node: str = "gpu-node-1",
    interval: float = 0.2,
) -> Iterator[NodeAgent]:
    """The node role against the stub NVML in `library_dir` (None: no NVML library at all)."""
    from exporter.emulator import nvml

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = nvml.environment(library_dir, nvml_config) if library_dir else {"NVML_STUB_CONFIG": str(nvml_config)}
    args = [sys.executable, "-m", "exporter", "--role", "node", "--node-name", node, "--web.listen-address",
            f"127.0.0.1:{port}", "--podresources.socket", str(socket_path), "--nvml.interval", str(interval),
            "--podresources.interval", str(interval), *extra]  # fmt: skip
    with process(args, tmp / f"node-agent-{node}.log", env) as proc:
        wait_for(url + "/readyz", proc=proc)
        yield NodeAgent(url, proc.pid)


@contextlib.contextmanager
def gpu_agents(tmp: Path, interval: float = 1.0) -> Iterator[list[str]]:
    """The node role once per simulated GPU node of `emulator(tmp)`, on the stub NVML library."""
    from exporter.emulator import gpunode, nvml

    library = nvml.build(tmp / "nvml-stub")
    nodes_dir = tmp / "gpu-nodes"
    with contextlib.ExitStack() as stack:
        urls = [
            stack.enter_context(
                node_agent(
                    tmp,
                    nodes_dir / node / gpunode.CONFIG,
                    nodes_dir / node / gpunode.SOCKET,
                    library_dir=library,
                    node=node,
                    interval=interval,
                )
            ).url
            for node in (nodes_dir / gpunode.NODES_FILE).read_text().split()
        ]
        yield urls


def scrape_configs(exporter_url: str, emulator_url: str, gpu_agent_urls: list[str]) -> list[dict[str, Any]]:
    """How a cluster scrapes the exporter, the kubelet's cAdvisor, the GPU agents and dcgm-exporter."""
    agents = scrape_job("ml-gpu-agent", gpu_agent_urls[0] + "/metrics", honor_labels=True) if gpu_agent_urls else None
    if agents is not None:
        agents["static_configs"][0]["targets"] = [urllib.parse.urlparse(u).netloc for u in gpu_agent_urls]
    return [
        scrape_job("ml-workload-exporter", exporter_url + "/metrics", honor_labels=True),
        scrape_job("kubelet-cadvisor", emulator_url + "/metrics/cadvisor", honor_labels=True),
        scrape_job("kube-state-metrics", emulator_url + "/metrics/kube-state-metrics", honor_labels=True),
        scrape_job("pushgateway", emulator_url + "/metrics/pushgateway", honor_labels=True),
        scrape_job("model-servers", emulator_url + "/metrics/model-servers", honor_labels=True),
        scrape_job("node-exporter", emulator_url + "/metrics/node-exporter", honor_labels=True),
        scrape_job("kubelet-volumes", emulator_url + "/metrics/kubelet-volumes", honor_labels=True),
        *([agents] if agents else []),
        # dcgm-exporter as the GPU Operator scrapes it: its own namespace/pod become target labels,
        # so the workload's are renamed exported_namespace/exported_pod.
        scrape_job("nvidia-dcgm-exporter", emulator_url + "/metrics/dcgm", honor_labels=False,
                   labels={"namespace": "nvidia-gpu-operator", "pod": "nvidia-dcgm-exporter-7x9z"}),
    ]  # fmt: skip


def fast_rules(tmp: Path, interval: str = "1s", window: str = "5s") -> list[Path]:
    """The pack's rules on a fast clock: groups every `interval`, rate windows of `window`.

    A test cannot wait 30 s per evaluation or 5 min for a rate window to fill; the
    promtool tests check the rules with their real intervals and windows.
    """
    out = []
    for path in sorted((ROOT / "recording_rules").glob("*.rules.yaml")):
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            group["interval"] = interval
            for rule in group["rules"]:
                rule["expr"] = re.sub(r"\[\d+[smh]\]", f"[{window}]", rule["expr"])
        target = tmp / path.name
        target.write_text(yaml.safe_dump(doc))
        out.append(target)
    return out


@contextlib.contextmanager
def prometheus(
    tmp: Path, scrape_configs: list[dict[str, Any]], rule_files: list[Path], scrape_interval: str = "1s"
) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus not installed: `make test` installs Debian's package")
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": scrape_configs,
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    args = [
        binary,
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with process(args, tmp / "prometheus.log") as proc:
        wait_for(f"http://127.0.0.1:{port}/-/ready", timeout=60, proc=proc)
        yield f"http://127.0.0.1:{port}"


def scrape_job(name: str, url: str, honor_labels: bool, labels: dict[str, str] | None = None) -> dict[str, Any]:
    parsed = urllib.parse.urlparse(url)
    target: dict[str, Any] = {"targets": [parsed.netloc]}
    if labels:
        target["labels"] = labels
    return {
        "job_name": name,
        "metrics_path": parsed.path or "/metrics",
        "honor_labels": honor_labels,
        "static_configs": [target],
    }


def query(prom: str, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": promql}
    if at is not None:
        params["time"] = str(at)
    status, body = http_get(f"{prom}/api/v1/query?{urllib.parse.urlencode(params)}")
    data = json.loads(body)
    if status != 200 or data.get("status") != "success":
        raise AssertionError(f"query failed ({status}): {promql}\n{data}")
    return list(data["data"]["result"])


def eventually(check: Callable[[], T | None], what: str, timeout: float = 60.0) -> T:
    """Poll `check` until it returns something truthy; that value, or an AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"no {what} within {timeout:g} s")


def builtin_variables(range_s: int = 3600) -> dict[str, str]:
    """Values Perses gives its built-in variables for a `range_s` dashboard time range."""
    return {"__range_s": str(range_s), "__range": f"{range_s}s", "__range_ms": str(range_s * 1000),
            "__rate_interval": "1m", "__interval": "15s", "__interval_ms": "15000"}  # fmt: skip


def fill_variables(promql: str, values: dict[str, str]) -> str:
    """Substitute $var / ${var} the way Perses does before sending a query."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values[m.group(1) or m.group(2)], promql)
