"""Sharding the cluster role: N instances split the namespaces, and together serve exactly what one
unsharded instance serves, series for series, whatever N is."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter import config
from exporter.pack import local

SELF = ("ml_exporter_", "process_", "# ")


def series(url: str) -> Counter[str]:
    """The workload series of one scrape, as lines (a Counter: a series served twice counts twice)."""
    status, body = local.http_get(url + "/metrics")
    assert status == 200
    return Counter(line for line in body.decode().splitlines() if line and not line.startswith(SELF))


@contextlib.contextmanager
def instances(tmp: Path, kubeconfig: Path, total: int) -> Iterator[list[str]]:
    with contextlib.ExitStack() as stack:
        urls = []
        for shard in range(total):
            where = tmp / f"{total}-{shard}"
            where.mkdir()
            urls.append(stack.enter_context(
                local.exporter(where, kubeconfig, "--shard", str(shard), "--total-shards", str(total))
            ))  # fmt: skip
        yield urls


def test_shards_together_serve_exactly_the_unsharded_series(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        _, kubeconfig, _ = stack.enter_context(local.emulator(tmp_path))
        (tmp_path / "whole").mkdir()
        whole = series(stack.enter_context(local.exporter(tmp_path / "whole", kubeconfig)))
        assert sum(whole.values()) > 200
        unions = {}
        for total in (3, 2):  # resharding from 3 to 2 instances loses nothing
            with instances(tmp_path, kubeconfig, total) as urls:
                parts = [series(url) for url in urls]
                for shard, url in enumerate(urls):
                    body = local.http_get(url + "/metrics")[1].decode()
                    assert f"ml_exporter_shard_ordinal{{}} {shard}\n" in body
                    assert f"ml_exporter_total_shards{{}} {total}\n" in body
                union = sum(parts, Counter())
                assert union == whole, f"{total} shards: missing {list((whole - union).elements())[:3]}, " \
                                       f"extra {list((union - whole).elements())[:3]}"  # fmt: skip
                assert sum(1 for part in parts if part) >= 2  # the work is actually split
                # Cluster-scoped (platform) series come from shard 0 only.
                platform = [sum(1 for line in part if line.startswith("ml_platform_")) for part in parts]
                assert platform[0] > 0 and not any(platform[1:])
                unions[total] = union
        assert unions[3] == unions[2]


def test_shard_flags_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(config.ConfigError, match="shard: 3 is not below total-shards"):
        config.load(["--shard", "3", "--total-shards", "3"], environ={})
    monkeypatch.setenv("POD_NAME", "mlwe-cluster-2")  # a StatefulSet pod's name
    assert config.load(["--shard", "auto", "--total-shards", "4"], environ={}).shard == 2
    result = subprocess.run([sys.executable, "-m", "exporter", "--shard", "auto"], capture_output=True, text=True,
                            env={"POD_NAME": "exporter-abc", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert result.returncode == 2 and "does not end in -<ordinal>" in result.stderr
