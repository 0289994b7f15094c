"""For pipeline steps: publish how many records a step processed.

Steps are short-lived pods, so they push instead of being scraped: the total goes
to a Prometheus Pushgateway as `ml_pipeline_records_processed_total{namespace,
run_id, step}`, grouped by run and step (each push replaces the step's previous
total). Scrape the Pushgateway with `honorLabels: true`. Example (a KFP v2
component):

    from kfp import dsl

    @dsl.component(packages_to_install=["ml-workload-exporter"])
    def preprocess(run_id: str) -> None:
        from exporter.steps import publish_records_processed
        total = 0
        for batch in batches():
            total += len(batch)
            publish_records_processed(total, run_id=run_id, step="preprocess",
                                      gateway="http://pushgateway.monitoring:9091")

    # in the pipeline: preprocess(run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, push_to_gateway

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _own_namespace() -> str:
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def publish_records_processed(
    total: float,
    *,
    run_id: str,
    step: str,
    gateway: str | None = None,
    namespace: str | None = None,
    timeout: float = 10.0,
) -> None:
    """Push the step's running total of processed records to the Pushgateway.

    `gateway` defaults to $ML_PIPELINE_PUSHGATEWAY; `namespace` to $POD_NAMESPACE or the pod's own
    service-account namespace. Raises ValueError for a negative total or a missing gateway.
    """
    gateway = gateway or os.environ.get("ML_PIPELINE_PUSHGATEWAY")
    if not gateway:
        raise ValueError("no Pushgateway: pass gateway= or set ML_PIPELINE_PUSHGATEWAY")
    if total < 0:
        raise ValueError(f"records processed cannot be negative: {total}")
    registry = CollectorRegistry()
    counter = Counter(
        "ml_pipeline_records_processed",
        "Records a pipeline step processed (pushed by the step).",
        ("namespace", "run_id", "step"),
        registry=registry,
    )
    counter.labels(namespace if namespace is not None else _own_namespace(), run_id, step).inc(total)
    push_to_gateway(gateway, job="ml-pipeline-step", registry=registry,
                    grouping_key={"run_id": run_id, "step": step}, timeout=timeout)  # fmt: skip
