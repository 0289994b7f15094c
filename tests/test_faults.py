"""Faults survived: the exporter as a real process against the emulated API server (real HTTP).

Each case asserts what is served during the fault and after it. Every scrape taken passes
`promtool check metrics`. The figures are summed up in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.emulator.apiserver import kubeconfig_for
from exporter.emulator.scenario import v1_job
from exporter.pack import local

JOBS = "/apis/kubeflow.org/v1/namespaces/team-a/pytorchjobs"
FAST = (
    "--watch.timeout",
    "1",
)


class Cluster:
    def __init__(self, url: str, exporter: str, log: Path) -> None:
        self.url, self.exporter, self.log = url, exporter, log
        self.scrapes = 0

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """One scrape, checked by promtool like every scrape in this suite."""
        status, body = local.http_get(self.exporter + "/metrics")
        assert status == 200
        text = body.decode()
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.scrapes += 1
        return {(s.name, frozenset(s.labels.items())): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}  # fmt: skip

    def jobs(self) -> set[str]:
        return {dict(labels)["job_name"] for name, labels in self.scrape() if name == "ml_training_job_info"}

    def fault(self, **fault: Any) -> None:
        request = json.dumps(fault).encode()
        local.http_post(self.url + "/_emulator/faults", request)

    def create(self, name: str, **extra: Any) -> None:
        job = v1_job("PyTorchJob", "team-a", name, "running", started=60)
        job["metadata"].update(extra)
        status, body = local.http_post(self.url + JOBS, json.dumps(job).encode())
        assert status in (200, 201), body[:300]

    def delete(self, name: str) -> None:
        local.http_request(self.url + f"{JOBS}/{name}", method="DELETE")

    def value(self, name: str, **labels: str) -> float:
        return sum(v for (n, pairs), v in self.scrape().items() if n == name and set(labels.items()) <= pairs)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with contextlib.ExitStack() as stack:
        url, kubeconfig, _ = stack.enter_context(local.emulator(tmp_path, "--scenario", "training"))
        exporter = stack.enter_context(local.exporter(tmp_path, kubeconfig, *FAST))
        yield Cluster(url, exporter, tmp_path / "exporter.log")


def during(check: Callable[[], object], seconds: float) -> int:
    """Run `check` repeatedly for `seconds`; returns how many times it ran (every run must pass)."""
    runs, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        check()
        runs += 1
        time.sleep(0.1)
    return runs


def test_api_server_down_at_start_then_up(tmp_path: Path) -> None:
    port = local.free_port()
    kubeconfig = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_text(kubeconfig_for(f"http://127.0.0.1:{port}", None))
    with local.exporter(tmp_path, kubeconfig, *FAST, ready=False) as exporter:
        down = Cluster("", exporter, tmp_path / "exporter.log")
        time.sleep(2)
        assert local.http_get(exporter + "/readyz")[0] == 503  # not ready: nothing listed yet
        samples = down.scrape()  # self metrics are served meanwhile
        assert down.value("ml_exporter_source_up", source="training") == 0
        assert down.value("ml_exporter_api_errors_total", source="training", reason="connection") > 0
        assert ("process_cpu_seconds_total", frozenset()) in samples
        with local.emulator(tmp_path, "--scenario", "training", port=port) as (url, _, _):
            local.wait_for(exporter + "/readyz", timeout=60)  # retries with backoff, then syncs
            up = Cluster(url, exporter, tmp_path / "exporter.log")
            assert "bert-finetune" in up.jobs()
            assert up.value("ml_exporter_source_up", source="training") == 1


def test_dropped_watches_and_410_storms_never_blank_the_series(cluster: Cluster) -> None:
    before = cluster.jobs()
    assert len(before) >= 5
    cluster.fault(kind="drop", path="pytorchjobs", watch=True, count=5)
    cluster.fault(kind="gone", path="pytorchjobs", watch=True, count=10)
    runs = during(lambda: (cluster.jobs() >= before) or pytest.fail("a job vanished during the storm"), 6)
    assert runs > 10
    cluster.create("after-the-storm")
    local.eventually(lambda: "after-the-storm" in cluster.jobs(), "a job created after the storm", 30)
    assert cluster.value("ml_exporter_watch_restarts_total", source="training", reason="gone") > 0


def test_429_with_retry_after_is_honoured_and_served_meanwhile(cluster: Cluster) -> None:
    before = cluster.jobs()
    cluster.fault(kind="gone", path="pytorchjobs", count=1, watch=True)  # force a relist ...
    cluster.fault(kind="status", status=429, retry_after=4, path="pytorchjobs", count=1, watch=False)  # ... throttled
    local.eventually(lambda: cluster.value("ml_exporter_api_errors_total", source="training", reason="429"), "429")
    throttled = time.monotonic()
    assert cluster.jobs() >= before  # served while waiting
    cluster.create("after-429")
    local.eventually(lambda: "after-429" in cluster.jobs(), "recovery after 429", 30)
    assert time.monotonic() - throttled >= 3  # it waited as long as the server asked (4 s), not its 0.5 s


def test_500s_and_slow_responses(cluster: Cluster) -> None:
    before = cluster.jobs()
    cluster.fault(kind="gone", path="pytorchjobs", count=1, watch=True)
    cluster.fault(kind="status", status=500, path="pytorchjobs", count=4, watch=False)
    cluster.fault(kind="slow", delay=3, path="pytorchjobs", count=1, watch=False)
    during(lambda: cluster.jobs() >= before or pytest.fail("a job vanished during 500s"), 4)
    local.eventually(lambda: cluster.value("ml_exporter_api_errors_total", source="training", reason="500") >= 4,
                     "500s counted", 30)  # fmt: skip
    cluster.create("after-500s")
    local.eventually(lambda: "after-500s" in cluster.jobs(), "recovery after 500s", 40)


def test_objects_deleted_while_disconnected_disappear_after_the_relist(cluster: Cluster) -> None:
    assert "bert-finetune" in cluster.jobs()
    cluster.fault(kind="drop", path="pytorchjobs", watch=True, count=1)
    cluster.fault(kind="status", status=503, path="pytorchjobs", watch=True, count=3)  # stay away a while
    cluster.delete("bert-finetune")
    local.http_post(cluster.url + "/_emulator/compact", b"{}")  # the events are gone: only a relist can tell
    local.eventually(lambda: "bert-finetune" not in cluster.jobs(), "the deleted job gone", 40)


def test_objects_over_one_mebibyte(cluster: Cluster) -> None:
    cluster.create("huge-annotations", annotations={"notes.example.com/blob": "x" * (1536 * 1024)})
    local.eventually(lambda: "huge-annotations" in cluster.jobs(), "a 1.5 MiB object", 30)
    assert cluster.value("ml_exporter_source_up", source="training") == 1


def test_fast_churn_keeps_memory_and_series_bounded(cluster: Cluster) -> None:
    baseline = cluster.value("ml_exporter_source_series", source="training")
    rss: list[float] = []
    for round_ in range(6):
        for n in range(40):
            cluster.create(f"flap-{round_}-{n}")
        for n in range(40):
            cluster.delete(f"flap-{round_}-{n}")
        rss.append(cluster.value("process_resident_memory_bytes"))
    local.eventually(lambda: not any(name.startswith("flap-") for name in cluster.jobs()), "the flapping jobs gone", 30)
    assert cluster.value("ml_exporter_source_series", source="training") == baseline
    # 480 objects created and deleted: resident memory settles (no per-object leak).
    assert rss[-1] - rss[1] < 16 * 2**20, rss
    assert cluster.value("ml_exporter_watch_events_total", source="training", type="DELETED") >= 240
