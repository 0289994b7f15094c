"""`make bench`: every benchmark in one run, then benchmarks/RESULTS.md (machine, figures, targets).

python -m benchmarks.run [--factor 1.0]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from benchmarks import bench_cluster, bench_dashboards, bench_node, bench_scrape
from benchmarks.results import RESULTS, Figure, write


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factor", type=float, default=1.0, help="scale of the synthetic cluster (1.0: full)")
    args = parser.parse_args()
    started = time.monotonic()
    sections: dict[str, list[Figure]] = {}
    benches: list[tuple[str, Callable[[], list[Figure]], str]] = [  # title, benchmark, a note under its table
        ("Scrape: 100k series, store against prometheus_client", bench_scrape.run, ""),
        ("Cluster role on the synthetic cluster", lambda: bench_cluster.run(args.factor), ""),
        ("Node role: NVML polls (stub library, real pynvml)", bench_node.run, ""),
        ("Dashboards on a real Prometheus with 24 h of data: recorded against raw", bench_dashboards.run,
         bench_dashboards.NOTE),
    ]  # fmt: skip
    for title, bench, _ in benches:
        print(f"== {title}", flush=True)
        sections[title] = bench()
    write(sections, time.monotonic() - started, {title: note for title, _, note in benches if note})
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
