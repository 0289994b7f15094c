"""The metric catalogue: every family this exporter can emit, in exposition order.

`docs/metrics.md` is generated from this list (`python -m exporter.pack generate`).
"""

from __future__ import annotations

from exporter.exposition import Family

JOB = ("namespace", "job_name", "kind")

TRAINING_JOB_INFO = Family(
    "ml_training_job_info",
    "gauge",
    "One series per training job (Kubeflow v1 kinds, TrainJob, RayJob); value 1.",
    (*JOB, "queue"),
    "training",
)
TRAINING_JOB_STATUS = Family(
    "ml_training_job_status",
    "gauge",
    "State-set of the job's current status: pending, running, restarting, suspended, succeeded, failed.",
    (*JOB, "status"),
    "training",
)
TRAINING_JOB_CREATED = Family(
    "ml_training_job_created_timestamp_seconds",
    "gauge",
    "When the job object was created (metadata.creationTimestamp).",
    JOB,
    "training",
)
TRAINING_JOB_START = Family(
    "ml_training_job_start_timestamp_seconds",
    "gauge",
    "When the job started running; absent until it has.",
    JOB,
    "training",
)
TRAINING_JOB_COMPLETION = Family(
    "ml_training_job_completion_timestamp_seconds",
    "gauge",
    "When the job finished (succeeded or failed); absent while it has not.",
    JOB,
    "training",
)
TRAINING_JOB_REPLICAS = Family(
    "ml_training_job_replicas",
    "gauge",
    "Replicas of the job per replica type and state (active, succeeded, failed) as the operator reports.",
    (*JOB, "replica_type", "state"),
    "training",
)
WORKLOAD_POD_INFO = Family(
    "ml_workload_pod_info",
    "gauge",
    "Join table: a pod and the ML workload it belongs to; value 1.",
    ("namespace", "pod", "workload_kind", "workload", "node", "replica_type"),
    "workloads",
)

BUILD_INFO = Family(
    "ml_exporter_build_info",
    "gauge",
    "Exporter build facts; value 1.",
    ("version", "python_version", "role"),
)
SOURCE_UP = Family(
    "ml_exporter_source_up",
    "gauge",
    "1 when the source's last list, watch or poll worked.",
    ("source",),
)
SOURCE_SYNCED = Family(
    "ml_exporter_source_synced",
    "gauge",
    "1 once every resource of the source finished its first list (or is not installed).",
    ("source",),
)
SOURCE_LAST_SYNC = Family(
    "ml_exporter_source_last_sync_timestamp_seconds",
    "gauge",
    "When the source last completed a full list of all its resources.",
    ("source",),
)
RESOURCE_INSTALLED = Family(
    "ml_exporter_resource_installed",
    "gauge",
    "1 when the API serves the resource; 0 when its CRD is not installed (retried slowly).",
    ("source", "resource"),
)
TRACKED_OBJECTS = Family(
    "ml_exporter_tracked_objects",
    "gauge",
    "Objects of the resource currently held in memory.",
    ("source", "resource"),
)
WATCH_EVENTS = Family(
    "ml_exporter_watch_events_total",
    "counter",
    "Watch events received, by event type.",
    ("source", "resource", "type"),
)
WATCH_RESTARTS = Family(
    "ml_exporter_watch_restarts_total",
    "counter",
    "Times the list/watch loop had to start over, by reason (gone, error, timeout, relist).",
    ("source", "resource", "reason"),
)
API_ERRORS = Family(
    "ml_exporter_api_errors_total",
    "counter",
    "Failed Kubernetes API requests, by reason (HTTP status code, timeout, connection).",
    ("source", "resource", "reason"),
)
OBJECTS_SKIPPED = Family(
    "ml_exporter_objects_skipped_total",
    "counter",
    "Objects that could not be read and were skipped, by reason.",
    ("source", "resource", "reason"),
)
PROCESS_FAMILIES = (
    Family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", ()),
    Family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", ()),
    Family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", ()),
    Family("process_open_fds", "gauge", "Number of open file descriptors.", ()),
    Family("process_max_fds", "gauge", "Maximum number of open file descriptors.", ()),
    Family(
        "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", ()
    ),
)

FAMILIES: tuple[Family, ...] = (
    TRAINING_JOB_INFO,
    TRAINING_JOB_STATUS,
    TRAINING_JOB_CREATED,
    TRAINING_JOB_START,
    TRAINING_JOB_COMPLETION,
    TRAINING_JOB_REPLICAS,
    WORKLOAD_POD_INFO,
    BUILD_INFO,
    SOURCE_UP,
    SOURCE_SYNCED,
    SOURCE_LAST_SYNC,
    RESOURCE_INSTALLED,
    TRACKED_OBJECTS,
    WATCH_EVENTS,
    WATCH_RESTARTS,
    API_ERRORS,
    OBJECTS_SKIPPED,
    *PROCESS_FAMILIES,
)

BY_NAME = {f.name: f for f in FAMILIES}
