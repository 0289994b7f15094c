"""Kubernetes label selectors (the string form used in `?labelSelector=`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

Matcher = Callable[[Mapping[str, str]], bool]

_SET = re.compile(r"^\s*([^\s!=()]+)\s+(in|notin)\s+\(([^()]*)\)\s*$")
_EQ = re.compile(r"^\s*([^\s!=()]+)\s*(==|=|!=)\s*([^\s!=()]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([^\s!=()]+)\s*$")


class SelectorError(ValueError):
    pass


def parse_selector(selector: str) -> Matcher:
    if not selector.strip():
        return lambda labels: True
    terms: list[Matcher] = []
    for term in re.split(r",(?![^()]*\))", selector):
        if m := _SET.match(term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                terms.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                terms.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif m := _EQ.match(term):
            key, op, value = m.groups()
            if op == "!=":
                terms.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                terms.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif m := _EXISTS.match(term):
            negate, key = m.group(1) == "!", m.group(2)
            terms.append(lambda labels, k=key, n=negate: (k in labels) != n)
        else:
            raise SelectorError(f"unable to parse requirement: {term!r}")
    return lambda labels: all(t(labels) for t in terms)
