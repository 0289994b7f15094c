"""The node role as a real process: the real pynvml binding loading a stub libnvidia-ml.so.1
built with gcc for this session, and a real gRPC PodResources server on a unix socket."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.emulator import nvml as stub
from exporter.emulator.podresources import Allocation, PodResourcesServer
from exporter.pack import ROOT
from exporter.pack import local as harness
from exporter.sources.nvml import container_of
from exporter.sources.podresources import device_uuid

GIB = 2**30
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
ALLOCATIONS: list[Allocation] = [
    ("team-a", "bert-master-0", "trainer", "nvidia.com/gpu", ("GPU-aaaa",)),
    ("team-b", "ray-head", "ray", "nvidia.com/mig-1g.5gb", ("MIG-1111",)),
    ("team-c", "nb-0", "notebook", "nvidia.com/gpu.shared", ("GPU-aaaa::1", "GPU-aaaa::2")),
    ("team-c", "nb-0", "notebook", "example.com/fpga", ("fpga-0",)),
]


def two_gpus_and_mig() -> stub.StubNvml:
    """GPU-aaaa a whole GPU; GPU-bbbb in MIG mode with two MIG devices."""
    whole = stub.StubGpu("GPU-aaaa", pci_bus_id="00000000:07:00.0", utilization=75, memory_utilization=40,
                         memory_used=10 * GIB, power_mw=312_500, energy_mj=9_000_000, temperature=61,
                         sm_clock_mhz=1410, ecc_corrected=3, throttle=0x4)  # fmt: skip
    slices = [stub.StubMig("MIG-1111", "1g.5gb", 1),
              stub.StubMig("MIG-2222", "2g.10gb", 2, memory_used=3 * GIB, memory_total=10 * GIB)]  # fmt: skip
    mig = stub.StubGpu("GPU-bbbb", pci_bus_id="00000000:0F:00.0", power_mw=90_000, mig=slices)
    return stub.StubNvml(gpus=[whole, mig])


def parse(body: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out[sample.name, frozenset(sample.labels.items())] = sample.value
    return out


def find(samples: Samples, name: str, **labels: str) -> float | None:
    for (sample, pairs), value in samples.items():
        if sample == name and set(labels.items()) <= pairs:
            return value
    return None


def count(samples: Samples, name: str, **labels: str) -> int:
    return sum(1 for (sample, pairs) in samples if sample == name and set(labels.items()) <= pairs)


class Agent:
    def __init__(self, url: str, config: Path, script: stub.StubNvml, kubelet: PodResourcesServer, log: Path) -> None:
        self.url, self.config, self.script, self.kubelet, self.log = url, config, script, kubelet, log

    def write(self) -> None:
        self.script.write(self.config)

    def body(self) -> str:
        status, body = harness.http_get(self.url + "/metrics")
        assert status == 200
        return body.decode()

    def samples(self) -> Samples:
        return parse(self.body())

    def until(self, check: Callable[[Samples], object], what: str, timeout: float = 20) -> Samples:
        return harness.eventually(lambda: (lambda s: s if check(s) else None)(self.samples()), what, timeout)


@pytest.fixture(scope="session")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stub.build(tmp_path_factory.mktemp("nvml-stub"))


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[PodResourcesServer]:
    allocations = list(ALLOCATIONS)
    server = PodResourcesServer(tmp_path / "kubelet.sock", lambda: allocations)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def start_agent(tmp_path: Path, library: Path, kubelet: PodResourcesServer) -> Iterator[Callable[..., Agent]]:
    """Start the node role on `script` (default: two GPUs, one in MIG mode) with extra flags."""
    with contextlib.ExitStack() as stack:

        def start(script: stub.StubNvml | None = None, *extra: str, library_dir: Path | None = library) -> Agent:
            script = script or two_gpus_and_mig()
            config = tmp_path / "nvml.conf"
            script.write(config)
            url = stack.enter_context(
                harness.node_agent(tmp_path, config, kubelet.socket, *extra, library_dir=library_dir)
            ).url
            return Agent(url, config, script, kubelet, tmp_path / "node-agent-gpu-node-1.log")

        yield start


def test_every_gpu_family_with_mig_and_pod_mapping(start_agent: Callable[..., Agent]) -> None:
    agent = start_agent()
    samples = agent.until(lambda s: find(s, "ml_gpu_allocation_info"), "allocations")
    a = {"node": "gpu-node-1", "gpu": "0", "uuid": "GPU-aaaa"}
    assert find(samples, "ml_gpu_up", **a) == 1
    assert find(samples, "ml_gpu_utilization_ratio", **a) == 0.75
    assert find(samples, "ml_gpu_memory_utilization_ratio", **a) == 0.4
    assert find(samples, "ml_gpu_memory_used_bytes", **a) == 10 * GIB
    assert find(samples, "ml_gpu_memory_total_bytes", **a) == 40 * GIB
    assert find(samples, "ml_gpu_power_watts", **a) == 312.5
    assert find(samples, "ml_gpu_energy_joules_total", **a) == 9000
    assert find(samples, "ml_gpu_temperature_celsius", **a) == 61
    assert find(samples, "ml_gpu_sm_clock_hertz", **a) == 1.41e9
    assert find(samples, "ml_gpu_ecc_errors_total", **a, type="corrected") == 3
    assert find(samples, "ml_gpu_clock_throttle_reasons", **a, reason="sw_power_cap") == 1
    assert find(samples, "ml_gpu_clock_throttle_reasons", **a, reason="hw_slowdown") == 0
    info = {
        k: v
        for (name, pairs), _ in samples.items()
        if name == "ml_gpu_info"
        for k, v in pairs
        if ("uuid", "GPU-aaaa") in pairs
    }
    assert info["model"] == "NVIDIA A100-SXM4-40GB" and info["pci_bus_id"] == "00000000:07:00.0"
    assert info["driver_version"] == "550.54.15" and info["parent_uuid"] == "GPU-aaaa" and info["mig_profile"] == ""

    # MIG: each MIG device is a device of its own; what NVML cannot measure on MIG is absent, not 0.
    mig = {"gpu": "1", "uuid": "MIG-2222"}
    assert find(samples, "ml_gpu_info", **mig, mig_profile="2g.10gb", parent_uuid="GPU-bbbb", gpu_instance="2") == 1
    assert find(samples, "ml_gpu_memory_used_bytes", **mig) == 3 * GIB
    assert find(samples, "ml_gpu_memory_total_bytes", **mig) == 10 * GIB
    assert find(samples, "ml_gpu_utilization_ratio", **mig) is None
    assert find(samples, "ml_gpu_power_watts", **mig) is None
    # The MIG-enabled GPU: power and temperature are its own; memory only per MIG device (no double count).
    assert find(samples, "ml_gpu_power_watts", uuid="GPU-bbbb") == 90
    assert find(samples, "ml_gpu_memory_used_bytes", uuid="GPU-bbbb") is None
    assert find(samples, "ml_gpu_utilization_ratio", uuid="GPU-bbbb") is None

    # PodResources: GPU resources only; a time-sliced GPU once per container, its replica suffix dropped.
    allocations = {
        (dict(p)["pod"], dict(p)["uuid"], dict(p)["resource"]) for (n, p) in samples if n == "ml_gpu_allocation_info"
    }
    assert allocations == {
        ("bert-master-0", "GPU-aaaa", "nvidia.com/gpu"),
        ("ray-head", "MIG-1111", "nvidia.com/mig-1g.5gb"),
        ("nb-0", "GPU-aaaa", "nvidia.com/gpu.shared"),
    }
    assert find(samples, "ml_gpu_allocation_info", pod="bert-master-0", namespace="team-a", container="trainer",
                node="gpu-node-1") == 1  # fmt: skip
    assert find(samples, "ml_exporter_source_up", source="nvml") == 1
    assert find(samples, "ml_exporter_source_up", source="podresources") == 1
    assert find(samples, "ml_exporter_build_info", role="node") == 1
    assert harness.http_get(agent.url + "/readyz")[0] == 200
    check = subprocess.run(["promtool", "check", "metrics"], input=agent.body(), capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_xid_errors_count_every_event_per_code(start_agent: Callable[..., Agent]) -> None:
    agent = start_agent()
    agent.until(lambda s: find(s, "ml_gpu_up", uuid="GPU-aaaa"), "first poll")
    agent.script.xids += [(0, 79), (0, 79), (0, 48), (1, 31)]
    agent.write()
    samples = agent.until(lambda s: find(s, "ml_gpu_xid_errors_total", uuid="GPU-bbbb", xid="31"), "XID 31")
    assert find(samples, "ml_gpu_xid_errors_total", uuid="GPU-aaaa", xid="79") == 2
    assert find(samples, "ml_gpu_xid_errors_total", uuid="GPU-aaaa", xid="48") == 1


def test_lost_gpu_is_down_without_stale_values_and_comes_back(start_agent: Callable[..., Agent]) -> None:
    agent = start_agent()
    agent.until(lambda s: find(s, "ml_gpu_utilization_ratio", uuid="GPU-aaaa"), "first poll")
    agent.script.gpus[0].lost = True
    agent.script.xids.append((0, 79))  # "GPU has fallen off the bus"
    agent.write()
    samples = agent.until(lambda s: find(s, "ml_gpu_up", uuid="GPU-aaaa") == 0, "GPU-aaaa down")
    for family in (
        "ml_gpu_utilization_ratio",
        "ml_gpu_memory_used_bytes",
        "ml_gpu_power_watts",
        "ml_gpu_temperature_celsius",
    ):
        assert find(samples, family, uuid="GPU-aaaa") is None, family
    assert find(samples, "ml_gpu_info", uuid="GPU-aaaa") == 1  # which GPU is gone stays visible
    assert find(samples, "ml_gpu_up", uuid="MIG-2222") == 1  # the other GPU is untouched
    assert find(samples, "ml_gpu_memory_used_bytes", uuid="MIG-2222") == 3 * GIB
    assert find(samples, "ml_exporter_api_errors_total", source="nvml", reason="gpu_lost") >= 1  # type: ignore[operator]
    samples = agent.until(
        lambda s: (find(s, "ml_exporter_nvml_reinitializations_total") or 0) >= 1, "re-initialisation"
    )

    agent.script.gpus[0].lost = False
    agent.script.gpus[0].utilization = 10
    agent.write()
    samples = agent.until(lambda s: find(s, "ml_gpu_utilization_ratio", uuid="GPU-aaaa") == 0.1, "GPU-aaaa back", 30)
    assert find(samples, "ml_gpu_up", uuid="GPU-aaaa") == 1


def test_hung_nvml_call_times_out_and_is_counted(start_agent: Callable[..., Agent]) -> None:
    agent = start_agent(None, "--nvml.timeout", "0.5")
    agent.until(lambda s: find(s, "ml_gpu_up", uuid="GPU-aaaa") == 1, "first poll")
    agent.script.gpus[0].hang_ms = 2000
    agent.script.gpus[1].mig[1].memory_used = 4 * GIB
    agent.write()
    samples = agent.until(lambda s: find(s, "ml_gpu_up", uuid="GPU-aaaa") == 0, "hung GPU down")
    assert find(samples, "ml_gpu_utilization_ratio", uuid="GPU-aaaa") is None
    assert (find(samples, "ml_exporter_api_errors_total", source="nvml", reason="timeout") or 0) >= 1
    # The other GPU keeps being polled while GPU-aaaa's read hangs.
    agent.until(lambda s: find(s, "ml_gpu_memory_used_bytes", uuid="MIG-2222") == 4 * GIB, "fresh values elsewhere")
    agent.script.gpus[0].hang_ms = 0
    agent.write()
    agent.until(lambda s: find(s, "ml_gpu_up", uuid="GPU-aaaa") == 1, "GPU-aaaa answering again")


@pytest.mark.parametrize(
    ("script", "library_dir", "message"),
    [
        (stub.StubNvml(gpus=[stub.StubGpu("GPU-x")]), None, "NVML Shared Library Not Found"),
        (stub.StubNvml(gpus=[stub.StubGpu("GPU-x")], no_driver=True), "stub", "Driver Not Loaded"),
        (stub.StubNvml(gpus=[]), "stub", "found no GPU"),
    ],
    ids=["no-library", "no-driver", "no-gpu"],
)
def test_without_a_usable_gpu_it_keeps_serving_with_source_down(
    start_agent: Callable[..., Agent], library: Path, script: stub.StubNvml, library_dir: str | None, message: str
) -> None:
    agent = start_agent(script, library_dir=library if library_dir else None)
    time.sleep(1)  # several polls and retries: it must not crash or flap
    samples = agent.samples()
    assert find(samples, "ml_exporter_source_up", source="nvml") == 0
    assert find(samples, "ml_exporter_source_up", source="podresources") == 1
    assert count(samples, "ml_gpu_up") == 0
    assert find(samples, "process_cpu_seconds_total") is not None
    assert harness.http_get(agent.url + "/readyz")[0] == 200  # no crash loop, no readiness flapping
    assert message in agent.log.read_text()


def test_kubelet_restart_keeps_attribution_and_reconnects(
    start_agent: Callable[..., Agent], kubelet: PodResourcesServer
) -> None:
    agent = start_agent()
    agent.until(lambda s: count(s, "ml_gpu_allocation_info") == 3, "allocations")
    kubelet.stop()
    samples = agent.until(lambda s: find(s, "ml_exporter_source_up", source="podresources") == 0, "source down")
    assert count(samples, "ml_gpu_allocation_info") == 3  # held while the kubelet restarts
    assert (find(samples, "ml_exporter_api_errors_total", source="podresources", reason="unavailable") or 0) >= 1
    ALLOCATIONS_AFTER: list[Allocation] = [("team-a", "llama-0", "trainer", "nvidia.com/gpu", ("GPU-aaaa",))]
    restarted = PodResourcesServer(kubelet.socket, lambda: ALLOCATIONS_AFTER)
    restarted.start()
    try:
        samples = agent.until(lambda s: find(s, "ml_gpu_allocation_info", pod="llama-0"), "reconnect", 30)
        assert count(samples, "ml_gpu_allocation_info") == 1
        assert find(samples, "ml_exporter_source_up", source="podresources") == 1
    finally:
        restarted.stop()


def test_unsupported_fields_are_absent_not_zero(start_agent: Callable[..., Agent]) -> None:
    script = stub.StubNvml(gpus=[stub.StubGpu("GPU-c", utilization=50, unsupported=("power", "temp", "ecc", "energy"))])
    agent = start_agent(script)
    samples = agent.until(lambda s: find(s, "ml_gpu_utilization_ratio", uuid="GPU-c"), "first poll")
    for family in (
        "ml_gpu_power_watts",
        "ml_gpu_temperature_celsius",
        "ml_gpu_ecc_errors_total",
        "ml_gpu_energy_joules_total",
    ):
        assert find(samples, family, uuid="GPU-c") is None, family
    assert find(samples, "ml_gpu_sm_clock_hertz", uuid="GPU-c") == 1.41e9
    assert find(samples, "ml_exporter_api_errors_total", source="nvml") is None  # not supported is not an error


def test_process_memory_per_container_from_cgroups(start_agent: Callable[..., Agent], tmp_path: Path) -> None:
    uid = "0f3c6a4e-9b1d-4c2e-8f00-112233445566"
    cid = "a" * 64
    procfs = tmp_path / "proc"
    for pid, cgroup in (
        (101, f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid.replace('-', '_')}.slice/"
              f"cri-containerd-{cid}.scope\n"),
        (102, f"12:memory:/kubepods/burstable/pod{uid}/{cid}\n11:cpu:/kubepods/burstable/pod{uid}/{cid}\n"),
        (103, "0::/system.slice/sshd.service\n"),
    ):  # fmt: skip
        (procfs / str(pid)).mkdir(parents=True)
        (procfs / str(pid) / "cgroup").write_text(cgroup)
    script = two_gpus_and_mig()
    script.processes = [(0, 101, 2 * GIB), (0, 102, 1 * GIB), (0, 103, GIB // 2), (0, 999, GIB // 4)]
    agent = start_agent(script, "--nvml.process-memory", "true", "--path.procfs", str(procfs))
    samples = agent.until(lambda s: find(s, "ml_gpu_process_memory_used_bytes"), "process memory")
    assert find(samples, "ml_gpu_process_memory_used_bytes", uuid="GPU-aaaa", pod_uid=uid, container_id=cid) == 3 * GIB
    # Processes outside any pod (and ones already gone from /proc) are summed under empty labels.
    assert find(samples, "ml_gpu_process_memory_used_bytes", uuid="GPU-aaaa", pod_uid="", container_id="") == GIB * 0.75


def test_process_memory_is_off_by_default(start_agent: Callable[..., Agent]) -> None:
    script = two_gpus_and_mig()
    script.processes = [(0, 101, GIB)]
    agent = start_agent(script)
    samples = agent.until(lambda s: find(s, "ml_gpu_up", uuid="GPU-aaaa"), "first poll")
    assert count(samples, "ml_gpu_process_memory_used_bytes") == 0


def test_bad_node_flags_name_the_option() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--role", "node", "--nvml.interval", "often",
         "--podresources.resources", "("],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert "nvml.interval (flag --nvml.interval): 'often' is not a number of seconds" in result.stderr
    assert "podresources.resources (flag --podresources.resources)" in result.stderr


@pytest.mark.parametrize(
    ("cgroup", "expected"),
    [
        ("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b3c4d_0000_1111_2222_333344445555.slice/"
         "crio-" + "b" * 64 + ".scope", ("1a2b3c4d-0000-1111-2222-333344445555", "b" * 64)),
        ("4:devices:/kubepods/pod1a2b3c4d-0000-1111-2222-333344445555/" + "c" * 64,
         ("1a2b3c4d-0000-1111-2222-333344445555", "c" * 64)),
        ("0::/user.slice/user-1000.slice/session-3.scope", ("", "")),
    ],
)  # fmt: skip
def test_container_of_reads_cgroup_v1_and_v2(tmp_path: Path, cgroup: str, expected: tuple[str, str]) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cgroup").write_text(cgroup + "\n")
    assert container_of(str(tmp_path), 7) == expected
    assert container_of(str(tmp_path), 8) == ("", "")  # the process is gone


def test_device_ids_of_shared_gpus_are_the_gpu() -> None:
    assert device_uuid("GPU-1234::3") == "GPU-1234"
    assert device_uuid("MIG-5678") == "MIG-5678"


def test_generated_grpc_code_is_fresh(tmp_path: Path) -> None:
    proto = "exporter/podresources/api.proto"
    outputs = [f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}"]
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(ROOT), *outputs, str(ROOT / proto)], check=True
    )
    for name in ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py"):
        fresh = (tmp_path / "exporter" / "podresources" / name).read_text()
        assert fresh == (ROOT / "exporter" / "podresources" / name).read_text(), f"{name} is stale: make generate"


def test_gpu_check_script_passes_against_the_stub() -> None:
    """benchmarks/gpu_check.sh is what runs on a real GPU; against the stub it must pass too."""
    result = subprocess.run(
        [str(ROOT / "benchmarks" / "gpu_check.sh"), "--stub", "8", "--polls", "20", "--steady", "1", "--interval", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "gpu check: passed" in result.stdout
    assert 'ml_gpu_memory_used_bytes{node="gpu-check",gpu="7",uuid="MIG-00000008-b"}' in result.stdout
    assert "one poll of 10 devices: CPU p50" in result.stdout


def test_gpu_check_fails_on_impossible_values() -> None:
    from exporter.pack.gpu_check import check_ranges

    first = [("ml_gpu_energy_joules_total", {"uuid": "GPU-1"}, 500.0)]
    second = [
        ("ml_gpu_info", {"uuid": "GPU-1"}, 1.0),
        ("ml_gpu_utilization_ratio", {"uuid": "GPU-1"}, 1.7),
        ("ml_gpu_memory_used_bytes", {"uuid": "GPU-1"}, 5e10),
        ("ml_gpu_memory_total_bytes", {"uuid": "GPU-1"}, 4e10),
        ("ml_gpu_energy_joules_total", {"uuid": "GPU-1"}, 400.0),
        ("ml_exporter_source_up", {"source": "nvml"}, 1.0),
    ]
    problems = check_ranges(first, second)
    assert len(problems) == 3, problems
    assert any("outside [0, 1]" in p for p in problems)
    assert any("memory used" in p for p in problems) and any("went down" in p for p in problems)
