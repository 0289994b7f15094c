"""A thin wrapper around `promtool` (check rules, test rules, check metrics) with readable failures."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


class PromtoolMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class Result:
    ok: bool
    command: str
    output: str

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        return f"promtool {self.command}: {verdict}\n{self.output.rstrip()}"


def _binary() -> str:
    path = shutil.which("promtool")
    if path is None:
        raise PromtoolMissing("promtool not found: install Debian's prometheus package (make does it for you)")
    return path


def _run(args: list[str], stdin: str | None = None, cwd: Path | None = None) -> Result:
    proc = subprocess.run(
        [_binary(), *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=300, check=False
    )
    return Result(proc.returncode == 0, " ".join(args[:2]), (proc.stdout + proc.stderr).strip())


def check_rules(files: Iterable[Path]) -> Result:
    return _run(["check", "rules", *map(str, files)])


def test_rules(files: Iterable[Path]) -> Result:
    return _run(["test", "rules", *map(str, files)])


def check_metrics(exposition: str) -> Result:
    """Lint an exposition (text format) the way Prometheus' best practices ask."""
    return _run(["check", "metrics"], stdin=exposition)
