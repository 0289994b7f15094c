"""The stub NVML library (nvml_stub.c): build it with gcc and script its devices.

The node role loads it exactly as it loads the driver's library, through `pynvml`'s
`CDLL("libnvidia-ml.so.1")`: point `LD_LIBRARY_PATH` at the directory `build()` returns and
`NVML_STUB_CONFIG` at a file written by `StubNvml.write()`. The stub re-reads that file when it
changes, so a test or the demo can change utilisation, lose a GPU or raise an XID while the
agent runs.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import os
import subprocess
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

SOURCE = Path(__file__).with_name("nvml_stub.c")
LIBRARY = "libnvidia-ml.so.1"
GIB = 2**30


class StubBuildError(RuntimeError):
    pass


def header_dir() -> Path:
    """Where NVIDIA's nvml.h lies (the nvidia-nvml-dev wheel)."""
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    for root in roots:
        for header in sorted(glob.glob(os.path.join(root, "nvidia", "*", "include", "nvml.h"))):
            return Path(header).parent
    raise StubBuildError("nvml.h not found: install the nvidia-nvml-dev wheel (pip install -e '.[test]')")


def build(directory: Path) -> Path:
    """Compile the stub into `directory` (once per source version); returns the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    target, stamp = directory / LIBRARY, directory / f".{LIBRARY}.{digest}"
    if target.exists() and stamp.exists():
        return directory
    command = ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-Wno-deprecated-declarations",
               f"-I{header_dir()}", "-Wl,-soname," + LIBRARY, "-o", str(target), str(SOURCE), "-lpthread"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise StubBuildError(f"gcc failed building the NVML stub:\n{result.stderr}")
    stamp.touch()
    return directory


@dataclass
class StubMig:
    uuid: str
    profile: str = "1g.5gb"
    gpu_instance: int = 1
    compute_instance: int = 0
    memory_used: int = 1 * GIB
    memory_total: int = 5 * GIB


@dataclass
class StubGpu:
    uuid: str
    name: str = "NVIDIA A100-SXM4-40GB"
    pci_bus_id: str = "00000000:07:00.0"
    utilization: int = 0  # percent, as NVML reports it
    memory_utilization: int = 0
    memory_used: int = 0
    memory_total: int = 40 * GIB
    power_mw: int = 60_000
    energy_mj: int = 0
    temperature: int = 35
    sm_clock_mhz: int = 1410
    ecc_corrected: int = 0
    ecc_uncorrected: int = 0
    throttle: int = 0  # nvmlClocksEventReason* bits
    lost: bool = False
    hang_ms: int = 0
    unsupported: tuple[str, ...] = ()  # util, power, energy, temp, clock, ecc, throttle, memory, procs, events
    mig: list[StubMig] = field(default_factory=list)


@dataclass
class StubNvml:
    gpus: list[StubGpu] = field(default_factory=list)
    driver: str = "550.54.15"
    no_driver: bool = False
    xids: list[tuple[int, int]] = field(default_factory=list)  # (gpu index, XID code), in order of arrival
    processes: list[tuple[int, int, int]] = field(default_factory=list)  # (gpu index, pid, memory bytes)

    def render(self) -> str:
        lines = [f"driver {self.driver}"]
        if self.no_driver:
            lines.append("nodriver")
        for gpu in self.gpus:
            lines.append(
                f'gpu uuid={gpu.uuid} name="{gpu.name}" pci={gpu.pci_bus_id} util={gpu.utilization} '
                f"memutil={gpu.memory_utilization} mem_used={gpu.memory_used} mem_total={gpu.memory_total} "
                f"power_mw={gpu.power_mw} energy_mj={gpu.energy_mj} temp={gpu.temperature} sm_mhz={gpu.sm_clock_mhz} "
                f"ecc_corrected={gpu.ecc_corrected} ecc_uncorrected={gpu.ecc_uncorrected} throttle={gpu.throttle} "
                f"lost={int(gpu.lost)} hang_ms={gpu.hang_ms} unsupported={','.join(gpu.unsupported) or '-'}"
            )
        for index, gpu in enumerate(self.gpus):
            for mig in gpu.mig:
                lines.append(
                    f'mig parent={index} uuid={mig.uuid} name="{gpu.name} MIG {mig.profile}" '
                    f"gi={mig.gpu_instance} ci={mig.compute_instance} mem_used={mig.memory_used} "
                    f"mem_total={mig.memory_total}"
                )
        lines += [f"xid gpu={gpu} code={code}" for gpu, code in self.xids]
        lines += [f"proc gpu={gpu} pid={pid} mem={memory}" for gpu, pid, memory in self.processes]
        return "\n".join(lines) + "\n"

    def write(self, path: Path) -> None:
        """Replace the script atomically, so the stub never reads half a file."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.render())
        os.replace(tmp, path)


def load_in_process(directory: Path, script: StubNvml) -> tuple[Path, Path]:
    """Build the stub, script it, and load it into this process, so that pynvml's own
    `CDLL("libnvidia-ml.so.1")` finds it (by its soname). Returns (library dir, script file)."""
    library = build(directory / "stub")
    config = directory / "nvml.conf"
    script.write(config)
    os.environ["NVML_STUB_CONFIG"] = str(config)
    ctypes.CDLL(str(library / LIBRARY))
    return library, config


def environment(library_dir: Path, config: Path) -> dict[str, str]:
    """Environment variables that make a process load the stub with `config`."""
    search = os.pathsep.join(filter(None, [str(library_dir), os.environ.get("LD_LIBRARY_PATH", "")]))
    return {"LD_LIBRARY_PATH": search, "NVML_STUB_CONFIG": str(config)}
