"""`make demo`: the cluster role against a simulated cluster, with Prometheus and the recording rules.

Starts the Kubernetes API emulator (training jobs that keep being created, run and
finish), the exporter against it through a kubeconfig, a simulated kubelet/GPU
target, and Prometheus evaluating the pack's rules; then prints where to look and,
every `--report` seconds, what the Training Jobs Overview dashboard shows.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

import yaml

from exporter.pack import DASHBOARDS_DIR, perses
from exporter.pack import local as stack

RANGE_S = 3600


def dashboard_report(prom: str) -> str:
    dashboard = yaml.safe_load((DASHBOARDS_DIR / "training-jobs-overview.yaml").read_text())
    values = {
        "namespace": ".*",
        "job": ".*",
        "__range_s": str(RANGE_S),
        "__range": "1h",
        "__rate_interval": "1m",
        "__interval": "15s",
    }
    panels = perses.dashboard_spec(dashboard)["panels"]
    lines = []
    for q in perses.queries(dashboard):
        title = panels[q.panel]["spec"]["display"]["name"]
        result = stack.query(prom, stack.fill_variables(q.promql, values))
        if not result:
            lines.append(f"  {title:26} (no data yet)")
            continue
        if len(result) == 1 and not result[0]["metric"]:
            lines.append(f"  {title:26} {float(result[0]['value'][1]):g}")
            continue
        cells = []
        for r in sorted(
            result, key=lambda r: (r["metric"].get("namespace", ""), r["metric"].get("job_name", ""))
        ):
            labels = r["metric"]
            name = f"{labels.get('namespace', '')}/{labels.get('job_name', '')}"
            extra = f" {labels['status']}" if "status" in labels else ""
            cells.append(f"{name}{extra}={float(r['value'][1]):.3g}")
        lines.append(
            f"  {title:26} " + ", ".join(cells[:6]) + (f" (+{len(cells) - 6} more)" if len(cells) > 6 else "")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporter.demo", description=__doc__)
    parser.add_argument(
        "--duration", type=float, default=0, help="stop after this many seconds (0: until Ctrl-C)"
    )
    parser.add_argument("--report", type=float, default=30, help="seconds between dashboard reports")
    parser.add_argument("--lifecycle", type=float, default=15, help="seconds between simulated job steps")
    args = parser.parse_args(argv)

    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    workdir = Path(tempfile.mkdtemp(prefix="ml-exporter-demo-"))
    with contextlib.ExitStack() as es:
        url, kubeconfig, _ = es.enter_context(stack.emulator(workdir, "--lifecycle", str(args.lifecycle)))
        exporter = es.enter_context(stack.exporter(workdir, kubeconfig))
        scrape = stack.scrape_configs(exporter, url)
        # Rules every 5 s (instead of 30 s) and 1 min rate windows so the demo fills in quickly.
        prom = es.enter_context(
            stack.prometheus(workdir, scrape, stack.fast_rules(workdir, "5s", "1m"), scrape_interval="5s")
        )
        print(
            f"""
ML workload exporter demo is running (logs and data in {workdir}).

  exporter metrics   {exporter}/metrics   (ready: {exporter}/readyz)
  Kubernetes API     {url}   (kubeconfig: {kubeconfig})
  Prometheus         {prom}/graph
  dashboard          dashboards/training-jobs-overview.yaml (PersesDashboard; queries recorded series)

Try in Prometheus:  namespace_status:ml_training_jobs:count
                    namespace_job_name:ml_training_job_cpu_usage_cores:sum_rate5m
Stop with Ctrl-C.
""",
            flush=True,
        )
        started = time.monotonic()
        next_report = started + min(args.report, 15)
        while not stopping and (not args.duration or time.monotonic() - started < args.duration):
            if time.monotonic() >= next_report:
                print(f"Training Jobs Overview, last hour (t+{time.monotonic() - started:.0f}s):", flush=True)
                print(dashboard_report(prom), flush=True)
                next_report += args.report
            time.sleep(0.5)
    print("demo stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
