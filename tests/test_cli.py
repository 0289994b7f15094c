"""The command-line contract: start, serve within 5 s, refuse unusable kubeconfigs, stop cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exporter.pack import local as harness


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not: [yaml", "kubeconfig"),
        ('{"apiVersion": "v1", "kind": "Config", "clusters": [], "contexts": [], "users": []}', "kubeconfig"),
    ],
)
def test_unusable_kubeconfig_is_one_line_and_non_zero(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "kubeconfig"
    if content is not None:
        path.write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "--kubeconfig", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0] and lines[0].startswith("ml-workload-exporter: ")


def test_serves_within_five_seconds_and_stops_on_sigterm(tmp_path: Path) -> None:
    with harness.emulator(tmp_path) as (_, kubeconfig, _started):
        port = harness.free_port()
        started = time.monotonic()
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "ml-workload-exporter"),
                "--role",
                "cluster",
                "--kubeconfig",
                str(kubeconfig),
                "--web.listen-address",
                f"127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            harness.wait_for(f"http://127.0.0.1:{port}/healthz", timeout=5, proc=proc)
            assert time.monotonic() - started < 5
            harness.wait_for(f"http://127.0.0.1:{port}/readyz", timeout=10, proc=proc)
            status, body = harness.http_get(f"http://127.0.0.1:{port}/metrics")
            assert status == 200 and b"ml_training_job_info{" in body
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
        assert proc.stderr is not None and b"Traceback" not in proc.stderr.read()


def test_readyz_waits_for_the_first_sync(tmp_path: Path) -> None:
    # An API server that accepts connections but never answers: ready must stay false.
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        kubeconfig = tmp_path / "kubeconfig"
        from exporter.emulator.apiserver import kubeconfig_for

        kubeconfig.write_text(kubeconfig_for(url))
        with harness.exporter(tmp_path, kubeconfig, ready=False) as exporter:
            assert harness.http_get(exporter + "/healthz")[0] == 200
            status, body = harness.http_get(exporter + "/readyz")
            assert status == 503 and b"training" in body
            metrics = harness.http_get(exporter + "/metrics")[1]
            assert b'ml_exporter_source_synced{source="training"} 0' in metrics


def test_version_flag() -> None:
    proc = subprocess.run([sys.executable, "-m", "exporter", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("ml-workload-exporter ")
