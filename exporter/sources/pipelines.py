"""Data pipelines: Argo Workflows of Data Science Pipelines v2 / KFP, Tekton PipelineRuns (DSP v1),
and DataSciencePipelinesApplication readiness.

Which workflow nodes are steps (docs/pipelines.md): Pod nodes, except KFP's driver
pods; Skipped/Omitted task nodes appear as skipped steps. DAG, Steps, StepGroup
and TaskGroup nodes are structure, not steps. Retry attempts ("name(1)") are one
step with an attempt count; its status is the latest attempt's. KFP v2 executor
pods take the name of the task that owns them.

`ml_pipeline_step_duration_seconds` observes every finished attempt exactly once:
node ids already observed are remembered per Workflow, so a relist or a watch
restart adds nothing; attempts that finished before this process started are not
observed (after a restart they would count twice), so the histogram only says
what happened since the exporter started — per-step gauges still cover the rest.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from exporter import catalogue as c
from exporter.exposition import Family, format_value
from exporter.kube import ResourceKind
from exporter.sources import Callbacks, WatchSource, conditions_of, metadata_of, parse_time, status_of
from exporter.sources.training import PODS
from exporter.watch import MalformedObject

WORKFLOW = ResourceKind("argoproj.io", "v1alpha1", "workflows", "Workflow")
PIPELINERUN = ResourceKind("tekton.dev", "v1", "pipelineruns", "PipelineRun")
DSPA = ResourceKind("datasciencepipelinesapplications.opendatahub.io", "v1", "datasciencepipelinesapplications",
                    "DataSciencePipelinesApplication")  # fmt: skip

RUN_STATUSES = ("pending", "running", "succeeded", "failed", "error")
STEP_STATUSES = ("pending", "running", "succeeded", "failed", "error", "skipped", "cached")
BUCKETS = (
    1.0,
    5.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1200.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    28800.0,
    86400.0,
)

RUN_ID_LABEL = "pipeline/runid"
RUN_NAME_ANNOTATION = "pipelines.kubeflow.org/run_name"
PIPELINE_NAME_ANNOTATION = "pipelines.kubeflow.org/pipeline_name"
POD_WORKFLOW_LABEL = "workflows.argoproj.io/workflow"
POD_NODE_ANNOTATION = "workflows.argoproj.io/node-id"
TEKTON_PIPELINE_LABEL = "tekton.dev/pipeline"

ARGO_PHASE = {"Pending": "pending", "Running": "running", "Succeeded": "succeeded", "Failed": "failed",
              "Error": "error"}  # fmt: skip
NODE_PHASE = {**ARGO_PHASE, "Skipped": "skipped", "Omitted": "skipped"}
STRUCTURE_TYPES = {"DAG", "Steps", "StepGroup", "TaskGroup", "Retry", "Suspend"}
# KFP v2 templates, also with the retry-/metadata-... prefixes the compiler adds.
KFP_EXECUTOR_TEMPLATES = re.compile(r"system-container-(executor|impl)$")
KFP_DRIVER_TEMPLATES = re.compile(r"system-(dag|container)-driver$")
FAILURE_REASONS = ("OOMKilled", "DeadlineExceeded", "Evicted", "Error")
ATTEMPT_SUFFIX = re.compile(r"\((\d+)\)$")
RUN = "pipelines/run/"


@dataclass
class Step:
    name: str
    status: str
    started: float | None
    finished: float | None
    attempts: int
    node_ids: list[str] = field(default_factory=list)
    reason: str = ""


@dataclass
class Attempt:
    node_id: str
    step: str
    status: str
    started: float | None
    finished: float | None
    reason: str = ""


def failure_reason(message: str) -> str:
    """OOMKilled, DeadlineExceeded, Evicted or Error from an Argo node message, else Unknown."""
    for reason in FAILURE_REASONS:
        if reason in message:
            return reason
    return "Unknown"


def _display_name(node: dict[str, Any]) -> str:
    return str(node.get("displayName") or node.get("name") or node.get("id") or "")


def workflow_attempts(nodes: dict[str, Any]) -> list[Attempt]:
    """Step attempts of a Workflow's status.nodes, with their step names."""
    parent: dict[str, str] = {}
    for node_id, node in nodes.items():
        if isinstance(node, dict):
            for child in node.get("children") or []:
                parent[str(child)] = node_id
    attempts = []
    for node_id, node in nodes.items():
        if not isinstance(node, dict):
            raise MalformedObject("bad_node")
        kind, template = node.get("type"), str(node.get("templateName") or "")
        if kind in STRUCTURE_TYPES or KFP_DRIVER_TEMPLATES.search(template):
            continue
        if kind not in ("Pod", "Container", "Skipped") and node.get("phase") not in ("Skipped", "Omitted"):
            continue
        name = _display_name(node)
        kfp_executor = KFP_EXECUTOR_TEMPLATES.search(template) is not None
        if kfp_executor or name in ("executor", "impl"):
            # KFP v2: the task is the DAG node that holds driver and executor.
            ancestor = parent.get(node_id)
            while ancestor is not None and (
                nodes[ancestor].get("type") == "Retry" or _display_name(nodes[ancestor]) in ("executor", "impl")
            ):
                ancestor = parent.get(ancestor)
            if ancestor is not None:
                name = _display_name(nodes[ancestor])
        name = ATTEMPT_SUFFIX.sub("", name)
        status = NODE_PHASE.get(str(node.get("phase") or "Pending"), "pending")
        if node.get("phase") == "Skipped" and kfp_executor:
            status = "cached"  # KFP skips the executor when the driver found a cached result
        message = str(node.get("message") or "")
        reason = failure_reason(message) if status in ("failed", "error") else ""
        attempts.append(Attempt(node_id, name, status, parse_time(node.get("startedAt")),
                                parse_time(node.get("finishedAt")), reason))  # fmt: skip
    return attempts


def steps_of(attempts: list[Attempt]) -> dict[str, Step]:
    steps: dict[str, Step] = {}
    for attempt in sorted(attempts, key=lambda a: (a.started or 0.0, a.node_id)):
        step = steps.get(attempt.step)
        if step is None:
            steps[attempt.step] = Step(attempt.step, attempt.status, attempt.started, attempt.finished, 1,
                                       [attempt.node_id], attempt.reason)  # fmt: skip
        else:  # a retry: the latest attempt decides
            step.status, step.started, step.finished = attempt.status, attempt.started, attempt.finished
            step.reason = attempt.reason
            step.attempts += 1
            step.node_ids.append(attempt.node_id)
    return steps


def pipeline_name(metadata: dict[str, Any], labels: dict[str, str]) -> str:
    annotations = metadata.get("annotations") or {}
    for value in (annotations.get(PIPELINE_NAME_ANNOTATION), labels.get(TEKTON_PIPELINE_LABEL)):
        if isinstance(value, str) and value:
            return value
    generated = metadata.get("generateName")
    if isinstance(generated, str) and generated.strip("-"):
        return generated.rstrip("-")
    return str(metadata.get("name") or "")


class Histogram:
    """Cumulative bucket counts per label set, rendered to bytes when they change."""

    def __init__(self, family: Family, buckets: tuple[float, ...]) -> None:
        self.family, self.buckets = family, buckets
        self.series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def ensure(self, labels: tuple[str, ...]) -> bool:
        """Create the label set at zero; True when it is new."""
        if labels in self.series:
            return False
        self.series[labels] = ([0] * (len(self.buckets) + 1), [0.0])
        return True

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        counts, total = self.series.setdefault(labels, ([0] * (len(self.buckets) + 1), [0.0]))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
        counts[-1] += 1
        total[0] += value

    def render(self, labels: tuple[str, ...]) -> str:
        counts, total = self.series[labels]
        f = self.family
        out = [
            f.sample(labels, n, "_bucket", f'le="{format_value(b)}"')
            for b, n in zip(self.buckets, counts, strict=False)
        ]
        out.append(f.sample(labels, counts[-1], "_bucket", 'le="+Inf"'))
        out.append(f.sample(labels, counts[-1], "_count"))
        out.append(f.sample(labels, total[0], "_sum"))
        return "".join(out)


@dataclass
class RunState:
    namespace: str
    name: str
    run_id: str
    pipeline: str
    finished: float | None
    steps: dict[str, Step]
    expired: bool = False


class PipelineSource(WatchSource):
    name = "pipelines"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retention = self.options.pipelines_retention
        self.started_at = time.time()
        self.runs: dict[str, RunState] = {}
        self.observed: dict[str, set[str]] = {}
        self.histogram = Histogram(c.PIPELINE_STEP_DURATION, BUCKETS)
        self.by_workflow: dict[tuple[str, str], str] = {}  # (namespace, workflow name) -> uid
        self.pods: dict[str, tuple[str, str, str, str, str]] = {}  # uid -> (ns, pod, workflow, node id, node)
        self.pods_by_workflow: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.watch(WORKFLOW, Callbacks(self.upsert_workflow, self.delete_run))
        self.watch(PIPELINERUN, Callbacks(self.upsert_pipelinerun, self.delete_run))
        self.watch(DSPA, Callbacks(self.upsert_dspa, self.delete_dspa))
        self.watch(PODS, Callbacks(self.upsert_pod, self.delete_pod), label_selector=POD_WORKFLOW_LABEL)

    def background(self) -> list[Any]:
        return [self._expire_loop()]

    # -- runs -------------------------------------------------------------------------------------
    def upsert_workflow(self, obj: dict[str, Any]) -> None:
        metadata, namespace, name, labels = metadata_of(obj)
        status = status_of(obj)
        uid = metadata["uid"]
        nodes = status.get("nodes") or {}
        if not isinstance(nodes, dict):
            raise MalformedObject("bad_nodes")
        offloaded = bool(status.get("offloadNodeStatusVersion"))
        attempts = workflow_attempts(nodes)
        state = ARGO_PHASE.get(str(status.get("phase") or "Pending"), "pending")
        # A resubmitted run can carry its old finishedAt while it runs again.
        finished = parse_time(status.get("finishedAt")) if state in ("succeeded", "failed", "error") else None
        run = RunState(
            namespace, name, str(labels.get(RUN_ID_LABEL) or uid), pipeline_name(metadata, labels), finished,
            steps_of(attempts),
        )  # fmt: skip
        self._observe(uid, run, attempts)
        extra: dict[Family, str] = {}
        resources = status.get("resourcesDuration") or {}
        if isinstance(resources, dict):
            extra[c.PIPELINE_RUN_RESOURCES] = "".join(
                c.PIPELINE_RUN_RESOURCES.sample((namespace, run.run_id, str(r)), float(v))
                for r, v in sorted(resources.items()) if isinstance(v, int | float)
            )  # fmt: skip
        extra[c.PIPELINE_RUN_OFFLOADED] = c.PIPELINE_RUN_OFFLOADED.sample((namespace, run.run_id), offloaded)
        run_name = (metadata.get("annotations") or {}).get(RUN_NAME_ANNOTATION) or name
        self._put_run(uid, run, str(run_name), "argo", state, parse_time(status.get("startedAt")), extra)
        if self.by_workflow.get((namespace, name)) != uid:
            self.by_workflow[(namespace, name)] = uid
        for pod_uid in self.pods_by_workflow.get((namespace, name), ()):
            self._render_pod(pod_uid)

    def upsert_pipelinerun(self, obj: dict[str, Any]) -> None:
        metadata, namespace, name, labels = metadata_of(obj)
        status = status_of(obj)
        uid = metadata["uid"]
        succeeded = next((cond for cond in conditions_of(status) if cond.get("type") == "Succeeded"), None)
        if succeeded is None:
            state = "pending"
        elif succeeded.get("status") == "True":
            state = "succeeded"
        elif succeeded.get("status") == "False":
            state = "failed"  # Failed, Cancelled, PipelineRunTimeout, ...
        else:
            state = "pending" if str(succeeded.get("reason") or "").endswith("Pending") else "running"
        finished = parse_time(status.get("completionTime")) if state in ("succeeded", "failed") else None
        run = RunState(namespace, name, str(labels.get(RUN_ID_LABEL) or uid), pipeline_name(metadata, labels),
                       finished, {})  # fmt: skip
        run_name = (metadata.get("annotations") or {}).get(RUN_NAME_ANNOTATION) or name
        self._put_run(uid, run, str(run_name), "tekton", state, parse_time(status.get("startTime")), {})

    def _observe(self, uid: str, run: RunState, attempts: list[Attempt]) -> None:
        seen = self.observed.setdefault(uid, set())
        for step in {a.step for a in attempts if a.status not in ("skipped", "cached")}:
            # Zero series for every outcome before the first observation, so that increase()
            # sees the step's first end instead of a series born at 1.
            for status in ("succeeded", "failed", "error"):
                labels = (run.namespace, run.pipeline, step, status)
                if self.histogram.ensure(labels):
                    self._render_histogram(labels)
        for attempt in attempts:
            if attempt.node_id in seen or attempt.finished is None or attempt.status in ("pending", "running"):
                continue
            seen.add(attempt.node_id)
            if (
                attempt.status in ("skipped", "cached")
                or attempt.started is None
                or attempt.finished < int(self.started_at)
            ):  # timestamps are whole seconds
                continue
            labels = (run.namespace, run.pipeline, attempt.step, attempt.status)
            self.histogram.observe(labels, max(attempt.finished - attempt.started, 0.0))
            self._render_histogram(labels)

    def _render_histogram(self, labels: tuple[str, ...]) -> None:
        key = "pipelines/hist/" + "\x1f".join(labels)
        self.store.put(key, {c.PIPELINE_STEP_DURATION: self.histogram.render(labels)})

    def _put_run(self, uid: str, run: RunState, run_name: str, engine: str, state: str, started: float | None,
                 extra: dict[Family, str]) -> None:  # fmt: skip
        self.runs[uid] = run
        run.expired = self._is_expired(run)
        if run.expired:
            self.store.delete(RUN + uid)
            return
        key = (run.namespace, run.run_id)
        lines: dict[Family, str] = {
            c.PIPELINE_RUN_INFO: c.PIPELINE_RUN_INFO.sample((*key, run_name, run.pipeline, engine), 1),
            c.PIPELINE_RUN_STATUS: "".join(c.PIPELINE_RUN_STATUS.sample((*key, s), s == state) for s in RUN_STATUSES),
            **extra,
        }
        if started is not None:
            lines[c.PIPELINE_RUN_START] = c.PIPELINE_RUN_START.sample(key, started)
        if run.finished is not None:
            lines[c.PIPELINE_RUN_COMPLETION] = c.PIPELINE_RUN_COMPLETION.sample(key, run.finished)
        step_lines: dict[Family, list[str]] = defaultdict(list)
        for step in run.steps.values():
            labels = (*key, step.name)
            step_lines[c.PIPELINE_STEP_STATUS] += [c.PIPELINE_STEP_STATUS.sample((*labels, s), s == step.status)
                                                   for s in STEP_STATUSES]  # fmt: skip
            step_lines[c.PIPELINE_STEP_ATTEMPTS].append(c.PIPELINE_STEP_ATTEMPTS.sample(labels, step.attempts))
            if step.reason:
                step_lines[c.PIPELINE_STEP_FAILURE].append(c.PIPELINE_STEP_FAILURE.sample((*labels, step.reason), 1))
            if step.started is not None:
                step_lines[c.PIPELINE_STEP_START].append(c.PIPELINE_STEP_START.sample(labels, step.started))
            if step.finished is not None and step.status not in ("pending", "running"):
                step_lines[c.PIPELINE_STEP_COMPLETION].append(c.PIPELINE_STEP_COMPLETION.sample(labels, step.finished))
        lines.update({family: "".join(v) for family, v in step_lines.items()})
        self.store.put(RUN + uid, lines)

    def _is_expired(self, run: RunState) -> bool:
        return run.finished is not None and time.time() - run.finished > self.retention

    def expire(self) -> int:
        """Drop per-run and per-step series of runs finished longer ago than the retention."""
        dropped = 0
        for uid, run in self.runs.items():
            if not run.expired and self._is_expired(run):
                run.expired = True
                self.store.delete(RUN + uid)
                dropped += 1
        return dropped

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(min(60.0, max(self.retention / 10, 1.0)))
            self.expire()

    def delete_run(self, uid: str) -> None:
        self.store.delete(RUN + uid)
        run = self.runs.pop(uid, None)
        self.observed.pop(uid, None)
        if run is not None and self.by_workflow.get((run.namespace, run.name)) == uid:
            del self.by_workflow[(run.namespace, run.name)]

    # -- step pods --------------------------------------------------------------------------------
    def upsert_pod(self, obj: dict[str, Any]) -> None:
        metadata, namespace, name, labels = metadata_of(obj)
        workflow = labels.get(POD_WORKFLOW_LABEL)
        node_id = (metadata.get("annotations") or {}).get(POD_NODE_ANNOTATION)
        if not isinstance(workflow, str) or not isinstance(node_id, str) or not workflow or not node_id:
            raise MalformedObject("no_workflow_node")
        spec = obj.get("spec") or {}
        node = str(spec.get("nodeName") or "") if isinstance(spec, dict) else ""
        uid = metadata["uid"]
        self.pods[uid] = (namespace, name, workflow, node_id, node)
        self.pods_by_workflow[(namespace, workflow)].add(uid)
        self._render_pod(uid)

    def _render_pod(self, uid: str) -> None:
        namespace, name, workflow, node_id, node = self.pods[uid]
        run = self.runs.get(self.by_workflow.get((namespace, workflow), ""))
        step = next((s for s in run.steps.values() if node_id in s.node_ids), None) if run else None
        if run is None or step is None or run.expired:
            self.store.delete(f"pipelines/pod/{uid}")
            return
        # replica_type carries the pod's role in its workload: the step.
        line = c.WORKLOAD_POD_INFO.sample((namespace, name, "PipelineRun", run.run_id, node, step.name), 1)
        self.store.put(f"pipelines/pod/{uid}", {c.WORKLOAD_POD_INFO: line})

    def delete_pod(self, uid: str) -> None:
        self.store.delete(f"pipelines/pod/{uid}")
        entry = self.pods.pop(uid, None)
        if entry is not None:
            self.pods_by_workflow[(entry[0], entry[2])].discard(uid)

    # -- pipeline servers -------------------------------------------------------------------------
    def upsert_dspa(self, obj: dict[str, Any]) -> None:
        metadata, namespace, name, _ = metadata_of(obj)
        conditions = conditions_of(status_of(obj))
        ready = any(cond.get("type") == "Ready" and cond.get("status") == "True" for cond in conditions)
        key = (namespace, name)
        lines = {
            c.PIPELINE_SERVER_READY: c.PIPELINE_SERVER_READY.sample(key, ready),
            c.PIPELINE_SERVER_CONDITION: "".join(
                c.PIPELINE_SERVER_CONDITION.sample((*key, str(cond.get("type"))), cond.get("status") == "True")
                for cond in conditions if cond.get("type")
            ),
        }  # fmt: skip
        self.store.put(f"pipelines/dspa/{metadata['uid']}", lines)

    def delete_dspa(self, uid: str) -> None:
        self.store.delete(f"pipelines/dspa/{uid}")
