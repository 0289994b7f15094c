"""The Helm chart, rendered and linted by the real Helm SDK (helm-python-sdk, no helm binary).

Core kinds are validated with kubernetes-validate (strict: unknown fields fail); the monitoring and
Perses kinds against schemas derived from their upstream CRDs (tests/schemas/).
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from exporter import config
from exporter.pack import CHART_DIR, DASHBOARDS_DIR, MONITORS_DIR, ROOT, generate, perses
from exporter.sources.notebooks import CONFIGMAPS
from tests.conftest import unused_client

KUBE_VERSION = "1.30.0"
SCHEMAS = Path(__file__).parent / "schemas"
CORE_GROUPS = ("v1", "apps/v1", "policy/v1", "rbac.authorization.k8s.io/v1", "networking.k8s.io/v1")
NAMESPACE = "ml-observability"

SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "openshift-platform": {"openshift": {"enabled": True, "monitoring": "platform"}},
    "openshift-user-workload": {
        "openshift": {"enabled": True, "monitoring": "user-workload"},
        "monitoring": {"modelServers": {"namespaces": ["team-a", "team-b"]}},
        "perses": {"datasource": {"enabled": True, "mode": "thanos-querier-tenancy", "secret": "thanos-token"}},
    },
    "no-gpu-nodes": {"node": {"enabled": False}},
    "perses-off": {"perses": {"dashboards": {"enabled": False}}},
    "perses-v1alpha1": {
        "perses": {"dashboards": {"apiVersion": "perses.dev/v1alpha1"}, "datasource": {"enabled": True}}
    },
    "sharded": {"cluster": {"shards": 3}},
    "secured": {
        "openshift": {"enabled": True, "monitoring": "platform"},
        "web": {"tls": {"openshiftServiceCA": True}, "auth": "kubernetes"},
    },
    "everything": {
        "cluster": {
            "replicas": 2,
            "namespaceSelector": "opendatahub.io/dashboard=true",
            "notebooks": {"probe": True, "controllerNamespace": "redhat-ods-applications"},
        },
        "node": {"processMemory": True, "runtimeClassName": "nvidia"},
        "monitoring": {"networkPolicy": {"enabled": True}},
        "perses": {"datasource": {"enabled": True, "mode": "thanos-querier"}},
    },
}


@cache
def chart() -> helm.Chart:
    return helm.Chart.load(CHART_DIR)


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    manifests = chart().render(values, name="ml-workload-exporter", namespace=NAMESPACE)
    return [
        doc
        for path, text in sorted(manifests.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"{kind} *{name_suffix}: {[d['metadata']['name'] for d in found]}"
    return found[0]


@cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    """Not meta-checked: CRD patterns are Go regular expressions, some of which Python rejects."""
    group, version = api_version.split("/")
    return jsonschema.Draft7Validator(json.loads((SCHEMAS / f"{group}_{kind}_{version}.json").read_text()))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_renders_lints_and_validates(scenario: str) -> None:
    values = SCENARIOS[scenario]
    report = helm.lint(CHART_DIR, values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    docs = render(values)
    for doc in docs:
        where = f"{doc['kind']} {doc['metadata']['name']}"
        if doc["apiVersion"] in CORE_GROUPS:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        elif doc["apiVersion"].startswith(("monitoring.coreos.com/", "perses.dev/")):
            crd_validator(doc["apiVersion"], doc["kind"]).validate(doc)
        elif doc["kind"] != "SecurityContextConstraints":
            raise AssertionError(f"{where}: no schema for {doc['apiVersion']}")
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding", "SecurityContextConstraints"):
            assert doc["metadata"].get("namespace"), f"{where} has no namespace"


def test_schema_validation_catches_what_the_crd_forbids() -> None:
    monitor = one(render({}), "ServiceMonitor")
    broken = copy.deepcopy(monitor)
    broken["spec"]["endpoints"][0]["honourLabels"] = True
    with pytest.raises(jsonschema.ValidationError, match="honourLabels"):
        crd_validator(broken["apiVersion"], broken["kind"]).validate(broken)


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"clutser": {}}, "clutser"),
        ({"cluster": {"replcas": 2}}, "replcas"),
        ({"node": {"interval": "often"}}, "interval"),
        ({"openshift": {"monitoring": "uwm"}}, "monitoring"),
        ({"perses": {"dashboards": {"apiVersion": "perses.dev/v2"}}}, "apiVersion"),
    ],
)
def test_values_schema_rejects_typos_and_bad_values(values: dict[str, Any], key: str) -> None:
    with pytest.raises(helm.HelmError, match=key):
        chart().validate_schema(values)
    with pytest.raises(helm.HelmError):
        render(values)


def watched_resources() -> set[tuple[str, str]]:
    """(API group, resource) of every reflector every cluster source starts, with all sources on."""
    from exporter.cli import cluster_sources
    from exporter.health import HealthRegistry
    from exporter.store import Store
    from exporter.watch import NamespaceScope, WatchSettings

    sources = cluster_sources(Store(()), HealthRegistry("cluster"), unused_client(), NamespaceScope(),
                              WatchSettings(), config.defaults())  # fmt: skip
    return {(r.kind.group, r.kind.plural) for source in sources for r in source.reflectors}


def granted(rules: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(group, resource) for rule in rules for group in rule["apiGroups"] for resource in rule["resources"]}


def test_rbac_is_exactly_what_the_sources_watch_read_only() -> None:
    docs = render(SCENARIOS["everything"])
    cluster_role = one(docs, "ClusterRole")
    culler = one(docs, "Role", "-culler-config")
    everything = granted(cluster_role["rules"]) | granted(culler["rules"])
    assert everything == watched_resources() | {("", "namespaces")}
    # The culler's ConfigMaps are readable in the notebook controller's namespace only.
    assert granted(culler["rules"]) == {(CONFIGMAPS.group, CONFIGMAPS.plural)}
    assert culler["metadata"]["namespace"] == "redhat-ods-applications"
    for doc in of_kind(docs, "ClusterRole") + of_kind(docs, "Role"):
        for rule in doc["rules"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, doc["metadata"]["name"]
            assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"]
            assert "secrets" not in rule["resources"]
    # No namespaces permission unless a namespace selector needs it.
    assert ("", "namespaces") not in granted(one(render({}), "ClusterRole")["rules"])


def test_cluster_role_runs_under_restricted_v2() -> None:
    deployment = one(render({}), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    container = pod["containers"][0]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert "runAsUser" not in json.dumps(pod)  # restricted-v2 assigns the UID
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert not pod.get("volumes") and not pod.get("hostNetwork") and not pod.get("hostPID")


def test_node_role_has_only_its_documented_privileges() -> None:
    daemonset = one(render({}), "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["automountServiceAccountToken"] is False  # no Kubernetes API access
    assert "hostPID" not in pod and "hostNetwork" not in pod
    (volume,) = pod["volumes"]
    assert volume["hostPath"] == {"path": "/var/lib/kubelet/pod-resources", "type": "Directory"}
    (mount,) = container["volumeMounts"]
    assert mount["readOnly"] is True
    assert "--podresources.socket=/var/lib/kubelet/pod-resources/kubelet.sock" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    # hostPID only for per-process memory, and the OpenShift SCC follows it.
    docs = render({"node": {"processMemory": True}, "openshift": {"enabled": True}})
    assert one(docs, "DaemonSet")["spec"]["template"]["spec"]["hostPID"] is True
    scc = one(docs, "SecurityContextConstraints")
    assert scc["allowHostPID"] is True and scc["allowPrivilegedContainer"] is False
    assert scc["requiredDropCapabilities"] == ["ALL"] and scc["readOnlyRootFilesystem"] is True
    assert scc["users"] == [f"system:serviceaccount:{NAMESPACE}:ml-workload-exporter-node"]
    assert one(render({"openshift": {"enabled": True}}), "SecurityContextConstraints")["allowHostPID"] is False


def test_prometheus_rule_is_recording_rules() -> None:
    rule = one(render({}), "PrometheusRule")
    assert rule["spec"]["groups"] == generate.rule_groups()
    shipped = yaml.safe_load(generate.PROMETHEUS_RULE.read_text())
    assert rule["spec"] == shipped["spec"]


@pytest.mark.parametrize("api_version", ["perses.dev/v1alpha2", "perses.dev/v1alpha1"])
def test_dashboards_are_the_shipped_dashboards(api_version: str) -> None:
    docs = of_kind(render({"perses": {"dashboards": {"apiVersion": api_version}}}), "PersesDashboard")
    shipped = {p.stem: yaml.safe_load(p.read_text()) for p in DASHBOARDS_DIR.glob("*.yaml")}
    assert {d["metadata"]["name"] for d in docs} == set(shipped)
    for doc in docs:
        expected = perses.to_api_version(shipped[doc["metadata"]["name"]], api_version)
        assert doc["apiVersion"] == api_version and doc["spec"] == expected["spec"]
        assert doc["metadata"]["namespace"] == NAMESPACE
    assert of_kind(render(SCENARIOS["perses-off"]), "PersesDashboard") == []


def test_monitors_match_the_plain_manifests() -> None:
    docs = render({})
    for plain_file, kind, suffix in (
        ("ml-workload-exporter-cluster.yaml", "ServiceMonitor", "-cluster"),
        ("ml-workload-exporter-node.yaml", "PodMonitor", "-node"),
    ):
        plain = yaml.safe_load((MONITORS_DIR / plain_file).read_text())
        rendered = one(docs, kind, suffix)
        endpoints = "endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints"
        assert rendered["spec"][endpoints] == plain["spec"][endpoints]
        # The chart adds the release's instance label to the plain manifest's selector.
        assert plain["spec"]["selector"]["matchLabels"].items() <= rendered["spec"]["selector"]["matchLabels"].items()
        selected = {"Service": "-cluster", "DaemonSet": "-node"}
        for target_kind, target_suffix in selected.items():
            if target_suffix == suffix:
                target = one(docs, target_kind, target_suffix)
                labels = target["metadata"]["labels"] if target_kind == "Service" else \
                    target["spec"]["template"]["metadata"]["labels"]  # fmt: skip
                assert rendered["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for path in MONITORS_DIR.glob("model-servers-*.yaml"):
        plain = yaml.safe_load(path.read_text())
        rendered = next(d for d in of_kind(docs, "PodMonitor") if d["metadata"]["name"] == plain["metadata"]["name"])
        assert rendered["spec"] == plain["spec"]


def test_user_workload_mode_puts_model_server_monitors_in_each_project() -> None:
    docs = render(SCENARIOS["openshift-user-workload"])
    monitors = [d for d in of_kind(docs, "PodMonitor") if d["metadata"]["name"].startswith("ml-model-servers")]
    assert sorted({d["metadata"]["namespace"] for d in monitors}) == ["team-a", "team-b"]
    assert len(monitors) == 8 and all("namespaceSelector" not in d["spec"] for d in monitors)
    assert not [d for d in of_kind(docs, "Role") if d["metadata"]["name"].endswith("prometheus-k8s")]
    platform = render(SCENARIOS["openshift-platform"])
    binding = one(platform, "RoleBinding", "-prometheus-k8s")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "prometheus-k8s",
                                    "namespace": "openshift-monitoring"}]  # fmt: skip
    # Both modes scrape with honorLabels: the namespace is exempt from label enforcement (see README).
    for docs_ in (docs, platform):
        assert one(docs_, "ServiceMonitor")["spec"]["endpoints"][0]["honorLabels"] is True


@pytest.mark.parametrize(
    ("datasource", "url", "query"),
    [
        ({"mode": "url", "url": "http://prom.example:9090"}, "http://prom.example:9090", None),
        ({"mode": "thanos-querier"}, "https://thanos-querier.openshift-monitoring.svc.cluster.local:9091", None),
        ({"mode": "thanos-querier-tenancy", "tenancyNamespace": "team-a"},
         "https://thanos-querier.openshift-monitoring.svc.cluster.local:9092", {"namespace": "team-a"}),
    ],
)  # fmt: skip
def test_perses_datasource_modes(datasource: dict[str, str], url: str, query: dict[str, str] | None) -> None:
    docs = render({"perses": {"datasource": {"enabled": True, **datasource}}})
    source = one(docs, "PersesDatasource")
    plugin = source["spec"]["config"]["plugin"]
    assert plugin["kind"] == "PrometheusDatasource"
    assert plugin["spec"]["proxy"]["spec"]["url"] == url
    assert plugin["spec"].get("queryParams") == query


def test_chart_files_are_fresh_copies() -> None:
    stale = [p for p in generate.stale() if CHART_DIR in p.parents]
    assert stale == [], f"run `make generate`: {stale}"
    for path in (CHART_DIR / "files" / "dashboards").glob("*.yaml"):
        assert path.read_bytes() == (DASHBOARDS_DIR / path.name).read_bytes()


def test_containerfile_matches_the_package() -> None:
    lines = [
        ln.strip() for ln in (ROOT / "Containerfile").read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    base = next(ln.split()[1] for ln in lines if ln.startswith("FROM"))
    assert base.startswith("registry.access.redhat.com/ubi9/python-311")  # requires-python >= 3.11
    assert 'requires-python = ">=3.11"' in (ROOT / "pyproject.toml").read_text()
    for line in lines:
        if line.startswith("COPY"):
            for source in line.split()[1:-1]:
                if not source.startswith("--"):
                    assert (ROOT / source).exists(), f"Containerfile copies {source}, which does not exist"
    pyproject = (ROOT / "pyproject.toml").read_text()
    entry = json.loads(next(ln for ln in lines if ln.startswith("ENTRYPOINT"))[len("ENTRYPOINT") :])
    assert entry == ["ml-workload-exporter"] and 'ml-workload-exporter = "exporter.cli:main"' in pyproject
    user = next(ln for ln in lines if ln.startswith("USER")).split()[1]
    assert user not in ("0", "root")
    exposed = {int(p) for ln in lines if ln.startswith("EXPOSE") for p in ln.split()[1:]}
    assert exposed == {config.defaults().web_listen_address[1], 9836}


def documented_installs() -> list[tuple[str, dict[str, Any]]]:
    """Every `helm install` command in the install docs, as the values its --set flags give."""
    out = []
    for doc in (ROOT / "README.md", CHART_DIR.parent / "README.md"):
        text = doc.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            if line.strip().startswith("helm install"):
                values: dict[str, Any] = {}
                for flag in re.findall(r"--set (\S+)", line):
                    values = helm_python_merge(values, helm.parse_set_string(flag.strip("'")))
                out.append((f"{doc.name}: {line.strip()[:60]}", values))
    return out


def helm_python_merge(into: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            into[key] = helm_python_merge(into[key], value)
        else:
            into[key] = value
    return into


def test_documented_install_commands_render_valid_objects() -> None:
    installs = documented_installs()
    assert len(installs) >= 4, installs
    for where, values in installs:
        chart().validate_schema(values)
        docs = render(values)
        assert of_kind(docs, "Deployment"), where
    block = re.search(r"```yaml\n(apiVersion: argoproj.io.*?)```", (CHART_DIR.parent / "README.md").read_text(), re.S)
    assert block is not None
    argo = yaml.safe_load(block.group(1))
    values = argo["spec"]["source"]["helm"]["valuesObject"]
    assert one(render(values), "ClusterRole")
    assert argo["spec"]["source"]["path"] == str(CHART_DIR.relative_to(ROOT))


def test_tls_and_token_review_when_asked_for() -> None:
    docs = render(SCENARIOS["secured"])
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "--web.auth=kubernetes" in container["args"]
    assert "--web.tls-cert-file=/etc/ml-workload-exporter/tls/tls.crt" in container["args"]
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert container["volumeMounts"] == [
        {"name": "tls", "mountPath": "/etc/ml-workload-exporter/tls", "readOnly": True}
    ]
    service = one(docs, "Service", "-cluster")
    secret = service["metadata"]["annotations"]["service.beta.openshift.io/serving-cert-secret-name"]
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"] == secret
    endpoint = one(docs, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https" and endpoint["bearerTokenFile"].endswith("serviceaccount/token")
    assert endpoint["tlsConfig"]["serverName"] == f"ml-workload-exporter-cluster.{NAMESPACE}.svc"
    # The only write verbs anywhere: creating the two reviews, and only with --web.auth=kubernetes.
    writes = {(g, r) for d in of_kind(docs, "ClusterRole") for rule in d["rules"] if "create" in rule.get("verbs", [])
              for g in rule.get("apiGroups", []) for r in rule.get("resources", [])}  # fmt: skip
    assert writes == {("authentication.k8s.io", "tokenreviews"), ("authorization.k8s.io", "subjectaccessreviews")}
    reader = one(docs, "ClusterRole", "-metrics-reader")
    assert reader["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    binding = one(docs, "ClusterRoleBinding", "-metrics-reader")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "openshift-monitoring"}
    ]
    plain = render({})
    assert not [r for d in of_kind(plain, "ClusterRole") for r in d["rules"] if "create" in r.get("verbs", [])]
    assert "scheme" not in one(plain, "ServiceMonitor")["spec"]["endpoints"][0]


def test_sharded_cluster_role_is_a_statefulset_of_shards() -> None:
    docs = render(SCENARIOS["sharded"])
    assert of_kind(docs, "Deployment") == []
    statefulset = one(docs, "StatefulSet")
    assert statefulset["spec"]["replicas"] == 3
    assert statefulset["spec"]["serviceName"] == one(docs, "Service", "-cluster")["metadata"]["name"]
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert {"--shard=auto", "--total-shards=3"} <= set(container["args"])
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
