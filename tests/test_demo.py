"""`make demo` keeps working: it starts the whole local stack and reports every dashboard."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_runs_and_reports_the_dashboards() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "exporter.demo", "--duration", "32", "--report", "15", "--lifecycle", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "Prometheus" in out and "/metrics" in out
    running = [int(m) for m in re.findall(r"Running jobs\s+(\d+)", out)]
    assert running and running[-1] >= 5  # the fixture's running jobs plus the simulated ones
    assert re.search(r"CPU per job\s+\S+=\d", out)
    assert re.findall(r"Active notebooks\s+(\d+)", out)[-1] == "3"
    assert re.search(r"Idle > 24 h holding GPUs\s+1", out)
    # The pipeline story plays out: today's preprocess step is OOM-killed mid-demo.
    assert "run-0002/preprocess OOMKilled" in re.findall(r"Failed steps\s+(.*)", out)[-1]
    assert re.findall(r"Ready models\s+(\d+)", out)[-1] == "1"
    assert out.rstrip().endswith("demo stopped")
