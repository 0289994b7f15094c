"""Node role: GPUs and MIG devices through NVML (`pynvml`), polled on worker threads.

NVML calls block, so each device is read on a worker thread and the event loop waits with a
timeout: a device whose read hangs is marked down (`ml_gpu_up 0`, its measurements removed)
and is not asked again until that read returns. A lost GPU (`NVMLError_GpuIsLost`) is marked
down the same way, never served with frozen values, and NVML is re-initialised with backoff
until the device answers again. XID events arrive on a thread of their own that waits on an
NVML event set; every event is counted, per XID code.

What NVML cannot report for a device (utilisation of a MIG device, power of a GPU without a
sensor, ...) is absent, not zero, and is not asked for again until the next initialisation.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pynvml

from exporter import catalogue as c
from exporter.config import Config
from exporter.exposition import Family
from exporter.health import HealthRegistry
from exporter.store import Store

log = logging.getLogger(__name__)

# nvmlClocksEventReason* bits (nvml.h), as fixed label values of ml_gpu_clock_throttle_reasons.
THROTTLE_REASONS = (
    ("gpu_idle", 0x1),
    ("applications_clocks_setting", 0x2),
    ("sw_power_cap", 0x4),
    ("hw_slowdown", 0x8),
    ("sync_boost", 0x10),
    ("sw_thermal_slowdown", 0x20),
    ("hw_thermal_slowdown", 0x40),
    ("hw_power_brake_slowdown", 0x80),
    ("display_clock_setting", 0x100),
)
ECC_TYPES = (
    ("corrected", pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED),
    ("uncorrected", pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
)
AGGREGATE = pynvml.NVML_AGGREGATE_ECC  # lifetime counts: they survive driver reloads, so they are counters
MAX_BACKOFF = 60.0
WORKERS = 8  # threads for NVML reads; each device stuck in a call holds one
_MIG_PROFILE = re.compile(r"\bMIG\s+(\S+)")
_POD_UID = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
_CONTAINER_ID = re.compile(r"(?:[a-z]+-)?([0-9a-f]{64})(?:\.scope)?$")


class NvmlUnavailable(Exception):
    """NVML could not be initialised: no library, no driver, no permission."""


class GpuLost(Exception):
    pass


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _handle_key(handle: Any) -> int:
    return int(ctypes.cast(handle, ctypes.c_void_p).value or 0)


@dataclass(eq=False)
class Device:
    """One GPU or MIG device as NVML enumerated it."""

    handle: Any
    gpu: str  # NVML index of the physical GPU
    uuid: str
    model: str
    pci_bus_id: str
    parent_uuid: str
    mig_profile: str = ""
    gpu_instance: str = ""
    is_mig: bool = False
    mig_enabled: bool = False  # a physical GPU in MIG mode: memory is reported by its MIG devices
    unsupported: set[str] = field(default_factory=set)
    stuck: Batch | None = None  # an abandoned batch whose read of this device had not returned
    info: str = ""  # its ml_gpu_info line, rendered once per initialisation
    down: str = ""  # why the device is down ("lost", "timeout", "error"), or ""

    @property
    def hung(self) -> bool:
        return self.stuck is not None and self.stuck.current is self


class Batch:
    """Devices read one after another on one worker thread: one thread hand-off per poll.

    When the poll gives up waiting, the batch is abandoned: the device it is stuck on is the hung
    one, and the thread stops after that read returns, whenever that is."""

    def __init__(self, nvml: Nvml, devices: list[Device]) -> None:
        self.nvml = nvml
        self.devices = devices
        self.current: Device | None = None
        self.results: dict[Device, dict[Family, str] | Exception] = {}
        self.abandoned = False

    def run(self) -> None:
        for device in self.devices:
            if self.abandoned:
                break
            self.current = device
            try:
                self.results[device] = self.nvml.read(device)
            except Exception as exc:  # handed to the event loop as the device's result
                self.results[device] = exc
        self.current = None


def container_of(procfs: str, pid: int) -> tuple[str, str]:
    """(pod UID, container ID) of a process from its cgroup path; ("", "") outside a pod."""
    try:
        with open(os.path.join(procfs, str(pid), "cgroup"), encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return "", ""
    for line in lines:
        path = line.split(":", 2)[-1]
        pod = _POD_UID.search(path)
        if pod:
            container = _CONTAINER_ID.search(path.rstrip("/").rsplit("/", 1)[-1])
            return pod.group(1).replace("_", "-"), container.group(1) if container else ""
    return "", ""


class Nvml:
    """The blocking NVML calls. Every method runs on a worker thread."""

    def __init__(self, node: str, procfs: str, process_memory: bool) -> None:
        self.node = node
        self.procfs = procfs
        self.process_memory = process_memory
        self.driver = ""
        self.errors: Counter[str] = Counter()  # calls that failed for another reason than "not supported"

    def init(self) -> list[Device]:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise NvmlUnavailable(_text(str(exc))) from None
        self.driver = _text(pynvml.nvmlSystemGetDriverVersion())
        devices: list[Device] = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            try:
                devices.extend(self._enumerate(index))
            except pynvml.NVMLError as exc:  # e.g. lost: it stays down until a later initialisation finds it
                log.warning("GPU %d could not be enumerated: %s", index, exc)
        return devices

    def _enumerate(self, index: int) -> list[Device]:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
        model = _text(pynvml.nvmlDeviceGetName(handle))
        pci = _text(pynvml.nvmlDeviceGetPciInfo(handle).busId)
        gpu = Device(handle, str(index), uuid, model, pci, uuid)
        with contextlib.suppress(pynvml.NVMLError):  # not MIG-capable
            gpu.mig_enabled = pynvml.nvmlDeviceGetMigMode(handle)[0] == pynvml.NVML_DEVICE_MIG_ENABLE
        devices = [gpu]
        if gpu.mig_enabled:
            for slot in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
                try:
                    mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
                except pynvml.NVMLError_NotFound:
                    continue
                name = _text(pynvml.nvmlDeviceGetName(mig))
                profile = _MIG_PROFILE.search(name)
                mig_uuid = _text(pynvml.nvmlDeviceGetUUID(mig))
                instance = str(pynvml.nvmlDeviceGetGpuInstanceId(mig))
                profile_name = profile.group(1) if profile else name
                devices.append(Device(mig, str(index), mig_uuid, model, pci, uuid, profile_name, instance, True))
        return devices

    def shutdown(self) -> None:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()

    def info(self, device: Device) -> str:
        values = (self.node, device.gpu, device.uuid, device.model, device.pci_bus_id, self.driver,
                  device.mig_profile, device.parent_uuid, device.gpu_instance)  # fmt: skip
        return c.GPU_INFO.sample(values, 1)

    def read(self, device: Device) -> dict[Family, str]:
        """Every measurement of one device, rendered. Raises GpuLost."""
        labels = (self.node, device.gpu, device.uuid)
        out: dict[Family, str] = {}

        def take(what: str, call: Callable[[], Any]) -> Any:
            if what in device.unsupported:
                return None
            try:
                return call()
            except pynvml.NVMLError_GpuIsLost:
                raise GpuLost(device.uuid) from None
            except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound):
                device.unsupported.add(what)
            except pynvml.NVMLError as exc:
                self.errors[f"{what}: {exc}"] += 1
            return None

        def put(family: Family, value: float | None) -> None:
            if value is not None:
                out[family] = family.sample(labels, value)

        handle = device.handle
        if not device.mig_enabled:  # a MIG-enabled GPU's memory and utilisation belong to its MIG devices
            memory = take("memory", lambda: pynvml.nvmlDeviceGetMemoryInfo(handle))
            if memory is not None:
                put(c.GPU_MEMORY_USED, memory.used)
                put(c.GPU_MEMORY_TOTAL, memory.total)
            if not device.is_mig:
                rates = take("utilization", lambda: pynvml.nvmlDeviceGetUtilizationRates(handle))
                if rates is not None:
                    put(c.GPU_UTILIZATION, rates.gpu / 100)
                    put(c.GPU_MEMORY_UTILIZATION, rates.memory / 100)
        if device.is_mig:  # power, clocks, temperature and errors are the physical GPU's
            return out
        power = take("power", lambda: pynvml.nvmlDeviceGetPowerUsage(handle))
        put(c.GPU_POWER, None if power is None else power / 1000)
        energy = take("energy", lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        put(c.GPU_ENERGY, None if energy is None else energy / 1000)
        put(c.GPU_TEMPERATURE, take("temperature", lambda: pynvml.nvmlDeviceGetTemperature(handle, 0)))
        clock = take("clock", lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM))
        put(c.GPU_SM_CLOCK, None if clock is None else clock * 1e6)
        ecc = {
            kind: take("ecc", lambda t=error_type: pynvml.nvmlDeviceGetTotalEccErrors(handle, t, AGGREGATE))  # type: ignore[misc]
            for kind, error_type in ECC_TYPES
        }
        out[c.GPU_ECC_ERRORS] = "".join(
            c.GPU_ECC_ERRORS.sample((*labels, k), v) for k, v in ecc.items() if v is not None
        )
        reasons = take("throttle", lambda: self._throttle_reasons(handle))
        if reasons is not None:
            out[c.GPU_THROTTLE] = "".join(
                c.GPU_THROTTLE.sample((*labels, name), 1 if reasons & bit else 0) for name, bit in THROTTLE_REASONS
            )
        if self.process_memory:
            processes = take("processes", lambda: pynvml.nvmlDeviceGetComputeRunningProcesses(handle))
            if processes:
                per_container: Counter[tuple[str, str]] = Counter()
                for process in processes:
                    per_container[container_of(self.procfs, process.pid)] += process.usedGpuMemory or 0
                out[c.GPU_PROCESS_MEMORY] = "".join(
                    c.GPU_PROCESS_MEMORY.sample((*labels, uid, cid), used)
                    for (uid, cid), used in sorted(per_container.items())
                )
        return out

    @staticmethod
    def _throttle_reasons(handle: Any) -> int:
        try:
            return int(pynvml.nvmlDeviceGetCurrentClocksEventReasons(handle))
        except pynvml.NVMLError_FunctionNotFound:  # drivers before 535 only know the older name
            return int(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle))


class XidListener:
    """Waits on an NVML event set on its own thread and counts XID errors per device and code."""

    def __init__(self, devices: list[Device]) -> None:
        self.counts: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()
        self.rebind(devices)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="nvml-xid", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def rebind(self, devices: list[Device]) -> None:
        """The devices (new handles) of a fresh NVML initialisation."""
        self._by_handle = {_handle_key(d.handle): d.uuid for d in devices if not d.is_mig}
        self._devices = [d for d in devices if not d.is_mig]

    def snapshot(self, uuid: str) -> list[tuple[int, int]]:
        with self._lock:
            return sorted((code, n) for (u, code), n in self.counts.items() if u == uuid)

    def _run(self) -> None:
        try:
            events = pynvml.nvmlEventSetCreate()
        except pynvml.NVMLError as exc:
            log.warning("XID events unavailable: %s", exc)
            return
        registered = 0
        for device in self._devices:
            try:
                pynvml.nvmlDeviceRegisterEvents(device.handle, pynvml.nvmlEventTypeXidCriticalError, events)
                registered += 1
            except pynvml.NVMLError as exc:
                log.info("no XID events from GPU %s: %s", device.gpu, exc)
        while registered and not self._stop.is_set():
            try:
                data = pynvml.nvmlEventSetWait(events, 500)
            except pynvml.NVMLError_Timeout:
                continue
            except pynvml.NVMLError as exc:
                log.debug("XID wait: %s", exc)
                self._stop.wait(1)
                continue
            if data.eventType & pynvml.nvmlEventTypeXidCriticalError:
                uuid = self._by_handle.get(_handle_key(data.device))
                if uuid is not None:
                    with self._lock:
                        self.counts[uuid, int(data.eventData)] += 1
        pynvml.nvmlEventSetFree(events)


class GpuSource:
    name = "nvml"

    def __init__(self, store: Store, registry: HealthRegistry, options: Config, node: str) -> None:
        self.store = store
        self.options = options
        self.health = registry.source(self.name).resource("devices")
        self.nvml = Nvml(node, options.path_procfs, options.nvml_process_memory)
        self.devices: dict[str, Device] = {}  # uuid -> device, every device ever seen on this node
        self.xids: XidListener | None = None
        self.initialised = False
        self.reinitializations = 0
        self.poll_seconds = 0.0
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="nvml")
        self._batches: set[concurrent.futures.Future[None]] = set()  # submitted and not yet returned
        self._backoff = 1.0
        self._retry_at = 0.0

    async def run(self) -> None:
        try:
            while True:
                if not self.initialised and time.monotonic() >= self._retry_at:
                    await self._initialise()
                if self.initialised:
                    await self.poll()
                    if any(d.down == "lost" for d in self.devices.values()) and time.monotonic() >= self._retry_at:
                        await self._reinitialise()
                self._render_self()
                await asyncio.sleep(self.options.nvml_interval)
        finally:
            if self.xids is not None:
                self.xids.stop()
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _initialise(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            found = await asyncio.wait_for(loop.run_in_executor(self._pool, self.nvml.init), self.options.nvml_timeout)
        except (NvmlUnavailable, TimeoutError) as exc:
            reason = str(exc) or "initialisation timed out"
            if self.health.up or not self.health.synced:
                log.error("NVML is unavailable on this node (%s); serving self metrics only, retrying", reason)
            self.health.errors["init_" + re.sub(r"\W+", "_", reason.lower()).strip("_")] += 1
            self._fail()
            return
        self.initialised = True
        self._backoff = 1.0
        for device in found:
            known = self.devices.get(device.uuid)
            if known is not None and known.hung:
                continue  # it comes back when its read returns
            device.down = ""
            device.info = self.nvml.info(device)
            self.devices[device.uuid] = device
            self.store.put(self._key(device), {c.GPU_INFO: device.info})
        if not found:
            log.error("NVML found no GPU on this node; serving self metrics only")
        if self.xids is None:
            self.xids = XidListener(list(self.devices.values()))
        else:
            self.xids.rebind(list(self.devices.values()))
        self.xids.start()
        self.health.up = bool(found)
        self.health.synced = True
        log.info("NVML %s: %d device(s) %s", self.nvml.driver, len(found), ", ".join(d.uuid for d in found))

    async def _reinitialise(self) -> None:
        """Shut NVML down and start it again, so that a GPU that came back is found."""
        if any(d.hung for d in self.devices.values()):
            return  # never pull NVML from under a call that has not returned
        self.reinitializations += 1
        if self.xids is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.xids.stop)
        await asyncio.get_running_loop().run_in_executor(self._pool, self.nvml.shutdown)
        self.initialised = False
        await self._initialise()
        if any(d.down == "lost" for d in self.devices.values()):
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, MAX_BACKOFF)

    def _fail(self) -> None:
        self.health.up = False
        self.health.synced = True  # ready: the answer is "no GPUs here", served as source up 0
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)

    async def poll(self) -> None:
        """Read every device but the lost and the hung; a read that hangs is given up on, and the
        devices after it are read again in a new batch, so one hung GPU does not stall the rest."""
        started = time.perf_counter()
        todo = [d for d in self.devices.values() if d.down != "lost" and not d.hung]
        while todo:
            self._batches = {f for f in self._batches if not f.done()}
            if len(self._batches) >= WORKERS - 1:  # keep a thread for (re)initialisation
                for device in todo:  # every thread is stuck in NVML: the driver is wedged
                    self._mark_down(device, "timeout")
                self.health.errors["timeout"] += len(todo)
                break
            batch = Batch(self.nvml, todo)
            submitted = self._pool.submit(batch.run)
            self._batches.add(submitted)
            future = asyncio.wrap_future(submitted)
            done, _ = await asyncio.wait([future], timeout=self.options.nvml_timeout)
            if not done:
                batch.abandoned = True
            results = dict(batch.results)
            for device, result in results.items():
                self._take(device, result)
            stuck = None if done else batch.current
            if stuck is None:
                break
            stuck.stuck = batch
            self.health.errors["timeout"] += 1
            if stuck.down != "timeout":
                log.warning("GPU %s (%s): NVML read still running after %ss", stuck.gpu, stuck.uuid,
                            self.options.nvml_timeout)  # fmt: skip
            self._mark_down(stuck, "timeout")
            todo = [d for d in todo if d not in results and d is not stuck]
        for what, count in self.nvml.errors.items():
            log.warning("NVML call failed %d time(s): %s", count, what)
            self.health.errors["call_error"] += count
        self.nvml.errors.clear()
        self.poll_seconds = time.perf_counter() - started
        self.health.tracked = sum(1 for d in self.devices.values() if not d.down)
        self.health.last_sync = time.time()

    def _take(self, device: Device, result: dict[Family, str] | Exception) -> None:
        if isinstance(result, GpuLost):
            self.health.errors["gpu_lost"] += 1
            log.error("GPU %s (%s) is lost; re-initialising NVML", device.gpu, device.uuid)
            self._mark_down(device, "lost")
            self._retry_at = min(self._retry_at, time.monotonic())
        elif isinstance(result, Exception):
            self.health.errors["read_error"] += 1
            log.error("GPU %s: %s", device.uuid, result)
            self._mark_down(device, "error")
        else:
            device.down = ""
            self.store.put(self._key(device), self._render(device, result))

    def _render(self, device: Device, readings: dict[Family, str]) -> dict[Family, str]:
        labels = (self.nvml.node, device.gpu, device.uuid)
        rendered = {c.GPU_INFO: device.info, c.GPU_UP: c.GPU_UP.sample(labels, 0 if device.down else 1)}
        if self.xids is not None and not device.is_mig:
            rendered[c.GPU_XID_ERRORS] = "".join(
                c.GPU_XID_ERRORS.sample((*labels, str(code)), n) for code, n in self.xids.snapshot(device.uuid)
            )
        if not device.down:
            rendered.update(readings)
        return rendered

    def _mark_down(self, device: Device, reason: str) -> None:
        """Up 0; the identity and the XID counts stay (they explain the loss), measurements go."""
        device.down = reason
        self.store.put(self._key(device), self._render(device, {}))

    def _render_self(self) -> None:
        self.store.put(
            "_self/nvml",
            {
                c.GPU_POLL_DURATION: c.GPU_POLL_DURATION.sample((), self.poll_seconds),
                c.GPU_REINITIALIZATIONS: c.GPU_REINITIALIZATIONS.sample((), self.reinitializations),
            },
        )

    @staticmethod
    def _key(device: Device) -> str:
        return f"gpu/{device.uuid}"
