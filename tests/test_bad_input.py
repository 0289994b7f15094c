"""Bad input loses nothing: arbitrary JSON through every source's object -> metrics functions.

Property-based (hypothesis): real fixture objects with any subtree replaced by arbitrary JSON, and
arbitrary JSON outright, go through each reflector's upsert exactly as a watch event would. No
exception escapes, the exposition stays valid, and another object's series are untouched.
"""

from __future__ import annotations

import copy
import subprocess
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from exporter import catalogue, config
from exporter.cli import SOURCES, cluster_sources
from exporter.emulator import scenario
from exporter.health import HealthRegistry
from exporter.kube import ResourceKind
from exporter.sources import WatchSource
from exporter.store import SeriesLimit, Store
from exporter.watch import NamespaceScope, Reflector, WatchSettings
from tests.conftest import unused_client, with_uid

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
NASTY = st.sampled_from(['quote "x"', "back\\slash", "new\nline", "ünïcødé ✓", "", "x" * 5000, "-1", "1e309",
                         "1960-01-01T00:00:00Z", "2999-12-31T23:59:59Z", "not-a-time"])  # fmt: skip


@cache
def fixtures() -> dict[ResourceKind, list[dict[str, Any]]]:
    out: dict[ResourceKind, list[dict[str, Any]]] = {}
    for make in (scenario.training_scenario, scenario.notebooks_scenario, scenario.pipelines_scenario,
                 scenario.serving_scenario, scenario.platform_scenario):  # fmt: skip
        for kind, obj in make()[0]:
            out.setdefault(kind, []).append(obj)
    return out


def sources(store: Store) -> list[WatchSource]:
    return cluster_sources(store, HealthRegistry("cluster"), unused_client(), NamespaceScope(), WatchSettings(),
                           config.defaults())  # fmt: skip


def reflectors() -> list[Reflector]:
    return [r for source in sources(Store(catalogue.FAMILIES)) for r in source.reflectors if r.kind in fixtures()]


def paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            out += paths(value, (*prefix, index))
    return out


def replace(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    obj = copy.copy(obj)
    obj[path[0]] = replace(obj[path[0]], path[1:], value)
    return obj


@st.composite
def mutated(draw: st.DrawFn, kind: ResourceKind) -> dict[str, Any]:
    base = with_uid(draw(st.sampled_from(fixtures()[kind])), "uid-under-test")
    for _ in range(draw(st.integers(1, 3))):
        candidates = [p for p in paths(base) if p[:2] != ("metadata", "uid")]
        path = draw(st.sampled_from(candidates))
        base = replace(base, path, draw(JSON | NASTY))
    return base


def exposition(store: Store) -> str:
    return b"".join(store.render()).decode()


def assert_valid(text: str) -> None:
    for family in text_string_to_metric_families(text):  # raises on anything Prometheus could not read
        for sample in family.samples:
            assert isinstance(sample.value, int | float)


KINDS = sorted({r.kind for r in reflectors()}, key=str)


@pytest.mark.parametrize("kind", KINDS, ids=str)
# derandomize: the same examples every run, so CI is repeatable; raise max_examples locally to search wider.
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_arbitrary_objects_never_escape_or_break_the_exposition(kind: ResourceKind, data: st.DataObject) -> None:
    store = Store(catalogue.FAMILIES)
    for source in sources(store):
        for reflector in source.reflectors:
            if reflector.kind != kind:
                continue
            # A well-formed neighbour whose series must come through untouched.
            neighbour = with_uid(fixtures()[kind][0], "uid-neighbour")
            reflector._apply(neighbour)
            before = exposition(store)
            obj = data.draw(st.one_of(mutated(kind), st.dictionaries(st.text(max_size=8), JSON, max_size=5)))
            reflector._apply(obj)  # must not raise: malformed objects are counted and skipped
            after = exposition(store)
            assert_valid(after)
            kept = [ln for ln in before.splitlines() if not ln.startswith("#")]
            # The neighbour's lines are all still there (the new object may only add its own).
            changed = set(kept) - set(after.splitlines()) - lines_of_same_identity(before, obj)
            assert not changed, f"{kind}: another object's series changed: {sorted(changed)[:3]}"
            reflector.handler.delete("uid-under-test")  # leave the store as the next reflector expects it
            reflector._apply(neighbour)


def lines_of_same_identity(text: str, obj: Any) -> set[str]:
    """Lines an object with the neighbour's namespace/name may legitimately replace (same identity)."""
    try:
        meta = obj["metadata"]
        name, namespace = meta["name"], meta.get("namespace", "")
    except (KeyError, TypeError):
        return set()
    if not isinstance(name, str):
        return set()
    return {ln for ln in text.splitlines() if f'"{name}"' in ln and (not namespace or f'"{namespace}"' in ln)}


def job(name: str, **status: Any) -> dict[str, Any]:
    obj = with_uid(scenario.v1_job("PyTorchJob", "team-a", name, "running", started=60), f"uid-{name[:40]}")
    obj["status"].update(status)
    return obj


def test_nasty_label_values_are_escaped_and_promtool_reads_them() -> None:
    store = Store(catalogue.FAMILIES)
    (training,) = [s for s in sources(store) if s.name == "training"]
    reflector = next(r for r in training.reflectors if r.kind.kind == "PyTorchJob")
    names = ['quote"d', "back\\slash", "new\nline", "ünïcødé-✓", "x" * 5000]
    for name in names:
        reflector._apply(job(name))
    reflector._apply(job("past", startTime="1960-01-01T00:00:00Z"))
    reflector._apply(job("future", startTime="2999-12-31T23:59:59Z"))
    reflector._apply(job("garbage", startTime="yesterday-ish"))
    text = exposition(store)
    assert_valid(text)
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert "error" not in (check.stdout + check.stderr).lower(), check.stdout + check.stderr
    parsed = {s.labels.get("job_name") for f in text_string_to_metric_families(text) for s in f.samples}
    assert set(names) | {"past", "future", "garbage"} <= parsed  # every name survives, escaped
    starts = {s.labels["job_name"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
              if s.name == "ml_training_job_start_timestamp_seconds"}  # fmt: skip
    assert starts["past"] < 0 < starts["future"] and "garbage" not in starts  # unreadable time: absent


def test_duplicate_uid_replaces_instead_of_duplicating() -> None:
    store = Store(catalogue.FAMILIES)
    (training,) = [s for s in sources(store) if s.name == "training"]
    reflector = next(r for r in training.reflectors if r.kind.kind == "PyTorchJob")
    first, second = job("one"), job("two")
    second["metadata"]["uid"] = first["metadata"]["uid"]
    reflector._apply(first)
    reflector._apply(second)
    text = exposition(store)
    assert 'job_name="two"' in text and 'job_name="one"' not in text


def test_series_limit_drops_and_counts_what_is_over() -> None:
    store = Store(catalogue.FAMILIES)
    registry = HealthRegistry("cluster")
    options = config.load(["--limits.series-per-source", "40"], environ={})
    training = SOURCES["training"](store, registry, unused_client(), NamespaceScope(), WatchSettings(), options)
    assert isinstance(training.store, SeriesLimit)
    reflector = next(r for r in training.reflectors if r.kind.kind == "PyTorchJob")
    for n in range(20):
        reflector._apply(job(f"job-{n}"))
    limit = training.store
    assert 0 < limit.series <= 40 and limit.dropped > 0
    registry.refresh(store)
    text = exposition(store)
    assert f'ml_exporter_series_dropped_total{{source="training"}} {limit.dropped}' in text
    assert f'ml_exporter_source_series{{source="training"}} {limit.series}' in text
    # Deleting objects frees room: a new one fits again.
    for n in range(20):
        reflector.handler.delete(f"uid-job-{n}")
    reflector._apply(job("late"))
    assert 'job_name="late"' in exposition(store) and 0 < limit.series <= 40


def test_only_allowlisted_labels_and_annotations_are_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A label, an annotation or an environment variable the exporter does not name never shows up."""
    secret = "s3cr3t-VALUE-never-exported"
    monkeypatch.setenv("DB_PASSWORD", secret)
    store = Store(catalogue.FAMILIES)
    for source in sources(store):
        for reflector in source.reflectors:
            for n, obj in enumerate(fixtures().get(reflector.kind, [])):
                obj = with_uid(obj, f"uid-{reflector.kind.plural}-{n}")
                obj["metadata"].setdefault("labels", {})["leak.example.com/token"] = secret
                obj["metadata"].setdefault("annotations", {})["leak.example.com/password"] = secret
                obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = secret
                reflector._apply(obj)
    text = exposition(store)
    assert text.count("\n") > 100  # every source rendered its objects
    assert secret not in text
