"""Training jobs: Kubeflow Training Operator v1 kinds, Trainer v2 TrainJob, KubeRay RayJob.

Also the pods of those jobs (`ml_workload_pod_info`), found through label-selected
pod watches so the exporter never holds every pod of the cluster. Status
derivation is documented in docs/training.md; keep the two in step.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from typing import Any

from exporter import catalogue as c
from exporter.exposition import Family
from exporter.kube import ResourceKind
from exporter.sources import Callbacks, WatchSource, conditions_of, metadata_of, parse_time, status_of
from exporter.watch import MalformedObject

STATUSES = ("pending", "running", "restarting", "suspended", "succeeded", "failed")
REPLICA_STATES = ("active", "succeeded", "failed")
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

V1_KINDS = tuple(
    ResourceKind("kubeflow.org", "v1", plural, kind)
    for plural, kind in (
        ("pytorchjobs", "PyTorchJob"),
        ("tfjobs", "TFJob"),
        ("mpijobs", "MPIJob"),
        ("xgboostjobs", "XGBoostJob"),
        ("paddlejobs", "PaddleJob"),
        ("jaxjobs", "JAXJob"),
    )
)
TRAINJOB = ResourceKind("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob")
RAYJOB = ResourceKind("ray.io", "v1", "rayjobs", "RayJob")
PODS = ResourceKind("", "v1", "pods", "Pod")

V1_POD_LABEL = "training.kubeflow.org/job-name"
V1_REPLICA_LABEL = "training.kubeflow.org/replica-type"
JOBSET_POD_LABEL = "jobset.sigs.k8s.io/jobset-name"
JOBSET_REPLICA_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
RAY_POD_LABEL = "ray.io/cluster"
RAY_NODE_TYPE_LABEL = "ray.io/node-type"

# Kubeflow v1: the current state is the last condition whose status is "True".
V1_CONDITION_STATUS = {
    "Created": "pending",
    "Running": "running",
    "Restarting": "restarting",
    "Suspended": "suspended",
    "Succeeded": "succeeded",
    "Failed": "failed",
}
# KubeRay: jobDeploymentStatus overrides jobStatus where it says more (suspension, retries, failure).
RAY_DEPLOYMENT_STATUS = {
    "Suspending": "suspended",
    "Suspended": "suspended",
    "Retrying": "restarting",
    "Failed": "failed",
    "ValidationFailed": "failed",
}
RAY_JOB_STATUS = {
    "PENDING": "pending",
    "RUNNING": "running",
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    "STOPPED": "failed",
}


@dataclass(frozen=True)
class PodFacts:
    namespace: str
    name: str
    node: str
    workload_label: str  # the value of the label that selected this pod
    selector_label: str
    replica_type: str
    owner_kind: str


def _true(cond: dict[str, Any]) -> bool:
    return cond.get("status") == "True"


def v1_job_state(status: dict[str, Any]) -> tuple[str, float | None, float | None]:
    current = "pending"
    for cond in conditions_of(status):
        if _true(cond) and cond.get("type") in V1_CONDITION_STATUS:
            current = V1_CONDITION_STATUS[cond["type"]]
    completion = parse_time(status.get("completionTime")) if current in ("succeeded", "failed") else None
    return current, parse_time(status.get("startTime")), completion


def trainjob_state(obj: dict[str, Any], status: dict[str, Any]) -> tuple[str, float | None, float | None]:
    """TrainJob has no start/completion fields: they come from condition transition times."""
    by_type = {cond.get("type"): cond for cond in conditions_of(status)}
    for kind, state in (("Failed", "failed"), ("Complete", "succeeded")):
        cond = by_type.get(kind)
        if cond and _true(cond):
            finished = parse_time(cond.get("lastTransitionTime"))
            return state, _trainjob_start(obj, by_type, finished), finished
    suspended = by_type.get("Suspended")
    if (suspended and _true(suspended)) or (obj.get("spec") or {}).get("suspend") is True:
        return "suspended", None, None
    jobs = status.get("jobsStatus") or []
    active = any(isinstance(j, dict) and (j.get("active") or j.get("ready")) for j in jobs)
    if active:
        return "running", _trainjob_start(obj, by_type, None), None
    return "pending", None, None


def _trainjob_start(obj: dict[str, Any], by_type: dict[Any, dict[str, Any]], finished: float | None) -> float | None:
    # Resumed after a suspension: the Suspended=False transition is when it (re)started.
    suspended = by_type.get("Suspended")
    if suspended and suspended.get("status") == "False":
        resumed = parse_time(suspended.get("lastTransitionTime"))
        if resumed is not None:
            return resumed
    created = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    if created is not None and finished is not None and created > finished:
        return None
    return created


def rayjob_state(status: dict[str, Any]) -> tuple[str, float | None, float | None]:
    deployment = status.get("jobDeploymentStatus") or ""
    current = RAY_DEPLOYMENT_STATUS.get(deployment) or RAY_JOB_STATUS.get(status.get("jobStatus") or "", "pending")
    if deployment == "Complete" and current not in ("succeeded", "failed"):
        current = "succeeded" if status.get("jobStatus") == "SUCCEEDED" else "failed"
    start = parse_time(status.get("startTime"))
    completion = parse_time(status.get("endTime")) if current in ("succeeded", "failed") else None
    return current, start, completion


class TrainingSource(WatchSource):
    name = "training"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.jobs: dict[str, tuple[str, str, str]] = {}  # uid -> (namespace, name, kind)
        self.ray_clusters: dict[tuple[str, str], str] = {}  # (namespace, ray cluster) -> RayJob name
        self.ray_cluster_of: dict[str, tuple[str, str]] = {}  # RayJob uid -> (namespace, cluster)
        self.trainjobs: set[tuple[str, str]] = set()
        self.pods: dict[str, PodFacts] = {}
        self.pods_by_workload: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        for kind in (*V1_KINDS, TRAINJOB, RAYJOB):
            self.watch(kind, Callbacks(partial(self.upsert_job, kind), self.delete_job))
        pods = Callbacks(self.upsert_pod, self.delete_pod)
        for label in (V1_POD_LABEL, JOBSET_POD_LABEL, RAY_POD_LABEL):
            self.watch(PODS, pods, label_selector=label)

    # -- jobs -----------------------------------------------------------------------------------
    def upsert_job(self, kind: ResourceKind, obj: dict[str, Any]) -> None:
        metadata, namespace, name, labels = metadata_of(obj)
        status = status_of(obj)
        spec = obj.get("spec") or {}
        if not isinstance(spec, dict):
            raise MalformedObject("bad_spec")
        uid = metadata["uid"]
        queue = labels.get(KUEUE_QUEUE_LABEL) or ""
        if kind is TRAINJOB:
            state, start, completion = trainjob_state(obj, status)
        elif kind is RAYJOB:
            state, start, completion = rayjob_state(status)
        else:
            state, start, completion = v1_job_state(status)
            if not queue:
                policy = (spec.get("runPolicy") or {}).get("schedulingPolicy") or {}
                queue = policy.get("queue") or "" if isinstance(policy, dict) else ""
        job = (namespace, name, kind.kind)
        lines: dict[Family, str] = {
            c.TRAINING_JOB_INFO: c.TRAINING_JOB_INFO.sample((*job, str(queue)), 1),
            c.TRAINING_JOB_STATUS: "".join(
                c.TRAINING_JOB_STATUS.sample((*job, s), 1 if s == state else 0) for s in STATUSES
            ),
            c.TRAINING_JOB_REPLICAS: self._replicas(kind, job, status),
        }
        created = parse_time(metadata.get("creationTimestamp"))
        if created is not None:
            lines[c.TRAINING_JOB_CREATED] = c.TRAINING_JOB_CREATED.sample(job, created)
        if start is not None:
            lines[c.TRAINING_JOB_START] = c.TRAINING_JOB_START.sample(job, start)
        if completion is not None:
            lines[c.TRAINING_JOB_COMPLETION] = c.TRAINING_JOB_COMPLETION.sample(job, completion)
        self.store.put(f"training/job/{uid}", lines)
        self.jobs[uid] = job
        if kind is TRAINJOB and (namespace, name) not in self.trainjobs:
            self.trainjobs.add((namespace, name))
            self._rerender_pods((namespace, JOBSET_POD_LABEL, name))
        if kind is RAYJOB:
            cluster = status.get("rayClusterName")
            self._set_ray_cluster(uid, (namespace, cluster) if isinstance(cluster, str) and cluster else None, name)

    def _replicas(self, kind: ResourceKind, job: tuple[str, str, str], status: dict[str, Any]) -> str:
        lines = []
        if kind is TRAINJOB:
            for entry in status.get("jobsStatus") or []:
                if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                    for state in REPLICA_STATES:
                        value = entry.get(state) or 0
                        lines.append(c.TRAINING_JOB_REPLICAS.sample((*job, entry["name"], state), float(value)))
        elif kind is not RAYJOB:
            replicas = status.get("replicaStatuses") or {}
            if isinstance(replicas, dict):
                for replica_type, counts in sorted(replicas.items()):
                    if isinstance(counts, dict):
                        for state in REPLICA_STATES:
                            value = float(counts.get(state) or 0)
                            lines.append(c.TRAINING_JOB_REPLICAS.sample((*job, replica_type.lower(), state), value))
        return "".join(lines)

    def delete_job(self, uid: str) -> None:
        self.store.delete(f"training/job/{uid}")
        job = self.jobs.pop(uid, None)
        if job is None:
            return
        namespace, name, kind = job
        if kind == TRAINJOB.kind:
            self.trainjobs.discard((namespace, name))
            self._rerender_pods((namespace, JOBSET_POD_LABEL, name))
        elif kind == RAYJOB.kind:
            self._set_ray_cluster(uid, None, name)

    def _set_ray_cluster(self, uid: str, cluster: tuple[str, str] | None, name: str) -> None:
        previous = self.ray_cluster_of.get(uid)
        if previous == cluster:
            return
        if previous is not None:
            del self.ray_cluster_of[uid]
            self.ray_clusters.pop(previous, None)
            self._rerender_pods((previous[0], RAY_POD_LABEL, previous[1]))
        if cluster is not None:
            self.ray_cluster_of[uid] = cluster
            self.ray_clusters[cluster] = name
            self._rerender_pods((cluster[0], RAY_POD_LABEL, cluster[1]))

    # -- pods -----------------------------------------------------------------------------------
    def upsert_pod(self, obj: dict[str, Any]) -> None:
        metadata, namespace, name, labels = metadata_of(obj)
        spec = obj.get("spec") or {}
        node = spec.get("nodeName") or "" if isinstance(spec, dict) else ""
        owner_kind = ""
        for ref in metadata.get("ownerReferences") or []:
            if isinstance(ref, dict) and ref.get("controller"):
                owner_kind = str(ref.get("kind") or "")
        for selector, replica_label in (
            (V1_POD_LABEL, V1_REPLICA_LABEL),
            (JOBSET_POD_LABEL, JOBSET_REPLICA_LABEL),
            (RAY_POD_LABEL, RAY_NODE_TYPE_LABEL),
        ):
            if labels.get(selector):
                facts = PodFacts(
                    namespace,
                    name,
                    str(node),
                    str(labels[selector]),
                    selector,
                    str(labels.get(replica_label) or "").lower(),
                    owner_kind,
                )
                break
        else:
            raise MalformedObject("no_workload_label")
        uid = metadata["uid"]
        old = self.pods.get(uid)
        if old is not None and old != facts:
            self.pods_by_workload[(old.namespace, old.selector_label, old.workload_label)].discard(uid)
        self.pods[uid] = facts
        self.pods_by_workload[(namespace, facts.selector_label, facts.workload_label)].add(uid)
        self._render_pod(uid, facts)

    def delete_pod(self, uid: str) -> None:
        self.store.delete(f"training/pod/{uid}")
        facts = self.pods.pop(uid, None)
        if facts is not None:
            key = (facts.namespace, facts.selector_label, facts.workload_label)
            self.pods_by_workload[key].discard(uid)
            if not self.pods_by_workload[key]:
                del self.pods_by_workload[key]

    def _workload_of(self, pod: PodFacts) -> tuple[str, str] | None:
        if pod.selector_label == V1_POD_LABEL:
            # The controller reference names the kind; the job need not exist (yet/anymore).
            kinds = {k.kind for k in V1_KINDS}
            return (pod.owner_kind if pod.owner_kind in kinds else "", pod.workload_label)
        if pod.selector_label == JOBSET_POD_LABEL:
            # Trainer v2 names the JobSet after its TrainJob; other JobSets are not training jobs.
            if (pod.namespace, pod.workload_label) in self.trainjobs:
                return (TRAINJOB.kind, pod.workload_label)
            return None
        rayjob = self.ray_clusters.get((pod.namespace, pod.workload_label))
        return (RAYJOB.kind, rayjob) if rayjob else None

    def _render_pod(self, uid: str, pod: PodFacts) -> None:
        workload = self._workload_of(pod)
        if workload is None:
            self.store.delete(f"training/pod/{uid}")
            return
        line = c.WORKLOAD_POD_INFO.sample(
            (pod.namespace, pod.name, workload[0], workload[1], pod.node, pod.replica_type), 1
        )
        self.store.put(f"training/pod/{uid}", {c.WORKLOAD_POD_INFO: line})

    def _rerender_pods(self, key: tuple[str, str, str]) -> None:
        for uid in self.pods_by_workload.get(key, ()):
            self._render_pod(uid, self.pods[uid])
