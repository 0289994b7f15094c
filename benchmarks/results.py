"""One figure of a benchmark, and benchmarks/RESULTS.md written from all of them."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


@dataclass(frozen=True)
class Figure:
    what: str
    value: str
    target: str  # the DESIGN section 7 target, or "" for a figure without one
    met: bool | None

    def __str__(self) -> str:
        verdict = "" if self.met is None else (" (met)" if self.met else " (NOT met)")
        return f"{self.what}: {self.value}" + (f"; target {self.target}{verdict}" if self.target else "")


def machine() -> str:
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    prometheus = subprocess.run(["prometheus", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs ({cpu}), {memory:.0f} GiB, Python "
        f"{platform.python_version()}, {prometheus}"
    )


def write(sections: dict[str, list[Figure]], seconds: float, notes: dict[str, str] | None = None) -> None:
    lines = [
        "# Benchmark results",
        "",
        "<!-- Written by `make bench` (python -m benchmarks.run); commit it with the change it measures. -->",
        "",
        f"Machine: {machine()}. The whole run took {seconds / 60:.1f} min. Each figure is a distribution or a",
        "ratio measured in this one run; absolute times on a shared 2-core machine are noisy.",
        "",
    ]
    for section, figures in sections.items():
        lines += [f"## {section}", "", "| what | figure | target (DESIGN §7) | met |", "|---|---|---|---|"]
        for f in figures:
            met = "" if f.met is None else ("met" if f.met else "**not met**")
            lines.append(f"| {f.what} | {f.value} | {f.target} | {met} |")
        lines.append("")
        if notes and section in notes:
            lines += [notes[section], ""]
    RESULTS.write_text("\n".join(lines))
