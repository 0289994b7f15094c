"""Kubernetes label selectors (the string form used in `?labelSelector=`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Labels = Mapping[str, str]
Matcher = Callable[[Labels], bool]

_SET = re.compile(r"^\s*([^\s!=()]+)\s+(in|notin)\s+\(([^()]*)\)\s*$")
_EQ = re.compile(r"^\s*([^\s!=()]+)\s*(==|=|!=)\s*([^\s!=()]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([^\s!=()]+)\s*$")


class SelectorError(ValueError):
    pass


def _term(term: str) -> Matcher:
    if m := _SET.match(term):
        key, negate, values = m.group(1), m.group(2) == "notin", {v.strip() for v in m.group(3).split(",")}
        return lambda labels: (labels.get(key) in values) != negate
    if m := _EQ.match(term):
        key, op, value = m.groups()
        return lambda labels: (labels.get(key) == value) != (op == "!=")
    if m := _EXISTS.match(term):
        absent, key = m.group(1) == "!", m.group(2)
        return lambda labels: (key in labels) != absent
    raise SelectorError(f"unable to parse requirement: {term!r}")


def parse_selectors(label_selector: str, field_selector: str = "") -> Callable[[dict[str, Any]], bool]:
    """A predicate on whole objects: label selector and field selector (metadata.name/namespace, = and !=)."""
    labels = parse_selector(label_selector)
    fields: list[tuple[str, str, bool]] = []
    for term in filter(None, (t.strip() for t in field_selector.split(","))):
        m = re.match(r"^(metadata\.name|metadata\.namespace)\s*(==|=|!=)\s*(.*)$", term)
        if m is None:
            raise SelectorError(f"field selector not supported by the emulator: {term!r}")
        fields.append((m.group(1).split(".")[1], m.group(3), m.group(2) == "!="))

    def match(obj: dict[str, Any]) -> bool:
        metadata = obj.get("metadata") or {}
        if any((metadata.get(key, "") == value) == negate for key, value, negate in fields):
            return False
        return labels(metadata.get("labels") or {})

    return match


def parse_selector(selector: str) -> Matcher:
    if not selector.strip():
        return lambda labels: True
    terms = [_term(t) for t in re.split(r",(?![^()]*\))", selector)]
    return lambda labels: all(t(labels) for t in terms)
