"""The monitoring pack: rules under promtool, dashboards under the Perses check, generated files fresh."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.pack import DASHBOARDS_DIR, RULES_DIR, generate, perses, promtool

RECORDED = perses.recorded_series(generate.rule_files())
TRAINING = yaml.safe_load((DASHBOARDS_DIR / "training-jobs-overview.yaml").read_text())


def test_rules_pass_promtool_check_and_unit_tests() -> None:
    checked = promtool.check_rules(generate.rule_files())
    assert checked.ok, checked
    tested = promtool.test_rules(sorted((RULES_DIR / "tests").glob("*_test.yaml")))
    assert tested.ok, tested
    assert "SUCCESS" in tested.output


def test_promtool_wrapper_reports_failures_readably(tmp_path: Path) -> None:
    rules = tmp_path / "r.rules.yaml"
    rules.write_text("groups:\n- name: g\n  rules:\n  - record: a:b:sum\n    expr: sum(x\n")
    result = promtool.check_rules([rules])
    assert not result.ok and "FAILED" in str(result) and "r.rules.yaml" in result.output
    test = tmp_path / "t_test.yaml"
    good = tmp_path / "ok.rules.yaml"
    good.write_text("groups:\n- name: g\n  rules:\n  - record: a:x:sum\n    expr: sum(x)\n")
    test.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(good)],
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": [{"series": "x", "values": "1x5"}],
                        "promql_expr_test": [
                            {
                                "expr": "a:x:sum",
                                "eval_time": "2m",
                                "exp_samples": [{"labels": "a:x:sum", "value": 2}],
                            }
                        ],
                    }
                ],
            }
        )
    )
    failed = promtool.test_rules([test])
    assert not failed.ok and "a:x:sum" in failed.output


def test_every_rule_is_named_level_metric_operations() -> None:
    for name in RECORDED:
        assert len(name.split(":")) == 3, name


def test_every_recorded_series_has_a_promtool_test() -> None:
    tested = (RULES_DIR / "tests").glob("*_test.yaml")
    text = "".join(p.read_text() for p in tested)
    exprs = [line for line in text.splitlines() if line.strip().startswith(("expr:", "- expr:"))]
    untested = [
        name for name in RECORDED if not any(re.search(rf"(?<![\w:]){re.escape(name)}(?![\w:])", e) for e in exprs)
    ]
    assert not untested


def test_shipped_dashboards_pass_the_check() -> None:
    dashboards = perses.load_all(DASHBOARDS_DIR)
    assert dashboards
    for path, obj in dashboards.items():
        assert perses.check(obj, RECORDED) == [], path


def test_shipped_dashboard_files_quote_yaml11_booleans() -> None:
    for path in sorted(DASHBOARDS_DIR.glob("*.yaml")):
        assert perses.text_errors(path.read_text()) == [], path
    assert perses.text_errors("items:\n  - {x: 0, y: 0}\n  - x: 1\n    y: 2\n") != []
    assert perses.text_errors('items:\n  - x: 1\n    "y": 2\n') == []


def test_v1alpha1_shape_is_producible_and_valid() -> None:
    old = perses.to_api_version(TRAINING, "perses.dev/v1alpha1")
    assert old["apiVersion"] == "perses.dev/v1alpha1" and "config" not in old["spec"]
    assert old["spec"]["panels"] == TRAINING["spec"]["config"]["panels"]
    assert perses.check(old, RECORDED) == []
    assert perses.to_api_version(old, "perses.dev/v1alpha2") == TRAINING


def broken(mutate: Any) -> list[str]:
    obj = copy.deepcopy(TRAINING)
    mutate(obj["spec"]["config"])
    return perses.check(obj, RECORDED)


def _panel(spec: dict[str, Any], key: str = "jobCpu") -> dict[str, Any]:
    return spec["panels"][key]["spec"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: _panel(s)["plugin"]["spec"].update(unit="bytes"), "unknown field 'unit'"),
        (
            lambda s: _panel(s)["plugin"]["spec"]["legend"].pop("position"),
            "missing required field 'position'",
        ),
        (
            lambda s: _panel(s)["plugin"]["spec"]["yAxis"]["format"].update(unit="cores"),
            "'cores' is not one of",
        ),
        (lambda s: _panel(s, "runningJobs")["plugin"]["spec"].pop("calculation"), "'calculation'"),
        (
            lambda s: s["layouts"][0]["spec"]["items"][0]["content"].update({"$ref": "#/spec/panels/nope"}),
            "does not resolve",
        ),
        (lambda s: s["layouts"][0]["spec"]["items"][1].update(x=3), "overlaps"),
        (lambda s: s["layouts"][0]["spec"]["items"][3].update(width=7), "outside the 24-column grid"),
        (lambda s: s["panels"].update({"bad key!": s["panels"]["jobCpu"]}), "panel key"),
        (
            lambda s: _panel(s)["queries"][0]["spec"]["plugin"]["spec"].update(query='rate(x{a="$cluster"}[5m])'),
            "undefined variable $cluster",
        ),
        (
            lambda s: _panel(s)["queries"][0]["spec"]["plugin"]["spec"].update(
                query="sum by (namespace) (rate(container_cpu_usage_seconds_total[5m]))"
            ),
            "reads container_cpu_usage_seconds_total, which is neither",
        ),
        (
            lambda s: _panel(s)["queries"][0]["spec"]["plugin"]["spec"].update(step="1m"),
            "unknown field 'step'",
        ),
        (lambda s: s.update(theme="dark"), "unknown field 'theme'"),
        (lambda s: s["variables"][0]["spec"]["display"].pop("hidden"), "'hidden'"),
        (lambda s: _panel(s)["display"].pop("description"), "display.description"),
        (lambda s: s["panels"].update(orphan=s["panels"]["jobCpu"]), "not placed in any layout"),
        (lambda s: s.update(duration="6 hours"), "not a duration"),
        (lambda s: s["display"].pop("description"), "description of its purpose"),
        (
            lambda s: _panel(s, "jobTable")["queries"].append(_panel(s, "jobTable")["queries"][0]),
            "column 'namespace' does not exist in a 2-query table",
        ),
    ],
)
def test_check_rejects_what_perses_would(mutate: Any, message: str) -> None:
    errors = broken(mutate)
    assert any(message in e for e in errors), errors


@pytest.mark.parametrize(
    ("query", "series"),
    [
        ('sum(a:b:c{x="y"}) / 1e3', {"a:b:c"}),
        ("count(foo > time() - $__range_s) or vector(0)", {"foo"}),
        ('label_replace(up, "a", "$1", "b", "(.*)") * on (a) group_left (c) bar', {"up", "bar"}),
        ("histogram_quantile(0.95, sum by (le) (rate(h_bucket[5m])))", {"h_bucket"}),
    ],
)
def test_series_extraction(query: str, series: set[str]) -> None:
    assert perses.series_in(query) == series


def test_generated_artefacts_are_fresh() -> None:
    assert generate.stale() == [], "run `make generate` and commit the result"


def test_metrics_doc_lists_every_family() -> None:
    doc = generate.METRICS_DOC.read_text()
    from exporter import catalogue

    for family in catalogue.FAMILIES:
        if family.group != "exporter" or family.name.startswith("ml_"):
            assert f"`{family.name}`" in doc
