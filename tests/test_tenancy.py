"""Tenancy: what a project-scoped user sees through OpenShift's thanos-querier tenancy port.

That port (prom-label-proxy) adds `namespace="<project>"` to every selector of a query. A
project-scoped dashboard therefore only works if every recorded series it reads keeps a real
`namespace` label, and it must show that project's data and nothing else.
"""

from __future__ import annotations

import re

import pytest
import yaml

from exporter.pack import DASHBOARDS_DIR, perses
from exporter.pack import local as harness
from tests.conftest import Stack

PROJECT_SCOPED = ("training-jobs-overview", "workbench-notebook-resources", "data-pipeline-metrics",
                  "model-serving-performance")  # fmt: skip
PROJECT = "team-a"


def queries(dashboard: str) -> list[tuple[str, str]]:
    """(panel, PromQL) with variables at "All" and Perses' built-ins filled in."""
    doc = yaml.safe_load((DASHBOARDS_DIR / f"{dashboard}.yaml").read_text())
    values = {v["spec"]["name"]: ".*" for v in perses.dashboard_spec(doc).get("variables", [])}
    values |= harness.builtin_variables(3600)
    return [(q.panel, harness.fill_variables(q.promql, values)) for q in perses.queries(doc)]


def scoped(promql: str, namespace: str) -> str:
    """The query as prom-label-proxy forwards it: every series selector gets namespace="<namespace>"."""
    names = perses.series_in(promql)

    def add(match: re.Match[str]) -> str:
        name, matchers = match.group(1), match.group(2)
        if name not in names:
            return match.group(0)
        inner = matchers[1:-1].strip() if matchers else ""
        inner = re.sub(r'namespace\s*=~?\s*"[^"]*"\s*,?\s*', "", inner).strip().rstrip(",")
        return f"{name}{{{', '.join(filter(None, (inner, f'namespace={chr(34)}{namespace}{chr(34)}')))}}}"

    return re.sub(r"(?<![\w:\"$])([A-Za-z_:][\w:]*)(\{[^}]*\})?(?![\w:]*\s*\()", add, promql)


def test_the_scoping_rewrite_is_what_the_proxy_does() -> None:
    assert scoped('sum(a:b:c{x="1", namespace=~".*"}) by (y)', "t") == 'sum(a:b:c{x="1", namespace="t"}) by (y)'
    assert scoped("topk(5, a:b:c) / on (namespace) d:e:f", "t") == (
        'topk(5, a:b:c{namespace="t"}) / on (namespace) d:e:f{namespace="t"}'
    )


@pytest.mark.parametrize("dashboard", PROJECT_SCOPED)
def test_recorded_series_of_project_dashboards_keep_a_real_namespace(stack: Stack, dashboard: str) -> None:
    read = sorted({name for _, promql in queries(dashboard) for name in perses.series_in(promql)})
    assert read
    for name in read:
        series = harness.query(stack.prom, name)
        missing = [s["metric"] for s in series if not s["metric"].get("namespace")]
        assert missing == [], f"{dashboard} reads {name}, whose series lack a namespace: {missing[:3]}"


@pytest.mark.parametrize("dashboard", PROJECT_SCOPED)
def test_a_project_sees_its_own_data_and_nothing_else(stack: Stack, dashboard: str) -> None:
    answered = 0
    for panel, promql in queries(dashboard):
        everything = harness.query(stack.prom, promql)
        mine = harness.query(stack.prom, scoped(promql, PROJECT))
        foreign = [r["metric"] for r in mine if r["metric"].get("namespace", PROJECT) != PROJECT]
        assert foreign == [], f"{dashboard}/{panel}: {foreign}"
        if everything and all("namespace" in r["metric"] for r in everything):
            # Per-namespace results: the project's rows, exactly as an administrator sees them.
            expected = {tuple(sorted(r["metric"].items())): r["value"][1] for r in everything
                        if r["metric"]["namespace"] == PROJECT}  # fmt: skip
            got = {tuple(sorted(r["metric"].items())): r["value"][1] for r in mine}
            assert got.keys() == expected.keys(), f"{dashboard}/{panel}"
            answered += bool(got)
    assert answered, f"{dashboard}: no panel showed {PROJECT}'s data"
