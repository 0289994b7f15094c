"""Simulated clusters: object fixtures that follow the upstream APIs (DESIGN §4).

Pods carry `sim.ml-observability.io/*` annotations that the simulated kubelet
(`exporter.emulator.kubelet`) turns into cAdvisor-, NVML- and dcgm-shaped series.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import zlib
from dataclasses import dataclass
from typing import Any

from exporter.emulator.apiserver import ApiServer, now_rfc3339
from exporter.kube import ResourceKind
from exporter.sources import training as t
from exporter.watch import NAMESPACES

SIM = "sim.ml-observability.io/"
GIB = 1024**3

KINDS: dict[str, ResourceKind] = {k.kind: k for k in (*t.V1_KINDS, t.TRAINJOB, t.RAYJOB, t.PODS, NAMESPACES)}
JOBSET_KIND = ResourceKind("jobset.x-k8s.io", "v1alpha2", "jobsets", "JobSet")


def namespace(name: str, dsp: bool = True) -> dict[str, Any]:
    labels = {"kubernetes.io/metadata.name": name}
    if dsp:
        labels["opendatahub.io/dashboard"] = "true"
    return {"metadata": {"name": name, "labels": labels}}


def _condition(kind: str, status: str, ago: float, reason: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason or kind,
        "lastUpdateTime": now_rfc3339(-ago),
        "lastTransitionTime": now_rfc3339(-ago),
    }


def v1_job(
    kind: str,
    ns: str,
    name: str,
    state: str,
    *,
    started: float | None = None,
    finished: float | None = None,
    queue: str = "",
    replicas: dict[str, dict[str, int]] | None = None,
    created: float = 0,
) -> dict[str, Any]:
    """A Kubeflow Training Operator v1 job whose conditions say `state` (ages in seconds ago)."""
    created = created or max(started or 0, finished or 0, 60) + 30
    conditions = [_condition("Created", "True", created)]
    if state in ("running", "restarting", "succeeded", "failed"):
        conditions.append(_condition("Running", "True" if state == "running" else "False", started or 0))
    if state == "restarting":
        conditions.append(_condition("Restarting", "True", 30))
    if state == "suspended":
        conditions.append(_condition("Suspended", "True", 60))
    if state in ("succeeded", "failed"):
        conditions.append(_condition(state.capitalize(), "True", finished or 0))
    status: dict[str, Any] = {"conditions": conditions, "replicaStatuses": replicas or {}}
    if started is not None:
        status["startTime"] = now_rfc3339(-started)
    if finished is not None:
        status["completionTime"] = now_rfc3339(-finished)
    spec: dict[str, Any] = {"runPolicy": {"schedulingPolicy": {"queue": queue}} if queue else {}}
    return {
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": now_rfc3339(-created)},
        "spec": spec,
        "status": status,
    }


def pod(
    ns: str,
    name: str,
    labels: dict[str, str],
    *,
    node: str,
    cpu: float,
    memory: float,
    gpus: str = "",
    owner: tuple[str, str] | None = None,
    started: float = 300,
    phase: str = "Running",
) -> dict[str, Any]:
    """A pod; `gpus` is `uuid=utilisation@source` items (source: nvml, dcgm or both) separated by ','."""
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": ns,
        "labels": labels,
        "annotations": {SIM + "cpu-cores": str(cpu), SIM + "memory-bytes": str(int(memory))},
        "creationTimestamp": now_rfc3339(-started - 5),
    }
    if gpus:
        metadata["annotations"][SIM + "gpus"] = gpus
    if owner:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "kubeflow.org/v1",
                "kind": owner[0],
                "name": owner[1],
                "uid": f"owner-{owner[1]}",
                "controller": True,
            }
        ]
    return {
        "metadata": metadata,
        "spec": {"nodeName": node, "containers": [{"name": "trainer", "image": "quay.io/ml/trainer:1.0"}]},
        "status": {"phase": phase, "startTime": now_rfc3339(-started)},
    }


def kubeflow_pod(kind: str, ns: str, job: str, replica: str, index: int, **kw: Any) -> dict[str, Any]:
    labels = {
        t.V1_POD_LABEL: job,
        t.V1_REPLICA_LABEL: replica,
        "training.kubeflow.org/replica-index": str(index),
        "training.kubeflow.org/operator-name": f"{kind.lower()}-controller",
    }
    return pod(ns, f"{job}-{replica}-{index}", labels, owner=(kind, job), **kw)


@dataclass(frozen=True)
class Expected:
    """What the training scenario implies, for tests to compare against."""

    status: dict[tuple[str, str], str]  # (namespace, job) -> status
    duration: dict[tuple[str, str], float]  # finished: exact; running: at scenario time
    cpu_cores: dict[tuple[str, str], float]
    memory_bytes: dict[tuple[str, str], float]
    gpu_utilization: dict[tuple[str, str], float]


def training_scenario() -> tuple[list[tuple[ResourceKind, dict[str, Any]]], Expected]:
    """A realistic mix of training jobs in two Data Science Projects and one other namespace."""
    objs: list[tuple[ResourceKind, dict[str, Any]]] = []

    def add(kind: str, obj: dict[str, Any]) -> None:
        objs.append((KINDS[kind], obj))

    add("Namespace", namespace("team-a"))
    add("Namespace", namespace("team-b"))
    add("Namespace", namespace("sandbox", dsp=False))

    # team-a
    add(
        "PyTorchJob",
        v1_job(
            "PyTorchJob",
            "team-a",
            "bert-finetune",
            "running",
            started=600,
            replicas={"Master": {"active": 1}, "Worker": {"active": 2}},
        ),
    )
    objs[-1][1]["metadata"]["labels"] = {t.KUEUE_QUEUE_LABEL: "gpu-queue"}
    add(
        "Pod",
        kubeflow_pod(
            "PyTorchJob",
            "team-a",
            "bert-finetune",
            "master",
            0,
            node="gpu-node-1",
            cpu=2.0,
            memory=4 * GIB,
            gpus="GPU-0a1b2c3d-0001=0.8@nvml",
        ),
    )
    add(
        "Pod",
        kubeflow_pod(
            "PyTorchJob",
            "team-a",
            "bert-finetune",
            "worker",
            0,
            node="gpu-node-1",
            cpu=1.5,
            memory=3 * GIB,
            gpus="GPU-0a1b2c3d-0002=0.6@nvml",
        ),
    )
    add(
        "Pod",
        kubeflow_pod(
            "PyTorchJob",
            "team-a",
            "bert-finetune",
            "worker",
            1,
            node="gpu-node-2",
            cpu=1.5,
            memory=3 * GIB,
            gpus="GPU-0a1b2c3d-0003=0.4@dcgm",
        ),
    )
    add(
        "TFJob",
        v1_job(
            "TFJob",
            "team-a",
            "mnist-tf",
            "succeeded",
            started=3600,
            finished=1800,
            replicas={"Worker": {"succeeded": 2}},
        ),
    )
    add(
        "MPIJob",
        v1_job(
            "MPIJob",
            "team-a",
            "allreduce-bench",
            "failed",
            started=7200,
            finished=6900,
            replicas={"Launcher": {"failed": 1}, "Worker": {"active": 0}},
        ),
    )
    add(
        "PyTorchJob",
        v1_job(
            "PyTorchJob",
            "team-a",
            "llama-pretrain",
            "restarting",
            started=1200,
            queue="research",
            replicas={"Master": {"active": 1, "failed": 1}},
        ),
    )
    add(
        "Pod",
        kubeflow_pod(
            "PyTorchJob",
            "team-a",
            "llama-pretrain",
            "master",
            0,
            node="gpu-node-2",
            cpu=4.0,
            memory=16 * GIB,
            gpus="GPU-0a1b2c3d-0004=0.5@both",
        ),
    )
    add("XGBoostJob", v1_job("XGBoostJob", "team-a", "churn-xgb", "pending"))
    # A pod whose job is gone: its label points nowhere.
    add(
        "Pod",
        kubeflow_pod("PyTorchJob", "team-a", "ghost", "worker", 0, node="cpu-node-1", cpu=1.0, memory=1 * GIB),
    )

    # team-b
    add(
        "TrainJob",
        {
            "metadata": {
                "name": "resnet-trainjob",
                "namespace": "team-b",
                "creationTimestamp": now_rfc3339(-900),
                "labels": {t.KUEUE_QUEUE_LABEL: "team-b-queue"},
            },
            "spec": {"runtimeRef": {"name": "torch-distributed"}, "suspend": False},
            "status": {
                "conditions": [_condition("Suspended", "False", 890, "Resumed")],
                "jobsStatus": [{"name": "node", "active": 2, "ready": 2, "succeeded": 0, "failed": 0}],
            },
        },
    )
    for i in range(2):
        add(
            "Pod",
            pod(
                "team-b",
                f"resnet-trainjob-node-0-{i}",
                {t.JOBSET_POD_LABEL: "resnet-trainjob", t.JOBSET_REPLICA_LABEL: "node"},
                node="gpu-node-3",
                cpu=1.0,
                memory=2 * GIB,
            ),
        )
    # A JobSet that is not a TrainJob: its pods are not training pods.
    add(
        "Pod",
        pod(
            "team-b",
            "batch-inference-0",
            {t.JOBSET_POD_LABEL: "batch-inference"},
            node="cpu-node-1",
            cpu=0.5,
            memory=GIB,
        ),
    )
    add(
        "RayJob",
        {
            "metadata": {"name": "ray-tune", "namespace": "team-b", "creationTimestamp": now_rfc3339(-320)},
            "spec": {"entrypoint": "python tune.py", "shutdownAfterJobFinishes": True},
            "status": {
                "jobStatus": "RUNNING",
                "jobDeploymentStatus": "Running",
                "rayClusterName": "ray-tune-x7k2p",
                "startTime": now_rfc3339(-300),
                "jobId": "raysubmit_123",
            },
        },
    )
    add(
        "Pod",
        pod(
            "team-b",
            "ray-tune-x7k2p-head",
            {t.RAY_POD_LABEL: "ray-tune-x7k2p", t.RAY_NODE_TYPE_LABEL: "head"},
            node="cpu-node-1",
            cpu=0.5,
            memory=2 * GIB,
        ),
    )
    add(
        "Pod",
        pod(
            "team-b",
            "ray-tune-x7k2p-worker-abc",
            {t.RAY_POD_LABEL: "ray-tune-x7k2p", t.RAY_NODE_TYPE_LABEL: "worker"},
            node="cpu-node-2",
            cpu=2.5,
            memory=6 * GIB,
        ),
    )
    add("PaddleJob", v1_job("PaddleJob", "team-b", "ocr-paddle", "suspended"))
    add("JAXJob", v1_job("JAXJob", "team-b", "jax-sweep", "succeeded", started=5000, finished=4000))

    # sandbox: not a Data Science Project
    add("PyTorchJob", v1_job("PyTorchJob", "sandbox", "scratch", "running", started=100))
    # An ordinary pod: never watched by the training source.
    add("Pod", pod("team-a", "web-frontend", {"app": "web"}, node="cpu-node-1", cpu=0.2, memory=GIB))

    expected = Expected(
        status={
            ("team-a", "bert-finetune"): "running",
            ("team-a", "mnist-tf"): "succeeded",
            ("team-a", "allreduce-bench"): "failed",
            ("team-a", "llama-pretrain"): "restarting",
            ("team-a", "churn-xgb"): "pending",
            ("team-b", "resnet-trainjob"): "running",
            ("team-b", "ray-tune"): "running",
            ("team-b", "ocr-paddle"): "suspended",
            ("team-b", "jax-sweep"): "succeeded",
            ("sandbox", "scratch"): "running",
        },
        duration={
            ("team-a", "bert-finetune"): 600,
            ("team-a", "mnist-tf"): 1800,
            ("team-a", "allreduce-bench"): 300,
            ("team-a", "llama-pretrain"): 1200,
            ("team-b", "resnet-trainjob"): 890,
            ("team-b", "ray-tune"): 300,
            ("team-b", "jax-sweep"): 1000,
            ("sandbox", "scratch"): 100,
        },
        cpu_cores={
            ("team-a", "bert-finetune"): 5.0,
            ("team-a", "llama-pretrain"): 4.0,
            ("team-b", "resnet-trainjob"): 2.0,
            ("team-b", "ray-tune"): 3.0,
        },
        memory_bytes={
            ("team-a", "bert-finetune"): 10 * GIB,
            ("team-a", "llama-pretrain"): 16 * GIB,
            ("team-b", "resnet-trainjob"): 4 * GIB,
            ("team-b", "ray-tune"): 8 * GIB,
        },
        gpu_utilization={("team-a", "bert-finetune"): 0.6, ("team-a", "llama-pretrain"): 0.5},
    )
    return objs, expected


def load(api: ApiServer, objs: list[tuple[ResourceKind, dict[str, Any]]]) -> None:
    for kind, obj in objs:
        api.apply(kind, obj)


async def lifecycle(api: ApiServer, interval: float = 15.0, seed: int = 1) -> None:
    """Demo traffic: new PyTorchJobs go pending -> running (with pods) -> succeeded or failed; one in
    four restarts once on the way (a worker died), which delays its end by two steps."""
    rng = random.Random(seed)
    kind = KINDS["PyTorchJob"]
    live: list[tuple[str, str, int]] = []  # (namespace, name, age in steps)
    restarted: set[str] = set()
    for n in itertools.count(1):
        ns = rng.choice(("team-a", "team-b"))
        name = f"demo-run-{n}"
        api.apply(kind, v1_job("PyTorchJob", ns, name, "pending", created=1))
        live.append((ns, name, 0))
        next_live = []
        for ns_, job, age in live:
            if age == 1:
                api.apply(
                    kind,
                    v1_job("PyTorchJob", ns_, job, "running", started=1, replicas={"Worker": {"active": 2}}),
                )
                for i in range(2):
                    api.apply(
                        KINDS["Pod"],
                        kubeflow_pod(
                            "PyTorchJob",
                            ns_,
                            job,
                            "worker",
                            i,
                            node=f"gpu-node-{1 + i}",
                            started=1,
                            cpu=round(rng.uniform(0.5, 3.0), 2),
                            memory=rng.randint(1, 8) * GIB,
                            gpus=f"GPU-demo-{n:04d}-{i}={rng.uniform(0.1, 0.95):.2f}@nvml",
                        ),
                    )
            if age == 3 and rng.random() < 0.25:
                restarted.add(job)
                api.apply(kind, v1_job("PyTorchJob", ns_, job, "restarting", started=2 * interval + 1,
                                       replicas={"Worker": {"active": 1, "failed": 1}}))  # fmt: skip
            if age == 5 and job in restarted:
                api.apply(kind, v1_job("PyTorchJob", ns_, job, "running", started=4 * interval + 1,
                                       replicas={"Worker": {"active": 2}}))  # fmt: skip
            if age == (6 if job in restarted else 4):
                restarted.discard(job)
                state = "succeeded" if rng.random() < 0.8 else "failed"
                run_for = (age - 1) * interval
                api.apply(
                    kind,
                    v1_job(
                        "PyTorchJob",
                        ns_,
                        job,
                        state,
                        started=run_for + 1,
                        finished=1,
                        replicas={"Worker": {state: 2}},
                    ),
                )
                for i in range(2):
                    api.delete(KINDS["Pod"], ns_, f"{job}-worker-{i}")
            if age == 12:
                api.delete(kind, ns_, job)
                continue
            next_live.append((ns_, job, age + 1))
        live = next_live
        await asyncio.sleep(interval)


NOTEBOOK_KIND = ResourceKind("kubeflow.org", "v1", "notebooks", "Notebook")
CONFIGMAP_KIND = ResourceKind("", "v1", "configmaps", "ConfigMap")
KINDS["Notebook"] = NOTEBOOK_KIND
KINDS["ConfigMap"] = CONFIGMAP_KIND


def notebook(ns: str, name: str, *, state: str, requests: dict[str, str], limits: dict[str, str] | None = None,
             odh: bool = True, user: str = "", image: str = "quay.io/modh/odh-minimal-notebook:2024.2",
             kernels: list[dict[str, Any]] | None = None, terminals: list[dict[str, Any]] | None = None,
             started: float = 7200, culler_activity: float | None = None, stopped: float | None = None,
             accelerator: str = "") -> dict[str, Any]:  # fmt: skip
    """A Notebook as the ODH dashboard (odh=True) or the Kubeflow UI creates it.

    `kernels` ([{"state": "idle", "ago": s}]) and `terminals` ([{"ago": s}]) script the
    simulated Jupyter server (exporter.emulator.jupyter)."""
    annotations: dict[str, str] = {}
    labels: dict[str, str] = {"app": name}
    containers: list[dict[str, Any]] = [
        {"name": name, "image": image, "resources": {"requests": requests, "limits": limits or requests}}
    ]
    if odh:
        labels["opendatahub.io/dashboard"] = "true"
        if user:
            labels["opendatahub.io/user"] = user
            annotations["opendatahub.io/username"] = user
        annotations["notebooks.opendatahub.io/last-image-selection"] = image.rsplit("/", 1)[-1]
        containers.append({"name": "oauth-proxy", "image": "registry.redhat.io/openshift4/ose-oauth-proxy:v4.14",
                           "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                         "limits": {"cpu": "100m", "memory": "64Mi"}}})  # fmt: skip
    if accelerator:
        annotations["opendatahub.io/accelerator-name"] = accelerator
    if culler_activity is not None:
        annotations["notebooks.kubeflow.org/last-activity"] = now_rfc3339(-culler_activity)
    if stopped is not None:
        annotations["kubeflow-resource-stopped"] = now_rfc3339(-stopped)
    # Absolute times, fixed when the fixture is made: idle time then grows as it would.
    annotations[SIM + "kernels"] = json.dumps(
        [{"state": k["state"], "last_activity": now_rfc3339(-k["ago"])} for k in kernels or []]
    )
    annotations[SIM + "terminals"] = json.dumps([{"last_activity": now_rfc3339(-t["ago"])} for t in terminals or []])
    status: dict[str, Any] = {"readyReplicas": 1 if state == "running" else 0, "conditions": []}
    if state == "running":
        status["containerState"] = {"running": {"startedAt": now_rfc3339(-started)}}
    elif state == "starting":
        status["containerState"] = {"waiting": {"reason": "ContainerCreating"}}
    return {"metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations,
                         "creationTimestamp": now_rfc3339(-started - 60)},
            "spec": {"template": {"spec": {"containers": containers}}}, "status": status}  # fmt: skip


def notebook_pod(ns: str, name: str, **kw: Any) -> dict[str, Any]:
    obj = pod(ns, f"{name}-0", {"notebook-name": name, "statefulset": name}, **kw)
    obj["spec"]["containers"][0]["name"] = name
    return obj


@dataclass(frozen=True)
class NotebookExpected:
    active: dict[str, float]  # namespace -> running notebooks
    idle: dict[tuple[str, str], float]  # running notebooks' idle seconds at scenario time
    gpus_allocated: float
    gpu_utilization: dict[tuple[str, str], float]
    idle_gpu_holders: set[tuple[str, str]]
    cpu_request_utilization: dict[tuple[str, str], float]


def notebooks_scenario() -> tuple[list[tuple[ResourceKind, dict[str, Any]]], NotebookExpected]:
    """Workbenches: idle with a GPU, busy, stopped, starting, terminals only; and the culler config."""
    nb = NOTEBOOK_KIND
    day = 86400.0
    objs: list[tuple[ResourceKind, dict[str, Any]]] = [
        (nb, notebook("team-a", "alice-wb", state="running", user="alice", accelerator="NVIDIA GPU",
                      requests={"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"},
                      kernels=[{"state": "idle", "ago": 1.25 * day}, {"state": "idle", "ago": 1.5 * day}],
                      culler_activity=1.3 * day, started=2 * day)),
        (t.PODS, notebook_pod("team-a", "alice-wb", node="gpu-node-4", cpu=0.05, memory=2 * GIB,
                              gpus="GPU-0a1b2c3d-0101=0.02@nvml", started=2 * day)),
        (nb, notebook("team-a", "bob-wb", state="running", user="bob", requests={"cpu": "1", "memory": "4Gi"},
                      kernels=[{"state": "busy", "ago": 600}, {"state": "idle", "ago": 300}])),
        (t.PODS, notebook_pod("team-a", "bob-wb", node="cpu-node-1", cpu=0.9, memory=3 * GIB)),
        (nb, notebook("team-a", "carol-wb", state="stopped", user="carol", requests={"cpu": "4", "memory": "16Gi"},
                      stopped=5 * 3600)),
        (nb, notebook("team-b", "dave-nb", state="starting", odh=False, image="kubeflownotebookswg/jupyter-scipy:v1.8.0",
                      requests={"cpu": "500m", "memory": "1Gi"})),
        (nb, notebook("team-b", "erin-nb", state="running", odh=False, image="kubeflownotebookswg/jupyter-pytorch-cuda:v1.8.0",
                      requests={"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"}, terminals=[{"ago": 5400}], started=9000)),
        (t.PODS, notebook_pod("team-b", "erin-nb", node="gpu-node-5", cpu=0.2, memory=GIB,
                              gpus="GPU-0a1b2c3d-0102=0.5@dcgm")),
        (CONFIGMAP_KIND, {"metadata": {"name": "notebook-controller-culler-config", "namespace": "opendatahub"},
                          "data": {"ENABLE_CULLING": "true", "CULL_IDLE_TIME": "1440", "IDLENESS_CHECK_PERIOD": "5"}}),
    ]  # fmt: skip
    expected = NotebookExpected(
        active={"team-a": 2, "team-b": 1},
        idle={("team-a", "alice-wb"): 1.25 * day, ("team-a", "bob-wb"): 0, ("team-b", "erin-nb"): 5400},
        gpus_allocated=2,
        gpu_utilization={("team-a", "alice-wb"): 0.02, ("team-b", "erin-nb"): 0.5},
        idle_gpu_holders={("team-a", "alice-wb")},
        cpu_request_utilization={("team-a", "alice-wb"): 0.05 / 2, ("team-a", "bob-wb"): 0.9, ("team-b", "erin-nb"): 0.2},
    )  # fmt: skip
    return objs, expected


WORKFLOW_KIND = ResourceKind("argoproj.io", "v1alpha1", "workflows", "Workflow")
PIPELINERUN_KIND = ResourceKind("tekton.dev", "v1", "pipelineruns", "PipelineRun")
DSPA_KIND = ResourceKind(
    "datasciencepipelinesapplications.opendatahub.io",
    "v1",
    "datasciencepipelinesapplications",
    "DataSciencePipelinesApplication",
)
KINDS.update({"Workflow": WORKFLOW_KIND, "PipelineRun": PIPELINERUN_KIND, "DataSciencePipelinesApplication": DSPA_KIND})
IO_RATES = ("fs-read-bps", "fs-write-bps", "net-rx-bps", "net-tx-bps")


@dataclass
class Task:
    """One KFP task of a run: its executor attempts as (phase, started ago, finished ago or None, message)."""

    name: str
    attempts: list[tuple[str, float, float | None, str]]
    cached: bool = False
    omitted: bool = False
    pod: dict[str, float] | None = None  # simulation of the running executor pod: cpu, memory, limit, io rates


def _node_id(workflow: str, node_name: str) -> str:
    return f"{workflow}-{zlib.crc32(node_name.encode())}"


def kfp_workflow(
    ns: str,
    name: str,
    run_id: str,
    run_name: str,
    phase: str,
    started: float,
    finished: float | None,
    tasks: list[Task],
    offloaded: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An Argo Workflow shaped the way KFP v2 compiles and runs a pipeline, and its running step pods."""
    nodes: dict[str, dict[str, Any]] = {}
    pods: list[dict[str, Any]] = []

    def node(
        node_name: str,
        kind: str,
        template: str,
        node_phase: str,
        start: float | None,
        end: float | None,
        display: str,
        children: tuple[str, ...] | list[str] = (),
        message: str = "",
    ) -> str:
        nid = name if node_name == name else _node_id(name, node_name)
        nodes[nid] = {
            "id": nid,
            "name": node_name,
            "displayName": display,
            "type": kind,
            "templateName": template,
            "phase": node_phase,
            "children": list(children),
            "boundaryID": name,
        }
        if start is not None:
            nodes[nid]["startedAt"] = now_rfc3339(-start)
        if end is not None:
            nodes[nid]["finishedAt"] = now_rfc3339(-end)
        if message:
            nodes[nid]["message"] = message
        return nid

    task_ids = []
    for task in tasks:
        base = f"{name}.root.{task.name}"
        first_start = task.attempts[0][1] if task.attempts else started
        driver = node(
            f"{base}-driver",
            "Pod",
            "system-container-driver",
            "Succeeded",
            first_start + 5,
            first_start + 1,
            f"{task.name}-driver",
        )
        if task.omitted:
            executor = node(
                f"{base}.executor",
                "Skipped",
                "system-container-impl",
                "Omitted",
                None,
                None,
                "executor",
                message="omitted: depends condition not met",
            )
            task_phase = "Omitted"
        elif task.cached:
            executor = node(
                f"{base}.executor",
                "Skipped",
                "system-container-impl",
                "Skipped",
                first_start,
                first_start,
                "executor",
                message="when 'true != true' evaluated false",
            )
            task_phase = "Succeeded"
        else:
            attempt_ids = []
            for i, (attempt_phase, start, end, message) in enumerate(task.attempts):
                display = f"executor({i})" if len(task.attempts) > 1 else "executor"
                node_name = f"{base}.executor({i})" if len(task.attempts) > 1 else f"{base}.executor"
                template = "retry-system-container-impl" if len(task.attempts) > 1 else "system-container-impl"
                aid = node(node_name, "Pod", template, attempt_phase, start, end, display, message=message)
                attempt_ids.append(aid)
                if attempt_phase == "Running" and task.pod:
                    sim = task.pod
                    pod_obj = pod(
                        ns,
                        f"{name}-system-container-impl-{zlib.crc32(node_name.encode())}",
                        {"workflows.argoproj.io/workflow": name, RUN_ID: run_id},
                        node="cpu-node-2",
                        cpu=sim["cpu"],
                        memory=sim["memory"],
                        started=start,
                    )
                    pod_obj["metadata"]["annotations"]["workflows.argoproj.io/node-id"] = aid
                    pod_obj["metadata"]["annotations"].update({SIM + k: str(sim[k]) for k in IO_RATES if k in sim})
                    pod_obj["spec"]["containers"][0]["name"] = "main"
                    pod_obj["spec"]["containers"][0]["resources"] = {"limits": {"memory": str(int(sim["limit"]))}}
                    pods.append(pod_obj)
            last_phase = task.attempts[-1][0]
            if len(attempt_ids) > 1:
                executor = node(
                    f"{base}.executor",
                    "Retry",
                    "retry-system-container-impl",
                    last_phase,
                    first_start,
                    task.attempts[-1][2],
                    "executor",
                    attempt_ids,
                )
            else:
                executor = attempt_ids[0]
            task_phase = last_phase
        task_dag = node(base, "DAG", "system-container-executor", task_phase, first_start, None, task.name, [executor])
        task_ids += [driver, task_dag]
    root_driver = node(
        f"{name}.root-driver", "Pod", "system-dag-driver", "Succeeded", started, started - 2, "root-driver"
    )
    root = node(f"{name}.root", "DAG", "root", phase, started - 2, finished, "root", task_ids)
    node(name, "DAG", "entrypoint", phase, started, finished, name, [root_driver, root])
    status: dict[str, Any] = {
        "phase": phase,
        "startedAt": now_rfc3339(-started),
        "nodes": {} if offloaded else nodes,
        "resourcesDuration": {
            "cpu": int(sum(t.attempts[0][1] - (t.attempts[0][2] or 0) for t in tasks if t.attempts)),
            "memory": 120,
        },
    }
    if offloaded:
        status["offloadNodeStatusVersion"] = "fnv:2364019811"
    if finished is not None:
        status["finishedAt"] = now_rfc3339(-finished)
    obj = {
        "metadata": {
            "name": name,
            "namespace": ns,
            "generateName": name.rsplit("-", 1)[0] + "-",
            "labels": {RUN_ID: run_id, "workflows.argoproj.io/phase": phase},
            "annotations": {"pipelines.kubeflow.org/run_name": run_name},
            "creationTimestamp": now_rfc3339(-started - 5),
        },
        "spec": {"entrypoint": "entrypoint"},
        "status": status,
    }
    return obj, pods


RUN_ID = "pipeline/runid"
OOM = "main: OOMKilled (exit code 137)"


@dataclass(frozen=True)
class PipelineExpected:
    runs_by_status: dict[tuple[str, str, str], float]  # (namespace, pipeline, status) -> runs
    run_duration: dict[str, float]  # run_id -> seconds at scenario time (finished runs)
    step_status: dict[tuple[str, str], str]  # (run_id, step) -> status
    step_duration: dict[tuple[str, str], float]  # finished steps
    memory_limit_ratio: dict[tuple[str, str], float]  # running steps
    io: dict[tuple[str, str, str], float]  # (run_id, step, kind) -> bytes/s


def pipelines_scenario() -> tuple[list[tuple[ResourceKind, dict[str, Any]]], PipelineExpected]:
    """The OOM story: a nightly run whose preprocess step died of OOM after 45 minutes, today's run with
    preprocess near its memory limit, a retried run that succeeded, an offloaded run, a Tekton run, DSPAs."""
    gib = float(GIB)
    failed, failed_pods = kfp_workflow(
        "team-a",
        "fraud-training-pipeline-abc12",
        "run-0001",
        "nightly 2026-12-03",
        "Failed",
        3700,
        580,
        [
            Task("load-data", [("Succeeded", 3690, 3300, "")]),
            Task("preprocess", [("Failed", 3290, 590, OOM)]),
            Task("train", [], omitted=True),
        ],
    )
    running, running_pods = kfp_workflow(
        "team-a",
        "fraud-training-pipeline-def34",
        "run-0002",
        "nightly 2026-12-04",
        "Running",
        900,
        None,
        [
            Task("load-data", [], cached=True),
            Task(
                "preprocess",
                [("Running", 880, None, "")],
                pod={
                    "cpu": 1.5,
                    "memory": 3.8 * gib,
                    "limit": 4 * gib,
                    "fs-read-bps": 50e6,
                    "fs-write-bps": 20e6,
                    "net-rx-bps": 10e6,
                    "net-tx-bps": 1e6,
                },
            ),
        ],
    )
    retried, _ = kfp_workflow(
        "team-a",
        "churn-pipeline-gh56x",
        "run-0003",
        "weekly churn",
        "Succeeded",
        7000,
        5000,
        [
            Task("extract", [("Error", 6990, 6900, "pod deleted"), ("Succeeded", 6890, 6000, "")]),
            Task("score", [("Succeeded", 5990, 5010, "")]),
        ],
    )
    offloaded, _ = kfp_workflow(
        "team-b",
        "big-pipeline-zz9yy",
        "run-0004",
        "backfill",
        "Running",
        600,
        None,
        [
            Task("shard", [("Running", 590, None, "")]),
        ],
        offloaded=True,
    )
    tekton = {
        "metadata": {
            "name": "legacy-run-1",
            "namespace": "team-b",
            "labels": {"tekton.dev/pipeline": "legacy-etl", RUN_ID: "run-0005"},
            "annotations": {"pipelines.kubeflow.org/run_name": "legacy etl"},
        },
        "spec": {"pipelineRef": {"name": "legacy-etl"}},
        "status": {
            "startTime": now_rfc3339(-4000),
            "completionTime": now_rfc3339(-3400),
            "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded"}],
        },
    }
    dspa_ok = {
        "metadata": {"name": "dspa", "namespace": "team-a"},
        "spec": {},
        "status": {
            "conditions": [
                {"type": t_, "status": "True", "reason": "MinimumReplicasAvailable"}
                for t_ in (
                    "DatabaseAvailable",
                    "ObjectStoreAvailable",
                    "APIServerReady",
                    "PersistenceAgentReady",
                    "ScheduledWorkflowReady",
                    "Ready",
                )
            ]
        },
    }
    dspa_bad = {
        "metadata": {"name": "dspa", "namespace": "team-b"},
        "spec": {},
        "status": {
            "conditions": [
                {"type": "DatabaseAvailable", "status": "True"},
                {"type": "ObjectStoreAvailable", "status": "False", "reason": "FailingToDeploy"},
                {"type": "APIServerReady", "status": "False", "reason": "FailingToDeploy"},
                {"type": "Ready", "status": "False", "reason": "FailingToDeploy"},
            ]
        },
    }
    objs: list[tuple[ResourceKind, dict[str, Any]]] = [
        (WORKFLOW_KIND, w) for w in (failed, running, retried, offloaded)
    ]
    objs += [(t.PODS, p) for p in failed_pods + running_pods]
    objs += [(PIPELINERUN_KIND, tekton), (DSPA_KIND, dspa_ok), (DSPA_KIND, dspa_bad)]
    expected = PipelineExpected(
        runs_by_status={
            ("team-a", "fraud-training-pipeline", "failed"): 1,
            ("team-a", "fraud-training-pipeline", "running"): 1,
            ("team-a", "churn-pipeline", "succeeded"): 1,
            ("team-b", "big-pipeline", "running"): 1,
            ("team-b", "legacy-etl", "succeeded"): 1,
        },
        run_duration={"run-0001": 3120, "run-0003": 2000, "run-0005": 600},
        step_status={
            ("run-0001", "load-data"): "succeeded",
            ("run-0001", "preprocess"): "failed",
            ("run-0001", "train"): "skipped",
            ("run-0002", "load-data"): "cached",
            ("run-0002", "preprocess"): "running",
            ("run-0003", "extract"): "succeeded",
            ("run-0003", "score"): "succeeded",
        },
        step_duration={
            ("run-0001", "load-data"): 390,
            ("run-0001", "preprocess"): 2700,
            ("run-0003", "extract"): 890,
            ("run-0003", "score"): 980,
        },
        memory_limit_ratio={("run-0002", "preprocess"): 0.95},
        io={
            ("run-0002", "preprocess", "fs_read"): 50e6,
            ("run-0002", "preprocess", "fs_write"): 20e6,
            ("run-0002", "preprocess", "net_receive"): 10e6,
            ("run-0002", "preprocess", "net_transmit"): 1e6,
        },
    )
    return objs, expected


def oom_kill_running_preprocess() -> dict[str, Any]:
    """Today's run after its preprocess step was OOM-killed (what the e2e test applies mid-run)."""
    obj, _ = kfp_workflow(
        "team-a",
        "fraud-training-pipeline-def34",
        "run-0002",
        "nightly 2026-12-04",
        "Failed",
        900,
        0,
        [
            Task("load-data", [], cached=True),
            Task("preprocess", [("Failed", 880, 0, OOM)]),
        ],
    )
    return obj


def running_preprocess_pod() -> str:
    """The name of today's preprocess pod (the one the OOM kills)."""
    objs, _ = pipelines_scenario()
    return next(
        str(o["metadata"]["name"]) for k, o in objs if k is t.PODS and o["metadata"]["labels"].get(RUN_ID) == "run-0002"
    )


ISVC_KIND = ResourceKind("serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService")
KINDS["InferenceService"] = ISVC_KIND


def inference_service(ns: str, name: str, *, model_format: str, runtime: str, mode: str, ready: bool,
                      model_state: str = "Loaded", version: str = "", revision: str = "") -> dict[str, Any]:  # fmt: skip
    conditions = [
        {"type": t_, "status": "True" if ready else "False"} for t_ in ("PredictorReady", "IngressReady", "Ready")
    ]
    status: dict[str, Any] = {"conditions": conditions, "deploymentMode": mode,
                              "modelStatus": {"states": {"activeModelState": model_state, "targetModelState": "Loaded"},
                                              "transitionStatus": "UpToDate" if ready else "BlockedByFailedLoad"}}  # fmt: skip
    if revision:
        status["components"] = {"predictor": {"latestReadyRevision": revision}}
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": ns,
        "annotations": {"serving.kserve.io/deploymentMode": mode},
    }
    if version:
        metadata["labels"] = {"serving.kserve.io/model-version": version}
    return {"metadata": metadata,
            "spec": {"predictor": {"model": {"modelFormat": {"name": model_format}, "runtime": runtime}}},
            "status": status}  # fmt: skip


@dataclass(frozen=True)
class ServingExpected:
    requests: dict[tuple[str, str], float]  # (model, version) -> requests/s
    error_ratio: dict[tuple[str, str], float]
    latency: dict[tuple[str, str], tuple[float, float, float]]  # p50, p95, p99 seconds
    ready_models: float


def serving_scenario() -> tuple[list[tuple[ResourceKind, dict[str, Any]]], ServingExpected]:
    """A vLLM InferenceService, a prometheus_client app, and an InferenceService whose model failed to load."""
    llm = inference_service(
        "team-a",
        "llm-chat",
        model_format="vLLM",
        runtime="vllm-runtime",
        mode="RawDeployment",
        ready=True,
        version="granite-3.1",
    )
    failed = inference_service(
        "team-a",
        "fraud-detector",
        model_format="onnx",
        runtime="ovms",
        mode="Serverless",
        ready=False,
        model_state="FailedToLoad",
        revision="fraud-detector-predictor-00002",
    )
    llm_pod = pod(
        "team-a",
        "llm-chat-predictor-6d8f9",
        {"serving.kserve.io/inferenceservice": "llm-chat", "component": "predictor"},
        node="gpu-node-6",
        cpu=3.0,
        memory=20 * GIB,
        gpus="GPU-0a1b2c3d-0201=0.7@nvml",
        started=600,
    )
    llm_pod["metadata"]["annotations"].update(
        {SIM + "model-server": "vllm", SIM + "requests-per-s": "10", SIM + "error-ratio": "0.02"}
    )
    app_pod = pod("team-b", "recsys-7c5d4", {"app": "recsys"}, node="cpu-node-2", cpu=0.5, memory=GIB, started=600)
    app_pod["metadata"]["annotations"].update(
        {
            SIM + "model-server": "prometheus_client",
            SIM + "requests-per-s": "20",
            SIM + "error-ratio": "0.01",
            SIM + "model": "recsys",
            SIM + "version": "7",
        }
    )
    objs = [(ISVC_KIND, llm), (ISVC_KIND, failed), (t.PODS, llm_pod), (t.PODS, app_pod)]
    expected = ServingExpected(
        requests={("llm-chat", "granite-3.1"): 10, ("recsys", "7"): 20},
        error_ratio={("llm-chat", "granite-3.1"): 0.02, ("recsys", "7"): 0.01},
        # All vLLM requests take 1-2.5 s, all recsys requests 10-50 ms: bucket interpolation gives these.
        latency={("llm-chat", "granite-3.1"): (1.75, 2.425, 2.485), ("recsys", "7"): (0.03, 0.048, 0.0496)},
        ready_models=1,
    )
    return objs, expected


NODE_KIND = ResourceKind("", "v1", "nodes", "Node", namespaced=False)
DEPLOYMENT_KIND = ResourceKind("apps", "v1", "deployments", "Deployment")
DSC_KIND = ResourceKind("datasciencecluster.opendatahub.io", "v1", "datascienceclusters", "DataScienceCluster", False)
DSCI_KIND = ResourceKind("dscinitialization.opendatahub.io", "v1", "dscinitializations", "DSCInitialization", False)
KINDS.update(
    {"Node": NODE_KIND, "Deployment": DEPLOYMENT_KIND, "DataScienceCluster": DSC_KIND, "DSCInitialization": DSCI_KIND}
)
GPU_NODES = [f"gpu-node-{i}" for i in range(1, 7)]
CPU_NODES = ["cpu-node-1", "cpu-node-2", "cpu-node-3"]


def node(name: str, cpu: int, memory_gib: int, gpus: int, ready: bool = True, pressure: str = "") -> dict[str, Any]:
    allocatable = {"cpu": str(cpu), "memory": f"{memory_gib}Gi", "pods": "110"}
    if gpus:
        allocatable["nvidia.com/gpu"] = str(gpus)
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    conditions += [
        {"type": t_, "status": "True" if t_ == pressure else "False"}
        for t_ in ("MemoryPressure", "DiskPressure", "PIDPressure")
    ]
    labels = {"kubernetes.io/hostname": name}
    if gpus:
        labels["nvidia.com/gpu.present"] = "true"
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {"allocatable": allocatable, "capacity": allocatable, "conditions": conditions},
    }


def deployment(ns: str, name: str, replicas: int, available: int) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns}, "spec": {"replicas": replicas},
            "status": {"replicas": replicas, "availableReplicas": available}}  # fmt: skip


@dataclass(frozen=True)
class PlatformExpected:
    nodes_ready: float
    nodes_not_ready: float
    allocatable: dict[str, float]  # cluster: cpu cores, memory bytes, nvidia.com/gpu
    components: dict[str, float]  # managed component -> ready
    deployments: dict[str, float]  # platform deployment -> available ratio


def platform_scenario() -> tuple[list[tuple[ResourceKind, dict[str, Any]]], PlatformExpected]:
    """Nodes (one not ready, under memory pressure), the ODH platform objects and its Deployments."""
    objs: list[tuple[ResourceKind, dict[str, Any]]] = []
    objs += [(NODE_KIND, node(n, 32, 256, 4)) for n in GPU_NODES]
    objs += [(NODE_KIND, node(n, 16, 64, 0)) for n in CPU_NODES[:2]]
    objs.append((NODE_KIND, node("cpu-node-3", 16, 64, 0, ready=False, pressure="MemoryPressure")))
    dsc = {
        "metadata": {"name": "default-dsc"},
        "spec": {
            "components": {
                "dashboard": {"managementState": "Managed"},
                "workbenches": {"managementState": "Managed"},
                "datasciencepipelines": {"managementState": "Managed"},
                "kserve": {"managementState": "Managed"},
                "ray": {"managementState": "Removed"},
                "trainingoperator": {"managementState": "Managed"},
            }
        },
        "status": {
            "phase": "Not Ready",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "NotReady"},
                {"type": "DashboardReady", "status": "True"},
                {"type": "WorkbenchesReady", "status": "True"},
                {"type": "DataSciencePipelinesReady", "status": "True"},
                {"type": "KserveReady", "status": "False", "reason": "ServerlessUnavailable"},
                {"type": "TrainingOperatorReady", "status": "True"},
            ],
        },
    }
    dsci = {
        "metadata": {"name": "default-dsci"},
        "spec": {"applicationsNamespace": "opendatahub", "monitoring": {"managementState": "Managed"}},
        "status": {"phase": "Ready", "conditions": [{"type": "Available", "status": "True"}]},
    }
    objs += [(DSC_KIND, dsc), (DSCI_KIND, dsci)]
    objs += [
        (DEPLOYMENT_KIND, deployment("opendatahub", n, r, a))
        for n, r, a in (
            ("odh-dashboard", 2, 2),
            ("odh-notebook-controller-manager", 1, 1),
            ("kserve-controller-manager", 1, 0),
        )
    ]
    expected = PlatformExpected(
        nodes_ready=8,
        nodes_not_ready=1,
        allocatable={"cpu": 6 * 32 + 3 * 16, "memory": (6 * 256 + 3 * 64) * GIB, "nvidia.com/gpu": 24},
        components={"dashboard": 1, "workbenches": 1, "datasciencepipelines": 1, "kserve": 0, "trainingoperator": 1},
        deployments={"odh-dashboard": 1, "odh-notebook-controller-manager": 1, "kserve-controller-manager": 0},
    )
    return objs, expected
