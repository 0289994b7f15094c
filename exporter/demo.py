"""`make demo` / `ml-workload-exporter demo`: the whole pack on a simulated cluster.

Starts the Kubernetes API emulator with the workload simulator (exporter/emulator/simulator.py:
training jobs created, run, restarted and finished; a workbench busy, idle, culled and started again;
model servers under changing traffic; GPUs with utilisation patterns through the stub NVML library),
the exporter in both roles (the cluster role against the emulator through a kubeconfig, the node role
once per simulated GPU node), simulated kubelet/kube-state-metrics/dcgm-exporter targets and Jupyter
servers, and Prometheus evaluating the pack's rules. Then it prints where to look and, every
`--report` seconds, what each dashboard in dashboards/ shows. Ctrl-C stops every process it started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from exporter.emulator import scenario
from exporter.pack import DASHBOARDS_DIR, perses
from exporter.pack import local as stack
from exporter.steps import publish_records_processed

RANGE_S = 3600
# Labels that name what a series is about, in the order they are printed.
SUBJECT_LABELS = ("namespace", "job_name", "notebook", "run_id", "step", "model", "version", "pod", "node", "component",
                  "deployment", "source", "job")  # fmt: skip


def dashboard_report(prom: str, dashboard: dict[str, Any]) -> str:
    """Each panel's current values, every variable at "All"."""
    spec = perses.dashboard_spec(dashboard)
    values = {v["spec"]["name"]: ".*" for v in spec.get("variables", [])} | stack.builtin_variables(RANGE_S)
    panels = spec["panels"]
    lines = []
    for q in perses.queries(dashboard):
        title = panels[q.panel]["spec"]["display"]["name"]
        result = stack.query(prom, stack.fill_variables(q.promql, values))
        if not result:
            lines.append(f"  {title:26} (no data now)")
            continue
        if len(result) == 1 and set(result[0]["metric"]) <= {"__name__"}:
            lines.append(f"  {title:26} {float(result[0]['value'][1]):g}")
            continue
        cells = []
        for r in result:
            labels = r["metric"]
            subject = "/".join(labels[k] for k in SUBJECT_LABELS if k in labels)
            shown = ("status", "resource", "reason", "kind") if "run_id" in labels else ("status", "resource", "reason")
            extra = "".join(f" {labels[k]}" for k in shown if k in labels)
            cells.append(f"{subject}{extra}={float(r['value'][1]):.3g}")
        cells.sort()
        lines.append(f"  {title:26} " + ", ".join(cells[:6]) + (f" (+{len(cells) - 6} more)" if len(cells) > 6 else ""))
    return "\n".join(lines)


def oom_kill_todays_run(api: str) -> None:
    """The pipeline story: today's run reports its records, then its preprocess step is OOM-killed."""
    publish_records_processed(125_000, run_id="run-0002", step="preprocess", gateway=api, namespace="team-a")
    body = json.dumps(scenario.oom_kill_running_preprocess()).encode()
    path = "/apis/argoproj.io/v1alpha1/namespaces/team-a/workflows/fraud-training-pipeline-def34"
    request = urllib.request.Request(api + path, data=body, method="PUT", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10):
        pass
    pod = f"/api/v1/namespaces/team-a/pods/{scenario.running_preprocess_pod()}"
    patch = json.dumps({"status": {"phase": "Failed", "reason": "OOMKilled"}}).encode()
    request = urllib.request.Request(api + pod, data=patch, method="PATCH",
                                     headers={"Content-Type": "application/merge-patch+json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10):
        pass
    print("(today's pipeline run: preprocess was just OOM-killed)", flush=True)


@contextlib.contextmanager
def progress(label: str) -> Iterator[None]:
    """One line per start-up step: what starts, then how long it took."""
    print(f"  starting {label:38}", end="", flush=True)
    begun = time.monotonic()
    yield
    print(f" ready ({time.monotonic() - begun:.1f} s)", flush=True)


def report(prom: str, started: float) -> None:
    """The overview's key numbers first, then every other dashboard's panels."""
    paths = sorted(DASHBOARDS_DIR.glob("*.yaml"), key=lambda p: p.stem != "ml-platform-overview")
    for path in paths:
        dashboard = yaml.safe_load(path.read_text())
        title = perses.dashboard_spec(dashboard)["display"]["name"]
        print(f"{title}, last hour (t+{time.monotonic() - started:.0f}s):", flush=True)
        print(dashboard_report(prom, dashboard), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ml-workload-exporter demo", description=__doc__)
    parser.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0: until Ctrl-C)")
    parser.add_argument("--report", type=float, default=30, help="seconds between dashboard reports")
    parser.add_argument("--lifecycle", type=float, default=15, help="seconds between simulated lifecycle steps")
    parser.add_argument("--scale", type=int, default=0, help="add 20 x SCALE training jobs and 10 x SCALE notebooks")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the workload simulator")
    args = parser.parse_args(argv)

    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    workdir = Path(tempfile.mkdtemp(prefix="ml-exporter-demo-"))
    print(f"ML workload exporter demo (logs and data in {workdir})", flush=True)
    with contextlib.ExitStack() as es:
        with progress("Kubernetes API emulator and simulator"):
            url, kubeconfig, _ = es.enter_context(stack.emulator(
                workdir, "--lifecycle", str(args.lifecycle), "--scale", str(args.scale), "--seed", str(args.seed)
            ))  # fmt: skip
        with progress("exporter, cluster role"):
            exporter = es.enter_context(stack.exporter(
                workdir, kubeconfig, "--notebooks.probe", "true", "--notebooks.probe-interval", "10",
                "--notebooks.probe-url", url + "/notebook/{namespace}/{name}",
            ))  # fmt: skip
        with progress("exporter, node role on each GPU node"):
            agents = es.enter_context(stack.gpu_agents(workdir, 5))
        scrape = stack.scrape_configs(exporter, url, agents)
        with progress("Prometheus with the recording rules"):
            # Rules every 5 s (instead of 30 s) and 1 min rate windows so the demo fills in quickly.
            prom = es.enter_context(
                stack.prometheus(workdir, scrape, stack.fast_rules(workdir, "5s", "1m"), scrape_interval="5s")
            )
        print(
            f"""
ML workload exporter demo is running.

  exporter metrics   {exporter}/metrics   (ready: {exporter}/readyz)
  GPU node agents    {", ".join(a + "/metrics" for a in agents)}
  Kubernetes API     {url}   (kubeconfig: {kubeconfig})
  Prometheus         {prom}/graph
  dashboards         dashboards/*.yaml (PersesDashboards; every panel queries recorded series)

Try in Prometheus:  namespace_status:ml_training_jobs:count
                    namespace_pod_container:ml_gpu_utilization:avg
                    namespace_notebook:ml_notebook_idle_seconds:max
The first report comes in {min(args.report, 20):g} s. Stop with Ctrl-C.
""",
            flush=True,
        )
        started = time.monotonic()
        next_report = started + min(args.report, 20)
        oom_at = started + min(30.0, args.report)
        while not stopping and (not args.duration or time.monotonic() - started < args.duration):
            if oom_at and time.monotonic() >= oom_at:
                oom_at = 0
                oom_kill_todays_run(url)
            if time.monotonic() >= next_report:
                report(prom, started)
                next_report += args.report
            time.sleep(0.5)
        print("stopping: Prometheus, the exporters and the emulator", flush=True)
    print("demo stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
