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

NB = ("namespace", "notebook")
NOTEBOOK_INFO = Family(
    "ml_notebook_info",
    "gauge",
    "One series per Notebook (workbench); value 1. user, image, accelerator as Open Data Hub records them.",
    (*NB, "user", "image", "accelerator"),
    "notebooks",
)
NOTEBOOK_STATUS = Family(
    "ml_notebook_status",
    "gauge",
    "State-set of the notebook's status: running, starting, stopped (rule in docs/notebooks.md).",
    (*NB, "status"),
    "notebooks",
)
NOTEBOOK_CREATED = Family(
    "ml_notebook_created_timestamp_seconds", "gauge", "When the Notebook object was created.", NB, "notebooks"
)
NOTEBOOK_START = Family(
    "ml_notebook_start_timestamp_seconds",
    "gauge",
    "When the notebook container last started running (status.containerState.running.startedAt).",
    NB,
    "notebooks",
)
NOTEBOOK_LAST_ACTIVITY = Family(
    "ml_notebook_last_activity_timestamp_seconds",
    "gauge",
    "Last kernel or terminal activity recorded by the culler (notebooks.kubeflow.org/last-activity).",
    NB,
    "notebooks",
)
NOTEBOOK_STOPPED = Family(
    "ml_notebook_stopped_timestamp_seconds",
    "gauge",
    "When the notebook was stopped or culled (kubeflow-resource-stopped annotation).",
    NB,
    "notebooks",
)
NOTEBOOK_REQUESTS = Family(
    "ml_notebook_resource_requests",
    "gauge",
    "Resources the notebook pod template requests, summed over containers (unit: core, byte, integer).",
    (*NB, "resource", "unit"),
    "notebooks",
)
NOTEBOOK_LIMITS = Family(
    "ml_notebook_resource_limits",
    "gauge",
    "Resource limits of the notebook pod template, summed over containers (unit: core, byte, integer).",
    (*NB, "resource", "unit"),
    "notebooks",
)
NOTEBOOK_KERNELS = Family(
    "ml_notebook_kernels",
    "gauge",
    "Jupyter kernels by execution state (idle, busy, starting, other), as the activity probe last saw.",
    (*NB, "execution_state"),
    "notebooks",
)
NOTEBOOK_TERMINALS = Family(
    "ml_notebook_terminals",
    "gauge",
    "Open Jupyter terminals, as the activity probe last saw.",
    NB,
    "notebooks",
)
NOTEBOOK_PROBE_ACTIVITY = Family(
    "ml_notebook_probe_last_activity_timestamp_seconds",
    "gauge",
    "Last kernel or terminal activity the probe saw (the probe time itself while a kernel is busy).",
    NB,
    "notebooks",
)
NOTEBOOK_PROBE_UP = Family(
    "ml_notebook_probe_up", "gauge", "1 when the last activity probe of the notebook worked.", NB, "notebooks"
)
CULLING_ENABLED = Family(
    "ml_notebook_culling_enabled",
    "gauge",
    "1 when the notebook controller culls idle notebooks (ENABLE_CULLING); namespace is the controller's.",
    ("namespace",),
    "notebooks",
)
CULLING_IDLE = Family(
    "ml_notebook_culling_idle_threshold_seconds",
    "gauge",
    "Idle time after which the controller culls a notebook (CULL_IDLE_TIME).",
    ("namespace",),
    "notebooks",
)
CULLING_PERIOD = Family(
    "ml_notebook_culling_check_period_seconds",
    "gauge",
    "How often the controller checks notebooks for idleness (IDLENESS_CHECK_PERIOD).",
    ("namespace",),
    "notebooks",
)

RUN = ("namespace", "run_id")
STEP = (*RUN, "step")
PIPELINE_RUN_INFO = Family(
    "ml_pipeline_run_info",
    "gauge",
    "One series per pipeline run (Argo Workflow of Data Science Pipelines v2 / KFP, or Tekton PipelineRun).",
    (*RUN, "run_name", "pipeline", "engine"),
    "pipelines",
)
PIPELINE_RUN_STATUS = Family(
    "ml_pipeline_run_status",
    "gauge",
    "State-set of the run's status: pending, running, succeeded, failed, error.",
    (*RUN, "status"),
    "pipelines",
)
PIPELINE_RUN_START = Family(
    "ml_pipeline_run_start_timestamp_seconds", "gauge", "When the run started.", RUN, "pipelines"
)
PIPELINE_RUN_COMPLETION = Family(
    "ml_pipeline_run_completion_timestamp_seconds",
    "gauge",
    "When the run finished; absent while it runs.",
    RUN,
    "pipelines",
)
PIPELINE_RUN_RESOURCES = Family(
    "ml_pipeline_run_resources_duration_seconds",
    "gauge",
    "Argo's resourcesDuration of the run: resource-seconds (cpu: core-seconds, memory: GiB-seconds) by resource.",
    (*RUN, "resource"),
    "pipelines",
)
PIPELINE_RUN_OFFLOADED = Family(
    "ml_pipeline_run_node_status_offloaded",
    "gauge",
    "1 when the Workflow's node status is offloaded to a database: its steps are not visible here.",
    RUN,
    "pipelines",
)
PIPELINE_STEP_STATUS = Family(
    "ml_pipeline_step_status",
    "gauge",
    "State-set of a step's status: pending, running, succeeded, failed, error, skipped, cached.",
    (*STEP, "status"),
    "pipelines",
)
PIPELINE_STEP_START = Family(
    "ml_pipeline_step_start_timestamp_seconds",
    "gauge",
    "When the step (its last attempt) started.",
    STEP,
    "pipelines",
)
PIPELINE_STEP_COMPLETION = Family(
    "ml_pipeline_step_completion_timestamp_seconds",
    "gauge",
    "When the step finished; absent while it runs.",
    STEP,
    "pipelines",
)
PIPELINE_STEP_ATTEMPTS = Family(
    "ml_pipeline_step_attempts", "gauge", "Pods the step ran (retries + 1).", STEP, "pipelines"
)
PIPELINE_STEP_FAILURE = Family(
    "ml_pipeline_step_failure_info",
    "gauge",
    "Why a failed step failed (OOMKilled, DeadlineExceeded, Evicted, Error, Unknown), from Argo's node message.",
    (*STEP, "reason"),
    "pipelines",
)
PIPELINE_STEP_DURATION = Family(
    "ml_pipeline_step_duration_seconds",
    "histogram",
    "Duration of finished step attempts, observed once per attempt when it ends.",
    ("namespace", "pipeline", "step", "status"),
    "pipelines",
)
PIPELINE_SERVER_READY = Family(
    "ml_pipeline_server_ready",
    "gauge",
    "1 when the DataSciencePipelinesApplication reports Ready.",
    ("namespace", "dspa"),
    "pipelines",
)
PIPELINE_SERVER_CONDITION = Family(
    "ml_pipeline_server_condition",
    "gauge",
    "Each condition of the DataSciencePipelinesApplication: 1 when True.",
    ("namespace", "dspa", "condition"),
    "pipelines",
)

ISVC = ("namespace", "inference_service")
INFERENCE_SERVICE_INFO = Family(
    "ml_inference_service_info",
    "gauge",
    "One series per KServe InferenceService; value 1.",
    (*ISVC, "runtime", "model_format", "deployment_mode"),
    "serving",
)
INFERENCE_SERVICE_READY = Family(
    "ml_inference_service_ready", "gauge", "1 when the InferenceService's Ready condition is True.", ISVC, "serving"
)
INFERENCE_SERVICE_CONDITION = Family(
    "ml_inference_service_condition",
    "gauge",
    "Each condition of the InferenceService (Ready, PredictorReady, IngressReady, ...): 1 when True.",
    (*ISVC, "condition"),
    "serving",
)
INFERENCE_SERVICE_MODEL_STATE = Family(
    "ml_inference_service_model_state",
    "gauge",
    "State-set of status.modelStatus.states.activeModelState: pending, standby, loading, loaded, failed_to_load.",
    (*ISVC, "state"),
    "serving",
)
INFERENCE_SERVICE_REVISION = Family(
    "ml_inference_service_latest_ready_revision_info",
    "gauge",
    "The latest ready revision of each component (serverless deployments); value 1.",
    (*ISVC, "component", "revision"),
    "serving",
)
MODEL_POD_INFO = Family(
    "ml_model_pod_info",
    "gauge",
    "Join table: a model-server pod, its InferenceService, component and model version; value 1.",
    ("namespace", "pod", "inference_service", "component", "version"),
    "serving",
)

PLATFORM_READY = Family(
    "ml_platform_ready",
    "gauge",
    "1 when the platform object is ready (DataScienceCluster: Ready condition; DSCInitialization: phase Ready).",
    ("kind", "name"),
    "platform",
)
PLATFORM_COMPONENT_INFO = Family(
    "ml_platform_component_info",
    "gauge",
    "Each component of the DataScienceCluster and its management state (Managed, Removed, Unmanaged); value 1.",
    ("component", "management_state"),
    "platform",
)
PLATFORM_COMPONENT_READY = Family(
    "ml_platform_component_ready",
    "gauge",
    "1 when a managed component's <Component>Ready condition is True (absent for removed components).",
    ("component",),
    "platform",
)
PLATFORM_INFO = Family(
    "ml_platform_info",
    "gauge",
    "The DSCInitialization's applications namespace and monitoring state; value 1.",
    ("name", "applications_namespace", "monitoring"),
    "platform",
)

# Node role: one physical GPU or MIG device per `uuid` (MIG devices: MIG-...; `gpu` is the
# physical GPU's NVML index). Measurements NVML cannot take for a device are absent, not 0.
DEV = ("node", "gpu", "uuid")
GPU_INFO = Family(
    "ml_gpu_info",
    "gauge",
    "One series per GPU or MIG device; parent_uuid is the physical GPU (its own uuid for a whole GPU), "
    "gpu_instance the MIG GPU instance id (empty for a whole GPU); value 1.",
    (*DEV, "model", "pci_bus_id", "driver_version", "mig_profile", "parent_uuid", "gpu_instance"),
    "gpu",
)
GPU_UP = Family(
    "ml_gpu_up",
    "gauge",
    "1 while the device answers NVML; 0 when it is lost or its calls hang (its measurements are then removed).",
    DEV,
    "gpu",
)
GPU_UTILIZATION = Family(
    "ml_gpu_utilization_ratio",
    "gauge",
    "Fraction of the last sample period in which a kernel ran (0-1); absent on MIG, where NVML cannot measure it.",
    DEV,
    "gpu",
)
GPU_MEMORY_UTILIZATION = Family(
    "ml_gpu_memory_utilization_ratio",
    "gauge",
    "Fraction of the last sample period in which device memory was read or written (0-1).",
    DEV,
    "gpu",
)
GPU_MEMORY_USED = Family(
    "ml_gpu_memory_used_bytes",
    "gauge",
    "Device memory in use. A MIG-enabled GPU reports memory per MIG device only, so sums never count twice.",
    DEV,
    "gpu",
)
GPU_MEMORY_TOTAL = Family(
    "ml_gpu_memory_total_bytes",
    "gauge",
    "Device memory in total (per MIG device on a MIG-enabled GPU).",
    DEV,
    "gpu",
)
GPU_POWER = Family("ml_gpu_power_watts", "gauge", "Power draw of the physical GPU.", DEV, "gpu")
GPU_ENERGY = Family(
    "ml_gpu_energy_joules_total",
    "counter",
    "Energy the physical GPU consumed since the driver was loaded.",
    DEV,
    "gpu",
)
GPU_TEMPERATURE = Family("ml_gpu_temperature_celsius", "gauge", "GPU core temperature.", DEV, "gpu")
GPU_SM_CLOCK = Family("ml_gpu_sm_clock_hertz", "gauge", "Current streaming-multiprocessor clock.", DEV, "gpu")
GPU_XID_ERRORS = Family(
    "ml_gpu_xid_errors_total",
    "counter",
    "XID errors the driver reported, one counter per XID code (every event counts, not only the last).",
    (*DEV, "xid"),
    "gpu",
)
GPU_ECC_ERRORS = Family(
    "ml_gpu_ecc_errors_total",
    "counter",
    "ECC memory errors over the GPU's lifetime (aggregate counter), by type (corrected, uncorrected).",
    (*DEV, "type"),
    "gpu",
)
GPU_THROTTLE = Family(
    "ml_gpu_clock_throttle_reasons",
    "gauge",
    "1 for each reason the clocks are held down now (gpu_idle, sw_power_cap, hw_slowdown, sw_thermal, ...), else 0.",
    (*DEV, "reason"),
    "gpu",
)
GPU_PROCESS_MEMORY = Family(
    "ml_gpu_process_memory_used_bytes",
    "gauge",
    "Device memory of compute processes per container (pod_uid, container_id from /proc/<pid>/cgroup; "
    "empty for processes outside a pod). Only with --nvml.process-memory (needs hostPID).",
    (*DEV, "pod_uid", "container_id"),
    "gpu",
)
GPU_ALLOCATION_INFO = Family(
    "ml_gpu_allocation_info",
    "gauge",
    "Join table from the kubelet's PodResources API: a container and a device assigned to it; value 1. "
    "Not de-duplicated: a time-sliced GPU appears once per container holding it.",
    ("namespace", "pod", "container", "node", "uuid", "resource"),
    "gpu",
)

BUILD_INFO = Family(
    "ml_exporter_build_info",
    "gauge",
    "Exporter build facts; value 1.",
    ("version", "python_version", "role"),
)
SHARD_ORDINAL = Family(
    "ml_exporter_shard_ordinal",
    "gauge",
    "This cluster-role instance's shard (it serves the namespaces whose hash modulo total shards is this).",
    (),
)
TOTAL_SHARDS = Family("ml_exporter_total_shards", "gauge", "How many cluster-role instances split the namespaces.", ())
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
SOURCE_SERIES = Family(
    "ml_exporter_source_series",
    "gauge",
    "Series the source holds now (its objects' lines; see --limits.series-per-source).",
    ("source",),
)
SERIES_DROPPED = Family(
    "ml_exporter_series_dropped_total",
    "counter",
    "Series not served because the source reached --limits.series-per-source.",
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
    "Failed requests to the source's API (Kubernetes, NVML, PodResources), by reason (HTTP status, timeout, ...).",
    ("source", "resource", "reason"),
)
NOTEBOOK_PROBES = Family(
    "ml_exporter_notebook_probes_total",
    "counter",
    "Notebook activity probes by result (ok, timeout, connection, http_<code>, invalid).",
    ("result",),
)
OBJECTS_SKIPPED = Family(
    "ml_exporter_objects_skipped_total",
    "counter",
    "Objects that could not be read and were skipped, by reason.",
    ("source", "resource", "reason"),
)
GPU_POLL_DURATION = Family(
    "ml_exporter_gpu_poll_duration_seconds",
    "gauge",
    "Wall time of the last NVML poll of all devices.",
    (),
)
GPU_REINITIALIZATIONS = Family(
    "ml_exporter_nvml_reinitializations_total",
    "counter",
    "Times NVML was shut down and initialised again after a device was lost or initialisation failed.",
    (),
)
PROCESS_FAMILIES = (
    Family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", ()),
    Family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", ()),
    Family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", ()),
    Family("process_open_fds", "gauge", "Number of open file descriptors.", ()),
    Family("process_max_fds", "gauge", "Maximum number of open file descriptors.", ()),
    Family("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", ()),
)

FAMILIES: tuple[Family, ...] = (
    TRAINING_JOB_INFO,
    TRAINING_JOB_STATUS,
    TRAINING_JOB_CREATED,
    TRAINING_JOB_START,
    TRAINING_JOB_COMPLETION,
    TRAINING_JOB_REPLICAS,
    NOTEBOOK_INFO,
    NOTEBOOK_STATUS,
    NOTEBOOK_CREATED,
    NOTEBOOK_START,
    NOTEBOOK_LAST_ACTIVITY,
    NOTEBOOK_STOPPED,
    NOTEBOOK_REQUESTS,
    NOTEBOOK_LIMITS,
    NOTEBOOK_KERNELS,
    NOTEBOOK_TERMINALS,
    NOTEBOOK_PROBE_ACTIVITY,
    NOTEBOOK_PROBE_UP,
    CULLING_ENABLED,
    CULLING_IDLE,
    CULLING_PERIOD,
    PIPELINE_RUN_INFO,
    PIPELINE_RUN_STATUS,
    PIPELINE_RUN_START,
    PIPELINE_RUN_COMPLETION,
    PIPELINE_RUN_RESOURCES,
    PIPELINE_RUN_OFFLOADED,
    PIPELINE_STEP_STATUS,
    PIPELINE_STEP_START,
    PIPELINE_STEP_COMPLETION,
    PIPELINE_STEP_ATTEMPTS,
    PIPELINE_STEP_FAILURE,
    PIPELINE_STEP_DURATION,
    PIPELINE_SERVER_READY,
    PIPELINE_SERVER_CONDITION,
    INFERENCE_SERVICE_INFO,
    INFERENCE_SERVICE_READY,
    INFERENCE_SERVICE_CONDITION,
    INFERENCE_SERVICE_MODEL_STATE,
    INFERENCE_SERVICE_REVISION,
    MODEL_POD_INFO,
    PLATFORM_READY,
    PLATFORM_COMPONENT_INFO,
    PLATFORM_COMPONENT_READY,
    PLATFORM_INFO,
    WORKLOAD_POD_INFO,
    GPU_INFO,
    GPU_UP,
    GPU_UTILIZATION,
    GPU_MEMORY_UTILIZATION,
    GPU_MEMORY_USED,
    GPU_MEMORY_TOTAL,
    GPU_POWER,
    GPU_ENERGY,
    GPU_TEMPERATURE,
    GPU_SM_CLOCK,
    GPU_XID_ERRORS,
    GPU_ECC_ERRORS,
    GPU_THROTTLE,
    GPU_PROCESS_MEMORY,
    GPU_ALLOCATION_INFO,
    BUILD_INFO,
    SHARD_ORDINAL,
    TOTAL_SHARDS,
    SOURCE_UP,
    SOURCE_SYNCED,
    SOURCE_LAST_SYNC,
    SOURCE_SERIES,
    SERIES_DROPPED,
    RESOURCE_INSTALLED,
    TRACKED_OBJECTS,
    WATCH_EVENTS,
    WATCH_RESTARTS,
    API_ERRORS,
    OBJECTS_SKIPPED,
    NOTEBOOK_PROBES,
    GPU_POLL_DURATION,
    GPU_REINITIALIZATIONS,
    *PROCESS_FAMILIES,
)

BY_NAME = {f.name: f for f in FAMILIES}
