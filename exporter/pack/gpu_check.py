"""Check the node role on a machine with NVIDIA GPUs (or on the stub), and measure its CPU cost.

    python -m exporter.pack.gpu_check            # the real driver's libnvidia-ml.so.1
    python -m exporter.pack.gpu_check --stub 8   # the stub library with 8 simulated GPUs

Runs the node role as its own process, prints its GPU series, checks every value against the range
it can physically have, then measures the CPU time of one NVML poll of every device (in this
process, through the same code) and the agent's steady CPU at a 10 s interval. Exit status 1 when a
check fails. `benchmarks/gpu_check.sh` wraps it; it finishes in under 5 minutes.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from exporter import catalogue, config
from exporter.emulator import nvml as stub
from exporter.health import HealthRegistry
from exporter.pack import local
from exporter.store import Store

Sample = tuple[str, dict[str, str], float]
# Physically possible ranges of each per-device gauge (power: the largest boards draw about 1.2 kW).
RANGES: dict[str, tuple[float, float]] = {
    "ml_gpu_up": (1, 1),
    "ml_gpu_utilization_ratio": (0, 1),
    "ml_gpu_memory_utilization_ratio": (0, 1),
    "ml_gpu_memory_total_bytes": (2**28, 2**40),
    "ml_gpu_memory_used_bytes": (0, 2**40),
    "ml_gpu_power_watts": (1, 1500),
    "ml_gpu_temperature_celsius": (5, 110),
    "ml_gpu_sm_clock_hertz": (0, 5e9),
    "ml_gpu_energy_joules_total": (0, 1e15),
}


def stub_script(gpus: int) -> stub.StubNvml:
    """`gpus` busy GPUs with varied readings, one of them in MIG mode."""
    devices = [
        stub.StubGpu(f"GPU-{i:08x}-check", pci_bus_id=f"00000000:{7 + 8 * i:02X}:00.0", utilization=10 * i % 100,
                     memory_used=(i + 1) * 2**30, power_mw=100_000 + 20_000 * i, energy_mj=10**9 + i,
                     temperature=40 + i)
        for i in range(gpus)
    ]  # fmt: skip
    if devices:
        devices[-1].mig = [stub.StubMig(f"MIG-{gpus:08x}-a"), stub.StubMig(f"MIG-{gpus:08x}-b", gpu_instance=2)]
    return stub.StubNvml(gpus=devices)


def scrape(url: str) -> list[Sample]:
    status, body = local.http_get(url + "/metrics")
    if status != 200:
        raise RuntimeError(f"{url}/metrics answered {status}")
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(body.decode()) for s in f.samples]


def check_ranges(first: list[Sample], second: list[Sample]) -> list[str]:
    """Problems in two scrapes taken a few seconds apart (empty: all good)."""
    problems = []
    devices = {labels["uuid"] for name, labels, _ in second if name == "ml_gpu_info"}
    if not devices:
        problems.append("no ml_gpu_info: NVML found no device")
    for name, labels, value in second:
        low, high = RANGES.get(name, (float("-inf"), float("inf")))
        if not low <= value <= high:
            problems.append(f"{name}{labels} = {value:g}, outside [{low:g}, {high:g}]")
    used = {labels["uuid"]: value for name, labels, value in second if name == "ml_gpu_memory_used_bytes"}
    total = {labels["uuid"]: value for name, labels, value in second if name == "ml_gpu_memory_total_bytes"}
    problems += [
        f"{uuid}: memory used {used[uuid]:g} > total {total[uuid]:g}"
        for uuid in used
        if used[uuid] > total.get(uuid, 0)
    ]
    before = {labels["uuid"]: value for name, labels, value in first if name == "ml_gpu_energy_joules_total"}
    for name, labels, value in second:
        if name == "ml_gpu_energy_joules_total" and value < before.get(labels["uuid"], 0):
            problems.append(f"{labels['uuid']}: energy counter went down ({before[labels['uuid']]:g} -> {value:g})")
    up = [value for name, labels, value in second if name == "ml_exporter_source_up" and labels["source"] == "nvml"]
    if up != [1]:
        problems.append(f"ml_exporter_source_up{{source=nvml}} is {up}")
    return problems  # fmt: skip


def poll_cpu_seconds(
    polls: int, node: str = "gpu-check", on_poll: Callable[[int], None] | None = None
) -> tuple[list[float], int]:
    """CPU seconds (all threads of this process) of each of `polls` polls, and the device count.
    `on_poll(i)` runs after each poll, outside the timing."""
    from exporter.sources.nvml import GpuSource

    async def run() -> tuple[list[float], int]:
        store = Store(catalogue.FAMILIES)
        source = GpuSource(store, HealthRegistry("node"), config.defaults(), node)
        await source._initialise()
        if not source.initialised:
            raise RuntimeError("NVML did not initialise")
        await source.poll()  # the first poll learns what each device does not support
        times = array.array("d", [0.0]) * polls  # preallocated: the measurement allocates nothing
        for i in range(polls):
            start = time.process_time()
            await source.poll()
            times[i] = time.process_time() - start
            if on_poll is not None:
                on_poll(i)
        if source.xids is not None:
            source.xids.stop()
        return list(times), len(source.devices)

    return asyncio.run(run())


def direct_reads_cpu_seconds(polls: int) -> list[float]:
    """The same NVML readings taken straight through pynvml, sequentially: the floor a poll can reach."""
    import pynvml

    pynvml.nvmlInit()
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    calls: list[Callable[[object], object]] = [
        pynvml.nvmlDeviceGetMemoryInfo, pynvml.nvmlDeviceGetUtilizationRates, pynvml.nvmlDeviceGetPowerUsage,
        pynvml.nvmlDeviceGetTotalEnergyConsumption, lambda h: pynvml.nvmlDeviceGetTemperature(h, 0),
        lambda h: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
        lambda h: pynvml.nvmlDeviceGetCurrentClocksEventReasons(h),
    ]  # fmt: skip
    times = []
    for _ in range(polls):
        start = time.process_time()
        for handle in handles:
            for call in calls:
                with contextlib.suppress(pynvml.NVMLError):
                    call(handle)
        times.append(time.process_time() - start)
    pynvml.nvmlShutdown()
    return times


def process_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def steady_cpu_ratio(url: str, pid: int, seconds: float, scrape_every: float = 15.0) -> float:
    """Fraction of one core the agent used over `seconds`, scraped as Prometheus would."""
    start_cpu, start = process_cpu_seconds(pid), time.monotonic()
    while time.monotonic() - start < seconds:
        scrape(url)
        time.sleep(min(scrape_every, max(0.0, seconds - (time.monotonic() - start))))
    return (process_cpu_seconds(pid) - start_cpu) / (time.monotonic() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporter.pack.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--stub", type=int, metavar="GPUS", help="use the stub library with this many GPUs")
    parser.add_argument("--polls", type=int, default=200, help="polls timed in-process")
    parser.add_argument("--steady", type=float, default=60, help="seconds of steady-state CPU measurement")
    parser.add_argument("--interval", type=float, default=10, help="the agent's poll interval in seconds")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    library: Path | None = None
    conf = workdir / "nvml.conf"
    if args.stub is not None:
        library, conf = stub.load_in_process(workdir, stub_script(args.stub))
    print(f"NVML library: {'stub (' + str(args.stub) + ' GPUs)' if library else 'the driver (libnvidia-ml.so.1)'}")
    problems: list[str] = []
    with local.node_agent(workdir, conf, workdir / "no-kubelet.sock", library_dir=library, node="gpu-check",
                          interval=args.interval) as (url, pid):  # fmt: skip
        first = scrape(url)
        body = local.http_get(url + "/metrics")[1].decode()
        print("".join(line + "\n" for line in body.splitlines() if line.startswith("ml_gpu_")))
        time.sleep(args.interval + 1)  # a second poll
        second = scrape(url)
        problems += check_ranges(first, second)
        ratio = steady_cpu_ratio(url, pid, args.steady)
    times, devices = poll_cpu_seconds(args.polls)
    floor = direct_reads_cpu_seconds(args.polls)
    p50, p99 = statistics.median(times), statistics.quantiles(times, n=100)[98]
    print(f"\none poll of {devices} devices: CPU p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms (target < 5 ms)")
    print(f"the same reads straight through pynvml: p50 {statistics.median(floor) * 1e3:.2f} ms "
          f"(the agent's poll costs {p50 / max(statistics.median(floor), 1e-9):.1f}x that)")  # fmt: skip
    print(f"steady CPU at a {args.interval:g} s interval, scraped every 15 s: {ratio * 100:.3f} % of a core "
          "(target < 1 % at 10 s)")  # fmt: skip
    for problem in problems:
        print(f"FAIL {problem}")
    print("gpu check:", "FAILED" if problems else "passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
