"""Writing generated rule files the way they read when written by hand."""

from __future__ import annotations

from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None  # multi-line expressions as literal blocks
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(header: str, groups: list[dict[str, Any]]) -> str:
    return header + yaml.dump({"groups": groups}, Dumper=_Dumper, sort_keys=False, width=120)
