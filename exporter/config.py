"""Configuration from flags, environment variables and an optional YAML file.

Precedence: flag > environment variable > file > default. Every option has an
environment twin: `ML_EXPORTER_` + the flag name upper-cased with `.`/`-` as `_`
(`--web.listen-address` -> `ML_EXPORTER_WEB_LISTEN_ADDRESS`). The file uses the
flag names as keys. All problems are collected and reported together.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

ROLES = ("cluster", "node")
CLUSTER_SOURCES = ("training", "notebooks", "pipelines", "serving", "platform")
LOG_LEVELS = ("debug", "info", "warning", "error")

_LABEL_KEY = r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_SELECTOR_TERM = re.compile(
    rf"^\s*(!?{_LABEL_KEY}|{_LABEL_KEY}\s*(==?|!=)\s*[-A-Za-z0-9_.]*|{_LABEL_KEY}\s+(in|notin)\s+\([^()]*\))\s*$"
)
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ConfigError(Exception):
    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def _listen_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. 0.0.0.0:9835 or :9835)")
    return host.strip("[]") or "0.0.0.0", int(port)


def _path(value: str) -> str:
    if not value.startswith("/") or value in ("/healthz", "/readyz"):
        raise ValueError(f"{value!r} must start with '/' and not be /healthz or /readyz")
    return value


def _choice(options: Sequence[str]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in options:
            raise ValueError(f"{value!r} is not one of {', '.join(options)}")
        return value

    return parse


def _csv_choice(options: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    def parse(value: str) -> tuple[str, ...]:
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        unknown = [v for v in items if v not in options]
        if unknown or not items:
            raise ValueError(f"unknown source(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(options)}")
        return items

    return parse


def _namespaces(value: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in items if not _NAMESPACE.match(v) or len(v) > 63]
    if bad:
        raise ValueError(f"not namespace names: {', '.join(bad)}")
    return items


def _selector(value: str) -> str:
    terms = re.split(r",(?![^()]*\))", value)
    bad = [t for t in terms if not _SELECTOR_TERM.match(t)]
    if bad or not value.strip():
        raise ValueError(f"not a label selector: {value!r}")
    return value.strip()


def _seconds(minimum: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value.rstrip("s"))
        except ValueError:
            raise ValueError(f"{value!r} is not a number of seconds") from None
        if number < minimum:
            raise ValueError(f"{value!r} is below the minimum {minimum}")
        return number

    return parse


def _whole(minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        if not value.isdigit() or int(value) < minimum:
            raise ValueError(f"{value!r} is not {'a positive integer' if minimum else 'a whole number'}")
        return int(value)

    return parse


_positive_int = _whole(1)
_nonnegative_int = _whole(0)


def _shard(value: str) -> int:
    if value == "auto":
        # A StatefulSet pod is <name>-<ordinal>, and its host name is the pod's name.
        name = os.environ.get("POD_NAME") or socket.gethostname()
        match = re.search(r"-(\d+)$", name)
        if not match:
            raise ValueError(f"auto: {name!r} does not end in -<ordinal> (run as a StatefulSet, or set POD_NAME)")
        return int(match.group(1))
    if not value.isdigit():
        raise ValueError(f"{value!r} is not a shard number or auto")
    return int(value)


def _bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes", "on"):
        return True
    if value.lower() in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not true or false")


def _url_template(value: str) -> str:
    try:
        url = value.format(name="nb", namespace="ns")
    except (KeyError, IndexError, ValueError):
        raise ValueError(f"{value!r} may only use {{name}} and {{namespace}}") from None
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{value!r} is not an http(s) URL template")
    return value.rstrip("/")


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"{value!r} is not a regular expression: {exc}") from None
    return value


def _file(value: str) -> str:
    if not os.path.isfile(value):
        raise ValueError(f"{value!r}: no such file")
    return value


@dataclass(frozen=True)
class Option:
    name: str
    parse: Callable[[str], Any]
    default: str | None
    help: str

    @property
    def env(self) -> str:
        return "ML_EXPORTER_" + re.sub(r"[.-]", "_", self.name).upper()

    @property
    def attr(self) -> str:
        return re.sub(r"[.-]", "_", self.name)


OPTIONS = (
    Option("role", _choice(ROLES), "cluster", "cluster (watch the Kubernetes API) or node (GPUs via NVML)"),
    Option("kubeconfig", _file, None, "kubeconfig file; default: in-cluster, else $KUBECONFIG or ~/.kube/config"),
    Option("kube.context", str, None, "kubeconfig context to use (default: the current context)"),
    Option("web.listen-address", _listen_address, "0.0.0.0:9835", "address to serve /metrics, /healthz, /readyz"),
    Option("web.telemetry-path", _path, "/metrics", "path under which to expose metrics"),
    Option("web.tls-cert-file", _file, None, "serve over TLS with this certificate (PEM); reloaded when it changes"),
    Option("web.tls-key-file", _file, None, "the private key of --web.tls-cert-file (PEM)"),
    Option(
        "web.auth",
        _choice(("none", "kubernetes")),
        "none",
        "none, or kubernetes: a scrape needs a bearer token that TokenReview accepts and that SubjectAccessReview "
        "allows to get the path (as kube-rbac-proxy does)",
    ),
    Option("sources", _csv_choice(CLUSTER_SOURCES), ",".join(CLUSTER_SOURCES), "comma-separated sources to run"),
    Option("namespaces", _namespaces, None, "comma-separated namespaces to watch (default: all)"),
    Option(
        "namespace-selector",
        _selector,
        None,
        "watch only namespaces matching this label selector, e.g. opendatahub.io/dashboard=true",
    ),
    Option(
        "shard",
        _shard,
        "0",
        "this instance's shard (0 .. total-shards-1), or auto: the ordinal of a StatefulSet pod's name",
    ),
    Option("total-shards", _positive_int, "1", "cluster role: how many instances split the namespaces"),
    Option("watch.page-size", _positive_int, "500", "objects per page of a list request"),
    Option("watch.timeout", _seconds(1), "300", "server-side watch timeout in seconds (jittered up to 2x)"),
    Option(
        "watch.absent-retry",
        _seconds(0.1),
        "60",
        "seconds between probes for a resource whose CRD is missing",
    ),
    Option(
        "notebooks.controller-namespace",
        str,
        "opendatahub",
        "namespace of notebook-controller-culler-config (ODH: opendatahub, RHOAI: redhat-ods-applications, "
        "Kubeflow: kubeflow)",
    ),
    Option("notebooks.probe", _bool, "false", "poll running notebooks' Jupyter API for kernel activity"),
    Option(
        "notebooks.probe-url",
        _url_template,
        "http://{name}.{namespace}.svc:80/notebook/{namespace}/{name}",
        "Jupyter base URL of a notebook ({name}, {namespace}); /api/kernels and /api/terminals are appended",
    ),
    Option("notebooks.probe-interval", _seconds(1), "60", "seconds between polls of one notebook"),
    Option("notebooks.probe-timeout", _seconds(0.1), "5", "seconds before a poll gives up"),
    Option("notebooks.probe-concurrency", _positive_int, "8", "notebooks polled at once"),
    Option(
        "pipelines.retention",
        _seconds(0),
        "86400",
        "seconds a finished run's per-run and per-step series are kept (the duration histogram keeps history)",
    ),
    Option(
        "serving.version-label",
        str,
        "serving.kserve.io/model-version",
        "pod (or InferenceService) label whose value is the model version; else the Knative revision",
    ),
    Option(
        "node-name",
        str,
        None,
        "node role: the node's name, as the kubelet knows it (default: $NODE_NAME from the downward API, "
        "else the host name)",
    ),
    Option("nvml.interval", _seconds(0.1), "10", "node role: seconds between NVML polls"),
    Option(
        "nvml.timeout",
        _seconds(0.1),
        "5",
        "node role: seconds an NVML poll of one device may take before the device counts as hung (up 0)",
    ),
    Option(
        "nvml.process-memory",
        _bool,
        "false",
        "node role: export GPU memory per container from NVML's process list and /proc/<pid>/cgroup (needs hostPID)",
    ),
    Option("path.procfs", str, "/proc", "node role: where the host's /proc is mounted (for --nvml.process-memory)"),
    Option(
        "podresources.socket",
        str,
        "/var/lib/kubelet/pod-resources/kubelet.sock",
        "node role: the kubelet's PodResources gRPC socket (mount its directory, not the socket)",
    ),
    Option("podresources.interval", _seconds(0.1), "10", "node role: seconds between PodResources List calls"),
    Option("podresources.timeout", _seconds(0.1), "5", "node role: deadline of one PodResources List call"),
    Option(
        "podresources.resources",
        _regex,
        r"nvidia\.com/(gpu|gpu\.shared|mig-.+)",
        "node role: extended-resource names (a regular expression) whose devices are GPUs",
    ),
    Option(
        "limits.series-per-source",
        _nonnegative_int,
        "500000",
        "most series one cluster-role source may hold; objects beyond are dropped and counted "
        "(ml_exporter_series_dropped_total); 0: no limit",
    ),
    Option("log.level", _choice(LOG_LEVELS), "info", "log level"),
)
BY_NAME = {o.name: o for o in OPTIONS}


@dataclass(frozen=True)
class Config:
    role: str
    kubeconfig: str | None
    kube_context: str | None
    web_listen_address: tuple[str, int]
    web_telemetry_path: str
    web_tls_cert_file: str | None
    web_tls_key_file: str | None
    web_auth: str
    sources: tuple[str, ...]
    namespaces: tuple[str, ...] | None
    namespace_selector: str | None
    shard: int
    total_shards: int
    watch_page_size: int
    watch_timeout: float
    watch_absent_retry: float
    notebooks_controller_namespace: str
    notebooks_probe: bool
    notebooks_probe_url: str
    notebooks_probe_interval: float
    notebooks_probe_timeout: float
    notebooks_probe_concurrency: int
    pipelines_retention: float
    serving_version_label: str
    node_name: str | None
    nvml_interval: float
    nvml_timeout: float
    nvml_process_memory: bool
    path_procfs: str
    podresources_socket: str
    podresources_interval: float
    podresources_timeout: float
    podresources_resources: str
    limits_series_per_source: int
    log_level: str


def defaults() -> Config:
    """Every option at its default (for sources built outside the command line)."""
    return load([], environ={})


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ml-workload-exporter",
        description="Prometheus exporter for ML workloads on Kubernetes.",
        epilog="Every flag has an environment twin: --web.listen-address -> ML_EXPORTER_WEB_LISTEN_ADDRESS.",
    )
    parser.add_argument("--config.file", dest="config_file", help="YAML file whose keys are the flag names")
    for option in OPTIONS:
        default = f" (default: {option.default})" if option.default else ""
        parser.add_argument(f"--{option.name}", dest=option.attr, help=option.help + default)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    return parser


def load(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Parse and validate; raises ConfigError listing every problem."""
    environ = os.environ if environ is None else environ
    args = argument_parser().parse_args(argv)
    problems: list[str] = []
    raw: dict[str, tuple[str, str]] = {}  # name -> (value, where it came from)

    config_file = args.config_file or environ.get("ML_EXPORTER_CONFIG_FILE")
    if config_file:
        problems.extend(_read_file(config_file, raw))
    for option in OPTIONS:
        if option.env in environ:
            raw[option.name] = (environ[option.env], f"environment variable {option.env}")
        flag = getattr(args, option.attr)
        if flag is not None:
            raw[option.name] = (flag, f"flag --{option.name}")

    values: dict[str, Any] = {}
    for option in OPTIONS:
        value, where = raw.get(option.name, (option.default, "default"))
        if value is None:
            values[option.attr] = None
            continue
        try:
            values[option.attr] = option.parse(value)
        except ValueError as exc:
            problems.append(f"{option.name} ({where}): {exc}")
    shard, total = values.get("shard"), values.get("total_shards")
    if isinstance(shard, int) and isinstance(total, int) and shard >= total:
        problems.append(f"shard: {shard} is not below total-shards ({total})")
    if bool(values.get("web_tls_cert_file")) != bool(values.get("web_tls_key_file")):
        problems.append("web.tls-cert-file and web.tls-key-file: set both or neither")
    if values.get("namespaces") and values.get("namespace_selector"):
        problems.append("namespaces and namespace-selector: set one of them, not both")
    if problems:
        raise ConfigError(problems)
    return Config(**values)


def _read_file(path: str, raw: dict[str, tuple[str, str]]) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        return [f"config.file: cannot read {path}: {exc.strerror}"]
    except yaml.YAMLError as exc:
        return [f"config.file {path}: not valid YAML: {' '.join(str(exc).split())}"]
    if data is None:
        return []
    if not isinstance(data, dict):
        return [f"config.file {path}: must be a mapping of option names to values"]
    problems = []
    for key, value in data.items():
        if key not in BY_NAME:
            problems.append(f"{key} (config file {path}): unknown option")
            continue
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool) or value is None or isinstance(value, dict):
            problems.append(f"{key} (config file {path}): expected a string or number, got {value!r}")
            continue
        raw[key] = (str(value), f"config file {path}")
    return problems
