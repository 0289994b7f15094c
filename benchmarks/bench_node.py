"""Node role CPU: one NVML poll of 8 GPUs (stub library, real pynvml), and steady CPU at a 10 s interval.

The baseline, measured in the same run, is the same readings taken straight through pynvml in one
loop: the floor any agent written in Python pays. Prints p50/p99 against the DESIGN §7 targets
(< 5 ms of CPU per poll of 8 GPUs; < 1 % of a core at a 10 s interval). Not a test: no assertions.

    python benchmarks/bench_node.py [--gpus N] [--polls N] [--steady SECONDS]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import Figure
from exporter.emulator import nvml as stub
from exporter.pack import gpu_check, local


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--polls", type=int, default=500)
    parser.add_argument("--steady", type=float, default=60, help="seconds the agent process is measured")
    args = parser.parse_args()
    run(args.gpus, args.polls, args.steady)
    return 0


def run(gpus: int = 8, polls_: int = 500, steady: float = 60) -> list[Figure]:
    args = argparse.Namespace(gpus=gpus, polls=polls_, steady=steady)
    workdir = Path(tempfile.mkdtemp(prefix="bench-node-"))
    script = gpu_check.stub_script(args.gpus)
    script.gpus[-1].mig = []  # 8 whole GPUs, as §7 counts them
    library, conf = stub.load_in_process(workdir, script)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")

    polls, devices = gpu_check.poll_cpu_seconds(args.polls)
    traced: list[int] = []

    def memory(i: int) -> None:  # Python heap after the first and the last tenth of the polls
        if i in (args.polls // 10, args.polls - 1):
            traced.append(tracemalloc.get_traced_memory()[0])

    tracemalloc.start()  # a second run: tracing would distort the CPU figures
    gpu_check.poll_cpu_seconds(args.polls, on_poll=memory)
    tracemalloc.stop()
    floor = gpu_check.direct_reads_cpu_seconds(args.polls)
    p50, p99 = statistics.median(polls), statistics.quantiles(polls, n=100)[98]
    base = statistics.median(floor)
    print(f"\none poll of {devices} GPUs, CPU time (all threads), {args.polls} polls:")
    print(f"  agent poll (threaded read, render, store)  p50 {p50 * 1e3:.3f} ms  p99 {p99 * 1e3:.3f} ms")
    print(f"  baseline: the same reads straight through pynvml  p50 {base * 1e3:.3f} ms")
    print(f"  ratio agent / baseline: {p50 / base:.2f}x")
    print(f"  target < 5 ms per poll: {'met' if p99 < 0.005 else 'NOT met'} (p99)")
    growth = (traced[1] - traced[0]) / max(args.polls - 1 - args.polls // 10, 1)
    print(f"  Python heap growth over the last {args.polls - args.polls // 10} polls: {growth:.1f} bytes per poll")

    with local.node_agent(workdir, conf, workdir / "no-kubelet.sock", library_dir=library, node="bench",
                          interval=10) as (url, pid):  # fmt: skip
        rss_start = gpu_check.resident_bytes(pid)
        ratio = gpu_check.steady_cpu_ratio(url, pid, args.steady)
        rss_end = gpu_check.resident_bytes(pid)
    print(f"\nagent process at a 10 s interval, scraped every 15 s, over {args.steady:g} s:")
    print(f"  {ratio * 100:.3f} % of one core; target < 1 %: {'met' if ratio < 0.01 else 'NOT met'}")
    print(f"  resident memory {rss_start / 2**20:.1f} MiB at the start, {rss_end / 2**20:.1f} MiB at the end")
    return [
        Figure(f"CPU per NVML poll of {devices} GPUs", f"p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms", "< 5 ms",
               p99 < 0.005),
        Figure("the same reads straight through pynvml (baseline)",
               f"p50 {base * 1e3:.2f} ms (the poll: {p50 / base:.1f}x)", "", None),
        Figure("Python heap growth per poll", f"{growth:.0f} bytes", "", None),
        Figure("agent process at a 10 s interval, scraped every 15 s", f"{ratio * 100:.2f} % of a core", "< 1 %",
               ratio < 0.01),
        Figure("agent resident memory", f"{rss_end / 2**20:.0f} MiB", "", None),
    ]  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
