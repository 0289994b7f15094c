"""Checks PersesDashboard objects the way Perses would, and converts between API versions.

The plugin schemas below transcribe the closed CUE specs of the Perses plugins
(TimeSeriesChart, StatChart, Table, BarChart, GaugeChart, Markdown and the
Prometheus query/variable plugins): an unknown field is an error, as in Perses.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

GRID_COLUMNS = 24
PANEL_KEY = re.compile(r"^[a-zA-Z0-9_.-]+$")
DURATION = re.compile(r"^(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$")
REF = re.compile(r"^#/spec/panels/([a-zA-Z0-9_.-]+)$")
DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
BUILTIN_VARIABLES = {
    "__range",
    "__range_s",
    "__range_ms",
    "__interval",
    "__interval_ms",
    "__rate_interval",
    "__from",
    "__to",
    "__dashboard",
    "__project",
}
UNITS = {
    "decimal",
    "bits",
    "decbits",
    "bytes",
    "decbytes",
    "percent",
    "percent-decimal",
    "nanoseconds",
    "microseconds",
    "milliseconds",
    "seconds",
    "minutes",
    "hours",
    "days",
    "weeks",
    "months",
    "years",
    "celsius",
    "fahrenheit",
    "bits/sec",
    "decbits/sec",
    "bytes/sec",
    "decbytes/sec",
    "counts/sec",
    "events/sec",
    "messages/sec",
    "ops/sec",
    "packets/sec",
    "reads/sec",
    "records/sec",
    "requests/sec",
    "rows/sec",
    "writes/sec",
    "datetime-iso",
    "datetime-us",
    "datetime-local",
    "date-iso",
    "date-us",
    "date-local",
    "time-local",
    "time-iso",
    "time-us",
    "relative-time",
    "unix-timestamp",
    "unix-timestamp-ms",
}
CALCULATIONS = {"first", "last", "first-number", "last-number", "mean", "sum", "min", "max"}

# Schema language: a type name, a set of allowed values, a dict of fields ("name?" optional),
# or a one-element list (a list of that schema).
Schema = Any
COLOR = "color"
FORMAT: Schema = {"unit?": UNITS, "decimalPlaces?": "int", "shortValues?": "bool"}
THRESHOLDS: Schema = {
    "mode?": {"percent", "absolute"},
    "defaultColor?": "str",
    "steps?": [{"value": "num", "color?": "str", "name?": "str"}],
}
LEGEND: Schema = {
    "position": {"bottom", "right"},
    "mode?": {"list", "table"},
    "size?": {"small", "medium"},
    "values?": [CALCULATIONS],
}
PLUGINS: dict[str, Schema] = {
    "TimeSeriesChart": {
        "legend?": LEGEND,
        "tooltip?": {"enablePinning?": "bool"},
        "yAxis?": {
            "show?": "bool",
            "label?": "str",
            "format?": FORMAT,
            "min?": "num",
            "max?": "num",
            "logBase?": {2, 10},
        },
        "thresholds?": THRESHOLDS,
        "visual?": {
            "display?": {"line", "bar"},
            "lineWidth?": "num",
            "lineStyle?": {"solid", "dashed", "dotted"},
            "areaOpacity?": "num",
            "showPoints?": {"auto", "always"},
            "palette?": {"mode": {"auto", "categorical"}},
            "pointRadius?": "num",
            "stack?": {"all", "percent"},
            "connectNulls?": "bool",
        },
        "querySettings?": [
            {
                "queryIndex": "int",
                "colorMode?": {"fixed", "fixed-single"},
                "colorValue?": COLOR,
                "lineStyle?": {"solid", "dashed", "dotted"},
                "areaOpacity?": "num",
                "format?": FORMAT,
            }
        ],
    },
    "StatChart": {
        "calculation": CALCULATIONS,
        "metricLabel?": "str",
        "format?": FORMAT,
        "thresholds?": THRESHOLDS,
        "sparkline?": {"color?": "str", "width?": "num"},
        "valueFontSize?": "num",
        "colorMode?": {"value", "background_solid", "none"},
        "legendMode?": {"auto", "on", "off"},
        "mappings?": ["any"],
    },
    "GaugeChart": {
        "calculation": CALCULATIONS,
        "format?": FORMAT,
        "thresholds?": THRESHOLDS,
        "max?": "num",
        "legend?": {"show?": "bool"},
    },
    "BarChart": {
        "calculation": CALCULATIONS,
        "format?": FORMAT,
        "sort?": {"asc", "desc"},
        "mode?": {"value", "percentage"},
    },
    "Markdown": {"text": "str"},
    "Table": {
        "density?": {"compact", "standard", "comfortable"},
        "defaultColumnWidth?": "any",
        "defaultColumnHeight?": "any",
        "defaultColumnHidden?": "bool",
        "pagination?": "bool",
        "enableFiltering?": "bool",
        "columnSettings?": [
            {
                "name": "str",
                "header?": "str",
                "headerDescription?": "str",
                "cellDescription?": "str",
                "plugin?": "any",
                "format?": FORMAT,
                "align?": {"left", "center", "right"},
                "enableSorting?": "bool",
                "sort?": {"asc", "desc"},
                "width?": "any",
                "hide?": "bool",
                "cellSettings?": ["any"],
                "dataLink?": {"url": "str", "title?": "str", "openNewTab": "bool"},
            }
        ],
        "cellSettings?": ["any"],
        "transforms?": [
            {
                "kind": {"JoinByColumnValue", "MergeColumns", "MergeIndexedColumns", "MergeSeries"},
                "spec": "any",
            }
        ],
    },
}
PROM_QUERY: Schema = {
    "datasource?": "any",
    "query": "str",
    "seriesNameFormat?": "str",
    "minStep?": "str",
    "resolution?": "num",
}
VARIABLE_PLUGINS: dict[str, Schema] = {
    "PrometheusLabelValuesVariable": {"datasource?": "any", "labelName": "str", "matchers?": ["str"]},
    "PrometheusPromQLVariable": {"datasource?": "any", "expr": "str", "labelName": "str"},
}
LIST_VARIABLE: Schema = {
    "name": "str",
    "display?": {"name?": "str", "description?": "str", "hidden": "bool"},
    "defaultValue?": "any",
    "allowAllValue": "bool",
    "allowMultiple": "bool",
    "customAllValue?": "str",
    "capturingRegexp?": "str",
    "sort?": {
        "none",
        "alphabetical-asc",
        "alphabetical-desc",
        "numerical-asc",
        "numerical-desc",
        "alphabetical-ci-asc",
        "alphabetical-ci-desc",
    },
    "plugin": {"kind": set(VARIABLE_PLUGINS), "spec": "any"},
}
DASHBOARD_SPEC_KEYS = {
    "display",
    "datasources",
    "variables",
    "panels",
    "layouts",
    "duration",
    "refreshInterval",
    "links",
}
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "atan2",
}


def validate(value: Any, schema: Schema, where: str) -> list[str]:
    """Errors of `value` against the schema language above."""
    if schema == "any":
        return []
    if schema == "str":
        return [] if isinstance(value, str) else [f"{where}: expected a string, got {value!r}"]
    if schema == "bool":
        return [] if isinstance(value, bool) else [f"{where}: expected true/false, got {value!r}"]
    if schema == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{where}: expected an integer, got {value!r}"]
    if schema == "num":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{where}: expected a number, got {value!r}"]
    if schema == COLOR:
        ok = isinstance(value, str) and re.fullmatch(r"#(?:[0-9a-fA-F]{3}){1,2}", value) is not None
        return [] if ok else [f"{where}: expected a #rgb colour, got {value!r}"]
    if isinstance(schema, set):
        return [] if value in schema else [f"{where}: {value!r} is not one of {sorted(map(str, schema))}"]
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{where}: expected a list"]
        return [e for i, item in enumerate(value) for e in validate(item, schema[0], f"{where}[{i}]")]
    if not isinstance(value, dict):
        return [f"{where}: expected a mapping"]
    errors = []
    fields = {k.rstrip("?"): (k.endswith("?"), s) for k, s in schema.items()}
    for key in value:
        if key not in fields:
            errors.append(f"{where}: unknown field {key!r} (allowed: {', '.join(sorted(fields))})")
    for key, (optional, sub) in fields.items():
        if key in value:
            errors.extend(validate(value[key], sub, f"{where}.{key}"))
        elif not optional:
            errors.append(f"{where}: missing required field {key!r}")
    return errors


def dashboard_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The dashboard spec of a PersesDashboard of either API version."""
    spec = obj.get("spec") or {}
    return spec.get("config") or {} if obj.get("apiVersion") == "perses.dev/v1alpha2" else spec


def to_api_version(obj: dict[str, Any], api_version: str) -> dict[str, Any]:
    """The same dashboard as a PersesDashboard of `api_version` (v1alpha1 or v1alpha2)."""
    if api_version not in ("perses.dev/v1alpha1", "perses.dev/v1alpha2"):
        raise ValueError(f"unsupported PersesDashboard apiVersion {api_version!r}")
    out = {k: copy.deepcopy(v) for k, v in obj.items() if k != "spec"}
    out["apiVersion"] = api_version
    spec = copy.deepcopy(dashboard_spec(obj))
    out["spec"] = {"config": spec} if api_version == "perses.dev/v1alpha2" else spec
    return out


def strip_promql(query: str) -> str:
    """The query without string literals, label matchers, ranges and grouping clauses."""
    query = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', query)
    query = re.sub(r"\{[^{}]*\}", "", query)
    query = re.sub(r"\[[^\]]*\]", "", query)
    return re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", query)


def series_in(query: str) -> set[str]:
    """Metric names a PromQL query reads (identifiers that are not functions or keywords)."""
    stripped = strip_promql(re.sub(r"\$\{?\w+\}?", "1", query))
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", stripped):
        following = stripped[m.end() :].lstrip()
        if following.startswith("(") or m.group(0).lower() in PROMQL_WORDS:
            continue
        if m.start() > 0 and (stripped[m.start() - 1].isdigit() or stripped[m.start() - 1] == "."):
            continue  # the exponent or unit of a number literal
        names.add(m.group(0))
    return names


def variables_in(text: str) -> set[str]:
    return {m.group(1) or m.group(2) for m in re.finditer(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", text)}


@dataclass(frozen=True)
class Query:
    panel: str
    promql: str
    instant: bool = False  # Perses sends it to /api/v1/query at the range's end, not as a range query


def queries(obj: dict[str, Any]) -> list[Query]:
    out = []
    for key, panel in (dashboard_spec(obj).get("panels") or {}).items():
        instant = _instant(((panel.get("spec") or {}).get("plugin")) or {})
        for q in (panel.get("spec") or {}).get("queries") or []:
            spec = ((q.get("spec") or {}).get("plugin") or {}).get("spec") or {}
            promql = spec.get("query")
            if isinstance(promql, str):
                out.append(Query(key, promql, spec.get("instant", instant) is True))
    return out


def _instant(plugin: dict[str, Any]) -> bool:
    """Perses's rule: TimeSeriesTable asks for instant vectors, and so does Table unless one of its
    columns embeds a panel plugin (a sparkline needs the range); every chart asks for a range."""
    if plugin.get("kind") == "TimeSeriesTable":
        return True
    columns = (plugin.get("spec") or {}).get("columnSettings") or []
    return plugin.get("kind") == "Table" and not any(isinstance(c, dict) and c.get("plugin") for c in columns)


def check(obj: Any, recorded: set[str], allowed_raw: Iterable[str] = ()) -> list[str]:
    """Every reason Perses (or this project's rule 'dashboards read recorded series') would reject it."""
    if not isinstance(obj, dict):
        return ["not a mapping"]
    errors: list[str] = []
    if obj.get("kind") != "PersesDashboard":
        errors.append(f"kind: expected PersesDashboard, got {obj.get('kind')!r}")
    if obj.get("apiVersion") not in ("perses.dev/v1alpha1", "perses.dev/v1alpha2"):
        errors.append(f"apiVersion: {obj.get('apiVersion')!r} is not perses.dev/v1alpha1 or v1alpha2")
    name = (obj.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not DNS_NAME.match(name):
        errors.append(f"metadata.name: {name!r} is not a DNS-1123 name")
    if obj.get("apiVersion") == "perses.dev/v1alpha2" and set(obj.get("spec") or {}) - {"config", "client"}:
        errors.append("spec: v1alpha2 keeps the dashboard under spec.config")
    spec = dashboard_spec(obj)
    for key in spec:
        if key not in DASHBOARD_SPEC_KEYS:
            errors.append(f"spec: unknown field {key!r}")
    errors += validate(spec.get("display", {}), {"name?": "str", "description?": "str"}, "display")
    if not (spec.get("display") or {}).get("name") or not (spec.get("display") or {}).get("description"):
        errors.append("display: every dashboard has a name and a description of its purpose")
    for key in ("duration", "refreshInterval"):
        if key in spec and not (isinstance(spec[key], str) and DURATION.match(spec[key])):
            errors.append(f"{key}: {spec[key]!r} is not a duration")

    defined = set(BUILTIN_VARIABLES)
    for i, var in enumerate(spec.get("variables") or []):
        where = f"variables[{i}]"
        if not isinstance(var, dict) or var.get("kind") != "ListVariable":
            errors.append(f"{where}: only ListVariable is used by this pack")
            continue
        vspec = var.get("spec") or {}
        errors += validate(vspec, LIST_VARIABLE, f"{where}.spec")
        plugin = vspec.get("plugin") or {}
        if plugin.get("kind") in VARIABLE_PLUGINS:
            errors += validate(plugin.get("spec"), VARIABLE_PLUGINS[plugin["kind"]], f"{where}.spec.plugin.spec")
            pspec = plugin.get("spec") or {}
            texts = [*(pspec.get("matchers") or []), pspec.get("expr", "")]
            for text in filter(None, texts):
                errors += _check_text(text, defined, recorded, allowed_raw, f"{where} matcher")
        if vspec.get("name") in defined:
            errors.append(f"{where}: variable {vspec.get('name')!r} defined twice or shadows a built-in")
        defined.add(str(vspec.get("name")))

    panels = spec.get("panels")
    if not isinstance(panels, dict) or not panels:
        errors.append("panels: a dashboard needs panels")
        panels = {}
    for key, panel in panels.items():
        where = f"panels.{key}"
        if not PANEL_KEY.match(key) or len(key) > 75 or ".." in key:
            errors.append(f"{where}: panel key must match {PANEL_KEY.pattern}")
        errors += _check_panel(panel, where, defined, recorded, allowed_raw)

    referenced: set[str] = set()
    layouts = spec.get("layouts")
    if not isinstance(layouts, list) or not layouts:
        errors.append("layouts: a dashboard needs a Grid layout")
        layouts = []
    for i, layout in enumerate(layouts):
        errors += _check_grid(layout, f"layouts[{i}]", panels, referenced)
    for key in sorted(set(panels) - referenced):
        errors.append(f"panels.{key}: not placed in any layout")
    return errors


def _check_text(text: str, defined: set[str], recorded: set[str], allowed_raw: Iterable[str], where: str) -> list[str]:
    errors = [f"{where}: undefined variable ${v}" for v in sorted(variables_in(text) - defined)]
    raw = series_in(text) - recorded - set(allowed_raw)
    errors += [f"{where}: reads {name}, which is neither a recorded series nor allowlisted" for name in sorted(raw)]
    return errors


def _check_panel(
    panel: Any, where: str, defined: set[str], recorded: set[str], allowed_raw: Iterable[str]
) -> list[str]:
    if not isinstance(panel, dict) or panel.get("kind") != "Panel":
        return [f"{where}: kind must be Panel"]
    pspec = panel.get("spec") or {}
    errors = validate(
        pspec,
        {
            "display?": {"name?": "str", "description?": "str"},
            "plugin": "any",
            "queries?": "any",
            "links?": "any",
        },
        f"{where}.spec",
    )
    if not (pspec.get("display") or {}).get("description"):
        errors.append(f"{where}: every panel says what it shows (display.description)")
    plugin = pspec.get("plugin") or {}
    kind = plugin.get("kind")
    if kind not in PLUGINS:
        errors.append(f"{where}: unknown panel plugin {kind!r}")
    else:
        errors += validate(plugin.get("spec", {}), PLUGINS[kind], f"{where}.plugin.spec")
    qs = pspec.get("queries") or []
    if kind == "Table" and len(qs) > 1:
        errors += _check_multi_query_table(plugin.get("spec") or {}, len(qs), where)
    if kind != "Markdown" and not qs:
        errors.append(f"{where}: no queries")
    for j, q in enumerate(qs):
        qwhere = f"{where}.queries[{j}]"
        if not isinstance(q, dict) or q.get("kind") != "TimeSeriesQuery":
            errors.append(f"{qwhere}: kind must be TimeSeriesQuery")
            continue
        qplugin = (q.get("spec") or {}).get("plugin") or {}
        if qplugin.get("kind") != "PrometheusTimeSeriesQuery":
            errors.append(f"{qwhere}: plugin must be PrometheusTimeSeriesQuery")
            continue
        errors += validate(qplugin.get("spec"), PROM_QUERY, f"{qwhere}.plugin.spec")
        text = (qplugin.get("spec") or {}).get("query")
        if isinstance(text, str):
            errors += _check_text(text, defined, recorded, allowed_raw, qwhere)
    return errors


def _check_multi_query_table(spec: dict[str, Any], queries: int, where: str) -> list[str]:
    """With several queries, the Table plugin names columns `<label> #<n>` and `value #<n>`; only
    `timestamp` and columns a Merge transform produces keep a plain name."""
    merged = {"timestamp"}
    for transform in spec.get("transforms") or []:
        tspec = transform.get("spec") or {}
        if transform.get("kind") == "MergeIndexedColumns":
            merged.add(str(tspec.get("column")))
        elif transform.get("kind") == "MergeColumns":
            merged.add(str(tspec.get("name")))
    errors = []
    for column in spec.get("columnSettings") or []:
        name = str(column.get("name"))
        m = re.fullmatch(r".+ #(\d+)", name)
        if name not in merged and (m is None or not 1 <= int(m.group(1)) <= queries):
            errors.append(
                f"{where}: column {name!r} does not exist in a {queries}-query table "
                "(columns are '<label> #<n>' / 'value #<n>' unless merged)"
            )
    return errors


def _check_grid(layout: Any, where: str, panels: dict[str, Any], referenced: set[str]) -> list[str]:
    if not isinstance(layout, dict) or layout.get("kind") != "Grid":
        return [f"{where}: kind must be Grid"]
    gspec = layout.get("spec") or {}
    item_schema = {"x": "int", "y": "int", "width": "int", "height": "int", "content?": {"$ref": "str"}}
    errors = validate(
        gspec,
        {
            "display?": {"title": "str", "collapse?": {"open": "bool"}},
            "items": [item_schema],
            "repeatVariable?": "str",
        },
        f"{where}.spec",
    )
    if errors:
        return errors
    cells: dict[tuple[int, int], int] = {}
    for k, item in enumerate(gspec["items"]):
        iwhere = f"{where}.items[{k}]"
        x, y, w, h = item["x"], item["y"], item["width"], item["height"]
        if x < 0 or y < 0 or w < 1 or h < 1 or x + w > GRID_COLUMNS:
            errors.append(f"{iwhere}: outside the {GRID_COLUMNS}-column grid (x={x}, width={w})")
            continue
        for cx in range(x, x + w):
            for cy in range(y, y + h):
                if (cx, cy) in cells:
                    errors.append(f"{iwhere}: overlaps items[{cells[(cx, cy)]}] at x={cx}, y={cy}")
                    break
                cells[(cx, cy)] = k
            else:
                continue
            break
        ref = (item.get("content") or {}).get("$ref", "")
        m = REF.match(ref)
        if not m or m.group(1) not in panels:
            errors.append(f"{iwhere}: $ref {ref!r} does not resolve to a panel")
        else:
            referenced.add(m.group(1))
    return errors


YAML11_BOOLEAN_KEY = re.compile(r"(?:^\s*(?:- )?|[{,]\s*)(?:y|n|yes|no|on|off)\s*:", re.M | re.I)


def text_errors(text: str) -> list[str]:
    """Problems a YAML 1.1 reader (the Kubernetes apply path) would have with the file's text."""
    errors = []
    for m in YAML11_BOOLEAN_KEY.finditer(text):
        key = m.group(0).strip(" -{,")
        line = text.count("\n", 0, m.start()) + 1
        errors.append(f"line {line}: unquoted key {key!r} reads as a boolean in YAML 1.1; quote it")
    return errors


def load_all(directory: Path) -> dict[Path, Any]:
    return {path: yaml.safe_load(path.read_text()) for path in sorted(directory.glob("*.yaml"))}


def recorded_series(rule_files: Iterable[Path]) -> set[str]:
    names: set[str] = set()
    for path in rule_files:
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            names.update(rule["record"] for rule in group.get("rules", []) if "record" in rule)
    return names
