"""The model-serving recording rules, generated from one table of model servers.

Every server names requests, errors and latency differently and in other units;
the table below says how to read each, and the generator writes the same set of
normalised rules for all of them into recording_rules/serving.rules.yaml. Which
source wins for a pod is fixed: the server's own metrics (vLLM, OVMS, TGIS), else
Knative's queue-proxy, else the KServe Python server (which counts no errors), so
requests are never counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.pack import rules_yaml


@dataclass(frozen=True)
class Server:
    name: str
    requests: tuple[str, ...]  # counters whose rates add up to requests/s
    errors: str | None  # counter selector of failed requests, when the server counts them
    latency: str  # the histogram's _bucket series
    seconds: float  # divide the histogram's unit by this to get seconds


SERVERS = (
    Server("vllm", ("vllm:request_success_total",), 'vllm:request_success_total{finished_reason=~"abort|error"}',
           "vllm:e2e_request_latency_seconds_bucket", 1),
    Server("ovms", ('ovms_requests_success{method=~"Predict|ModelInfer|Unary|Stream"}',
                    'ovms_requests_fail{method=~"Predict|ModelInfer|Unary|Stream"}'),
           'ovms_requests_fail{method=~"Predict|ModelInfer|Unary|Stream"}', "ovms_request_time_us_bucket", 1e6),
    # TGIS counters may or may not carry _total, depending on the Rust exporter's version.
    Server("tgis", ('{__name__=~"tgi_request_success(_total)?"}', '{__name__=~"tgi_request_failure(_total)?"}'),
           '{__name__=~"tgi_request_failure(_total)?"}', "tgi_request_duration_bucket", 1),
    Server("queue_proxy", ("revision_request_count",), 'revision_request_count{response_code_class="5xx"}',
           "revision_request_latencies_bucket", 1000),
    Server("kserve", ("request_predict_seconds_count",), None, "request_predict_seconds_bucket", 1),
)  # fmt: skip
OWN = ("vllm", "ovms", "tgis")  # servers that count their own requests and errors
POD = 'label_replace({rate}, "server", "{server}", "", "")'
JOIN = "* on (namespace, pod) group_left (model, version) namespace_pod:ml_model_pod_info:max"
WINDOW = "5m"


def _rate(counters: tuple[str, ...] | str) -> str:
    """Summed per pod; several counters add up, each counting 0 where only the other exists."""
    if isinstance(counters, str):
        counters = (counters,)
    sums = [f"sum by (namespace, pod) (rate({c}[{WINDOW}]))" for c in counters]
    if len(sums) == 1:
        return sums[0]
    return " + ".join(f"({s} or {' or '.join(o + ' * 0' for o in sums if o != s)})" for s in sums)


def _pods(selector_of: dict[str, tuple[str, ...] | str]) -> str:
    return "\nor ".join(POD.format(rate=_rate(sel), server=name) for name, sel in selector_of.items())


def _first(*alternatives: str, on: str = "namespace, pod") -> str:
    """The first alternative that has series for a given `on` key."""
    return f"\nor on ({on})\n".join(f"(\n  {a.replace(chr(10), chr(10) + '  ')}\n)" for a in alternatives)


def rules() -> list[dict[str, str]]:
    by = {s.name: s for s in SERVERS}
    own_requests = _pods({n: by[n].requests for n in OWN})
    own_errors = _pods({n: str(by[n].errors) for n in OWN})
    out = [
        {"record": "namespace_pod:ml_model_pod_info:max",
         "expr": 'max by (namespace, pod, model, version) (label_replace(ml_model_pod_info, "model", "$1", '
                 '"inference_service", "(.+)"))'},
        {"record": "namespace_pod_server:ml_model_requests:rate5m",
         "expr": _first(own_requests, _pods({"queue_proxy": by["queue_proxy"].requests}),
                        _pods({"kserve": by["kserve"].requests}))},
        # Errors from the same source as the requests: a server's own count (0 until its first error),
        # else queue-proxy's 5xx. The KServe Python server counts none: its pods have no error series.
        {"record": "namespace_pod_server:ml_model_request_errors:rate5m",
         "expr": _first(own_errors, f"({own_requests}) * 0",
                        _pods({"queue_proxy": str(by["queue_proxy"].errors)}))},
    ]  # fmt: skip
    for metric in ("requests", "request_errors"):
        out.append({
            "record": f"namespace_model_version:ml_model_{metric}:rate5m",
            # Pods outside KServe that follow the prometheus_client convention name their model themselves.
            "expr": f"sum by (namespace, model, version) (namespace_pod_server:ml_model_{metric}:rate5m {JOIN})\n"
                    f"or\nsum by (namespace, model, version) (rate(model_{metric}_total[{WINDOW}]))",
        })  # fmt: skip
    out.append({"record": "namespace_model_version:ml_model_request_error:ratio_rate5m",
                "expr": "namespace_model_version:ml_model_request_errors:rate5m\n"
                        "/ namespace_model_version:ml_model_requests:rate5m"})  # fmt: skip
    order = [*OWN, "kserve", "queue_proxy"]  # latency: the server's own view first, the sidecar's last
    for q, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        alternatives = [
            f"histogram_quantile({q}, sum by (namespace, model, version, le) "
            f"(rate({by[s].latency}[{WINDOW}]) {JOIN})){'' if by[s].seconds == 1 else f' / {by[s].seconds:g}'}"
            for s in order
        ]
        alternatives.append(f"histogram_quantile({q}, sum by (namespace, model, version, le) "
                            f"(rate(model_request_duration_seconds_bucket[{WINDOW}])))")  # fmt: skip
        out.append({"record": f"namespace_model_version:ml_model_request_duration_seconds:{name}_rate5m",
                    "expr": _first(*alternatives, on="namespace, model, version")})  # fmt: skip
    llm = {
        "ml_model_time_to_first_token_seconds:p95_rate5m":
            f"histogram_quantile(0.95, sum by (namespace, model, version, le) "
            f"(rate(vllm:time_to_first_token_seconds_bucket[{WINDOW}]) {JOIN}))",
        "ml_model_generated_tokens:rate5m": _first(
            f"sum by (namespace, model, version) (rate(vllm:generation_tokens_total[{WINDOW}]) {JOIN})",
            f"sum by (namespace, model, version) (rate(tgi_request_generated_tokens_sum[{WINDOW}]) {JOIN})",
            on="namespace, model, version"),
        "ml_model_requests_running:sum":
            f"sum by (namespace, model, version) (vllm:num_requests_running {JOIN})",
        "ml_model_requests_waiting:sum": _first(
            f"sum by (namespace, model, version) (vllm:num_requests_waiting {JOIN})",
            f"sum by (namespace, model, version) (tgi_queue_size {JOIN})", on="namespace, model, version"),
        # vLLM renamed gpu_cache_usage_perc to kv_cache_usage_perc (0-1); either, once per pod.
        "ml_model_kv_cache_usage:ratio":
            'avg by (namespace, model, version) (max by (namespace, pod) '
            f'({{__name__=~"vllm:(kv|gpu)_cache_usage_perc"}}) {JOIN})',
    }  # fmt: skip
    out += [{"record": f"namespace_model_version:{name}", "expr": expr} for name, expr in llm.items()]
    out += [
        {"record": "namespace_model_version_pod:ml_model_pod_cpu_usage_cores:sum_rate5m",
         "expr": "sum by (namespace, model, version, pod) (sum by (namespace, pod) "
                 f'(rate(container_cpu_usage_seconds_total{{container!="", container!="POD"}}[{WINDOW}])) {JOIN})'},
        {"record": "namespace_model_version_pod:ml_model_pod_memory_working_set_bytes:sum",
         "expr": 'sum by (namespace, model, version, pod) (sum by (namespace, pod) (container_memory_working_set_bytes'
                 f'{{container!="", container!="POD"}}) {JOIN})'},
        {"record": "namespace_model_version:ml_model_gpu_utilization:avg",
         "expr": f"avg by (namespace, model, version) (namespace_pod_uuid:ml_gpu_utilization_ratio:max {JOIN})"},
        {"record": "namespace_model_version:ml_model_gpus:count",
         "expr": f"count by (namespace, model, version) (namespace_pod_uuid:ml_gpu_utilization_ratio:max {JOIN})"},
        {"record": "namespace_model:ml_inference_service_ready:max",
         "expr": 'max by (namespace, model) (label_replace(ml_inference_service_ready, "model", "$1", '
                 '"inference_service", "(.+)"))'},
    ]  # fmt: skip
    return out


HEADER = """\
# Generated by `make generate` from exporter/pack/serving_rules.py; do not edit.
# Model serving: one set of series for vLLM, OpenVINO Model Server, TGIS, the KServe Python
# server, Knative's queue-proxy and the prometheus_client convention (model_requests_total,
# model_request_errors_total, model_request_duration_seconds with labels model and version).
"""


def rules_file() -> str:
    return rules_yaml.dump(HEADER, [{"name": "ml-serving.rules", "interval": "30s", "rules": rules()}])
