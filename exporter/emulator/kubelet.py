"""A simulated kubelet/GPU-agent scrape target for the emulated cluster's running pods.

`/metrics/cadvisor` serves cAdvisor-shaped container series (CPU, memory, disk and
network bytes), `/metrics/kube-state-metrics` the pods' limits, `/metrics/dcgm` NVIDIA
dcgm-exporter's (utilisation in percent) for the GPUs this exporter's node agent does not cover
(the agent itself runs for real against the stub NVML: see gpunode.py). Rates and levels come from the pods'
`sim.ml-observability.io/*` annotations; counters grow with wall-clock time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from exporter.emulator.apiserver import ApiServer
from exporter.emulator.scenario import KINDS, SIM
from exporter.sources import parse_quantity, parse_time, resource_unit


def running_pods(api: ApiServer) -> Iterator[dict[str, Any]]:
    for pod in api.objects(KINDS["Pod"]):
        if (pod.get("status") or {}).get("phase") == "Running":
            yield pod


def gpus_of(pod: dict[str, Any]) -> list[tuple[str, float, str]]:
    spec = pod["metadata"].get("annotations", {}).get(SIM + "gpus", "")
    out = []
    for item in filter(None, spec.split(",")):
        uuid, _, rest = item.partition("=")
        value, _, source = rest.partition("@")
        out.append((uuid, float(value), source or "nvml"))
    return out


def cadvisor(api: ApiServer, now: float) -> str:
    lines = [
        "# TYPE container_cpu_usage_seconds_total counter",
        "# TYPE container_memory_working_set_bytes gauge",
    ]
    for pod in running_pods(api):
        meta = pod["metadata"]
        notes = meta.get("annotations", {})
        if SIM + "cpu-cores" not in notes:
            continue
        started = parse_time(pod["status"].get("startTime")) or now
        cores, memory = float(notes[SIM + "cpu-cores"]), float(notes[SIM + "memory-bytes"])
        base = f'namespace="{meta["namespace"]}",pod="{meta["name"]}"'
        cid = f'id="/kubepods/pod{meta["uid"]}'
        container = pod["spec"]["containers"][0]
        ctr = f'{base},container="{container["name"]}",image="{container["image"]}",{cid}/c1"'
        used = cores * max(now - started, 0.0)
        lines.append(f"container_cpu_usage_seconds_total{{{ctr}}} {used:.3f}")
        lines.append(f"container_memory_working_set_bytes{{{ctr}}} {memory:.0f}")
        elapsed = max(now - started, 0.0)
        for note, metric, where in (
            ("fs-read-bps", "container_fs_reads_bytes_total", ctr + ',device="/dev/vda"'),
            ("fs-write-bps", "container_fs_writes_bytes_total", ctr + ',device="/dev/vda"'),
            # Network counters belong to the pod sandbox, not to a container.
            ("net-rx-bps", "container_network_receive_bytes_total", f'{base},container="POD",interface="eth0"'),
            ("net-tx-bps", "container_network_transmit_bytes_total", f'{base},container="POD",interface="eth0"'),
        ):
            if SIM + note in notes:
                lines.append(f"{metric}{{{where}}} {float(notes[SIM + note]) * elapsed:.0f}")
        # The pod-level cgroup and the pause container, which rules must not add in again.
        lines.append(f'container_cpu_usage_seconds_total{{{base},container="",image="",{cid}"}} {used + 1:.3f}')
        lines.append(f'container_memory_working_set_bytes{{{base},container="",image="",{cid}"}} {memory:.0f}')
        lines.append(f'container_cpu_usage_seconds_total{{{base},container="POD",image="pause",{cid}/p"}} 0.5')
        lines.append(f'container_memory_working_set_bytes{{{base},container="POD",image="pause",{cid}/p"}} 1e6')
    return "\n".join(lines) + "\n"


def kube_state_metrics(api: ApiServer) -> str:
    """kube-state-metrics as it would describe the emulated nodes, pods and Deployments.

    Pod requests are the pods' simulated usage (CPU, memory, one GPU per simulated device)."""
    lines = []
    for node in api.objects(KINDS["Node"]):
        name = node["metadata"]["name"]
        for resource, quantity in node["status"]["allocatable"].items():
            unit = resource_unit(resource)
            lines.append(f'kube_node_status_allocatable{{node="{name}",resource="{resource}",unit="{unit}"}} '
                         f"{parse_quantity(quantity)}")  # fmt: skip
        for cond in node["status"]["conditions"]:
            for status in ("true", "false", "unknown"):
                value = 1 if cond["status"].lower() == status else 0
                lines.append(
                    f'kube_node_status_condition{{node="{name}",condition="{cond["type"]}",status="{status}"}} {value}'
                )
    for pod in api.objects(KINDS["Pod"]):
        meta, phase = pod["metadata"], (pod.get("status") or {}).get("phase", "Pending")
        ident = f'namespace="{meta["namespace"]}",pod="{meta["name"]}"'
        for p in ("Pending", "Running", "Succeeded", "Failed", "Unknown"):
            lines.append(f'kube_pod_status_phase{{{ident},phase="{p}"}} {1 if p == phase else 0}')
        notes = meta.get("annotations", {})
        node_name = pod["spec"].get("nodeName", "")
        requests = {"cpu": notes.get(SIM + "cpu-cores"), "memory": notes.get(SIM + "memory-bytes"),
                    "nvidia.com/gpu": len(gpus_of(pod)) or None}  # fmt: skip
        for resource, value in requests.items():
            if value:
                unit = resource_unit(resource)
                lines.append(f'kube_pod_container_resource_requests{{{ident},container="{pod["spec"]["containers"][0]["name"]}",'
                             f'node="{node_name}",resource="{resource}",unit="{unit}"}} {float(value)}')  # fmt: skip
    for deploy in api.objects(KINDS["Deployment"]):
        ident = f'namespace="{deploy["metadata"]["namespace"]}",deployment="{deploy["metadata"]["name"]}"'
        lines.append(f"kube_deployment_spec_replicas{{{ident}}} {deploy['spec']['replicas']}")
        lines.append(f"kube_deployment_status_replicas_available{{{ident}}} {deploy['status']['availableReplicas']}")
    for pod in running_pods(api):
        meta, node = pod["metadata"], pod["spec"].get("nodeName", "")
        for container in pod["spec"]["containers"]:
            for resource, quantity in ((container.get("resources") or {}).get("limits") or {}).items():
                unit = resource_unit(resource)
                lines.append(
                    f'kube_pod_container_resource_limits{{namespace="{meta["namespace"]}",pod="{meta["name"]}",'
                    f'container="{container["name"]}",node="{node}",resource="{resource}",unit="{unit}"}} '
                    f"{parse_quantity(quantity)}"
                )
    return "\n".join(lines) + "\n"


def node_exporter(api: ApiServer, now: float) -> str:
    """node-exporter: CPU busy = the simulated pods' cores on the node + 0.5; a quarter of memory free."""
    busy: dict[str, float] = {}
    for pod in running_pods(api):
        cores = pod["metadata"].get("annotations", {}).get(SIM + "cpu-cores")
        if cores:
            busy[pod["spec"].get("nodeName", "")] = busy.get(pod["spec"].get("nodeName", ""), 0.0) + float(cores)
    lines = []
    for node in api.objects(KINDS["Node"]):
        name = node["metadata"]["name"]
        memory = parse_quantity(node["status"]["allocatable"]["memory"])
        elapsed = now - api.started
        used = (busy.get(name, 0.0) + 0.5) * elapsed
        lines.append(f'node_cpu_seconds_total{{instance="{name}",cpu="0",mode="user"}} {used:.3f}')
        lines.append(f'node_cpu_seconds_total{{instance="{name}",cpu="0",mode="idle"}} {elapsed:.3f}')
        lines.append(f'node_memory_MemTotal_bytes{{instance="{name}"}} {memory:.0f}')
        lines.append(f'node_memory_MemAvailable_bytes{{instance="{name}"}} {memory / 4:.0f}')
    return "\n".join(lines) + "\n"


def kubelet_volumes(api: ApiServer) -> str:
    """kubelet volume stats: every running notebook has a 20 GiB workspace PVC, 5 GiB used."""
    lines = []
    for obj in api.objects(KINDS["Notebook"]):
        if (obj.get("status") or {}).get("readyReplicas"):
            ident = f'namespace="{obj["metadata"]["namespace"]}",persistentvolumeclaim="{obj["metadata"]["name"]}"'
            lines.append(f"kubelet_volume_stats_capacity_bytes{{{ident}}} {20 * 2**30}")
            lines.append(f"kubelet_volume_stats_used_bytes{{{ident}}} {5 * 2**30}")
    return "\n".join(lines) + "\n"


def dcgm(api: ApiServer) -> str:
    lines = ["# TYPE DCGM_FI_DEV_GPU_UTIL gauge"]
    for pod in running_pods(api):
        meta, node = pod["metadata"], pod["spec"].get("nodeName", "")
        for index, (uuid, value, source) in enumerate(gpus_of(pod)):
            if source in ("dcgm", "both"):
                lines.append(
                    f'DCGM_FI_DEV_GPU_UTIL{{gpu="{index}",UUID="{uuid}",modelName="NVIDIA A100-SXM4-40GB",'
                    f'Hostname="{node}",namespace="{meta["namespace"]}",pod="{meta["name"]}",'
                    f'container="{pod["spec"]["containers"][0]["name"]}"}} {value * 100:.0f}'
                )
    return "\n".join(lines) + "\n"


def _histogram(name: str, labels: str, bounds: tuple[float, ...], low: float, count: float) -> list[str]:
    """A histogram whose every observation lies in the bucket above `low`."""
    out = [f'{name}_bucket{{{labels},le="{b:g}"}} {0 if b <= low else count:.3f}' for b in bounds]
    upper = min(b for b in bounds if b > low)
    out += [f'{name}_bucket{{{labels},le="+Inf"}} {count:.3f}', f"{name}_count{{{labels}}} {count:.3f}",
            f"{name}_sum{{{labels}}} {count * (low + upper) / 2:.3f}"]  # fmt: skip
    return out


def requests_served(notes: dict[str, str], elapsed: float) -> float:
    """Requests since the pod started. With a `traffic-wave` ("period,amplitude") the rate follows
    rps * (1 + a sin(2 pi t / period)); the counter is its integral, so it never goes down."""
    rps = float(notes[SIM + "requests-per-s"])
    wave = notes.get(SIM + "traffic-wave")
    if not wave:
        return rps * elapsed
    period, amplitude = (float(v) for v in wave.split(","))
    omega = 2 * math.pi / period
    return rps * (elapsed + amplitude / omega * (1 - math.cos(omega * elapsed)))


def model_servers(api: ApiServer, now: float) -> str:
    """vLLM- and prometheus_client-shaped model-server metrics of the pods that simulate one.

    All series carry namespace and pod, as a PodMonitor's target labels would add them."""
    lines: list[str] = []
    for pod in running_pods(api):
        meta = pod["metadata"]
        notes = meta.get("annotations", {})
        kind = notes.get(SIM + "model-server")
        if not kind:
            continue
        started = parse_time(pod["status"].get("startTime")) or now
        n = requests_served(notes, max(now - started, 0.0))
        err = float(notes[SIM + "error-ratio"])
        base = f'namespace="{meta["namespace"]}",pod="{meta["name"]}"'
        if kind == "vllm":
            v = f'{base},model_name="granite",engine="0"'
            lines += [f'vllm:request_success_total{{{v},finished_reason="stop"}} {n * (1 - err):.3f}',
                      f'vllm:request_success_total{{{v},finished_reason="abort"}} {n * err:.3f}']  # fmt: skip
            lines += _histogram("vllm:e2e_request_latency_seconds", v, (0.3, 1, 2.5, 5, 10), 1, n)
            lines += _histogram("vllm:time_to_first_token_seconds", v, (0.01, 0.1, 0.5, 1), 0.1, n)
            lines += [f"vllm:generation_tokens_total{{{v}}} {50 * n:.3f}", f"vllm:num_requests_running{{{v}}} 4",
                      f"vllm:num_requests_waiting{{{v}}} 1", f"vllm:kv_cache_usage_perc{{{v}}} 0.3"]  # fmt: skip
        else:
            p = f'{base},model="{notes[SIM + "model"]}",version="{notes[SIM + "version"]}"'
            lines += [f"model_requests_total{{{p}}} {n:.3f}", f"model_request_errors_total{{{p}}} {n * err:.3f}"]
            lines += _histogram("model_request_duration_seconds", p, (0.005, 0.01, 0.05, 0.1), 0.01, n)
    return "\n".join(lines) + "\n"


def add_routes(app: web.Application, api: ApiServer) -> None:
    async def serve_cadvisor(_: web.Request) -> web.Response:
        return web.Response(text=cadvisor(api, time.time()))

    async def serve_dcgm(_: web.Request) -> web.Response:
        return web.Response(text=dcgm(api))

    app.router.add_get("/metrics/cadvisor", serve_cadvisor)
    app.router.add_get("/metrics/dcgm", serve_dcgm)

    async def serve_ksm(_: web.Request) -> web.Response:
        return web.Response(text=kube_state_metrics(api))

    app.router.add_get("/metrics/kube-state-metrics", serve_ksm)

    async def serve_model_servers(_: web.Request) -> web.Response:
        return web.Response(text=model_servers(api, time.time()))

    app.router.add_get("/metrics/model-servers", serve_model_servers)

    async def serve_node_exporter(_: web.Request) -> web.Response:
        return web.Response(text=node_exporter(api, time.time()))

    async def serve_volumes(_: web.Request) -> web.Response:
        return web.Response(text=kubelet_volumes(api))

    app.router.add_get("/metrics/node-exporter", serve_node_exporter)
    app.router.add_get("/metrics/kubelet-volumes", serve_volumes)
