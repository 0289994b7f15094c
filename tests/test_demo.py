"""`make demo` keeps working: it starts the whole local stack, reports every dashboard as the
simulated cluster moves, and Ctrl-C stops every process it started."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time

from exporter.pack import local


def test_demo_runs_reports_the_dashboards_and_stops_cleanly_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "demo", "--report", "12", "--lifecycle", "3", "--scale", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        # Three reports: the second shows the OOM kill, played 12 s in.
        local.eventually(lambda: sum("ML Platform Overview, last hour" in ln for ln in lines) >= 3, "three reports",
                         timeout=100)  # fmt: skip
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    reader.join(5)
    out = "".join(lines)
    assert proc.returncode == 0, proc.stderr.read()[-2000:]  # type: ignore[union-attr]
    workdir = re.search(r"logs and data in (\S+)\)", out).group(1)  # type: ignore[union-attr]
    # Progress while starting, then where to look.
    for part in ("Kubernetes API emulator", "exporter, cluster role", "exporter, node role", "Prometheus"):
        assert re.search(rf"starting {part}.*ready \(\d", out), part
    assert "/metrics" in out and "GPU node agents" in out
    running = [int(m) for m in re.findall(r"Running jobs\s+(\d+)", out)]
    assert running and running[-1] >= 25  # the fixture's, --scale 1's 20 and the simulated ones
    assert re.search(r"CPU per job\s+\S+=\d", out)
    assert re.search(r"GPU utilisation per node\s+gpu-node-\d=0\.\d", out)  # the node agents on the stub NVML
    assert re.search(r"Idle > 24 h holding GPUs\s+1", out)
    assert re.findall(r"restarting=(\d)", out)  # a simulated job restarted on its way
    # The pipeline story plays out: today's preprocess step is OOM-killed mid-demo.
    assert "run-0002/preprocess OOMKilled" in re.findall(r"Failed steps\s+(.*)", out)[-1]
    assert re.findall(r"Ready models\s+(\d+)", out)[-1] == "1"
    assert out.rstrip().endswith("demo stopped")
    # Nothing it started is left running.
    time.sleep(0.5)
    leftover = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert workdir not in leftover
