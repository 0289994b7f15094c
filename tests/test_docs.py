"""The documentation's commands work as written: every block marked `sh runnable` or `python runnable`
runs here, and every relative link points at a file that exists."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.pack import ROOT

PAGES = sorted([ROOT / "README.md", ROOT / "helm" / "README.md", *(ROOT / "docs").rglob("*.md")])
BLOCK = re.compile(r"```(sh|python) runnable\n(.*?)```", re.S)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def runnable() -> list[tuple[str, str, str]]:
    return [(f"{page.relative_to(ROOT)}#{n}", lang, code) for page in PAGES
            for n, (lang, code) in enumerate(BLOCK.findall(page.read_text()))]  # fmt: skip


def test_the_docs_have_runnable_examples() -> None:
    assert len(runnable()) >= 5


@pytest.mark.parametrize(("where", "lang", "code"), runnable(), ids=[r[0] for r in runnable()])
def test_documented_commands_run(where: str, lang: str, code: str) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = ["bash", "-euo", "pipefail", "-c", code] if lang == "sh" else [sys.executable, "-c", code]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{where} failed:\n{code}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_resolve(page: Path) -> None:
    broken = [
        target for target in LINK.findall(page.read_text())
        if not target.startswith(("http://", "https://", "mailto:")) and not (page.parent / target).exists()
    ]  # fmt: skip
    assert broken == [], f"{page.relative_to(ROOT)} links to missing files: {broken}"
