"""Prometheus text 0.0.4 / OpenMetrics 1.0.0 rendering primitives.

Both formats share the sample syntax and label escaping; only the family headers
differ (OpenMetrics names a counter family without its `_total` suffix), so samples
are rendered once and stored as bytes, and each family keeps both headers ready.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

METRIC_TYPES = ("gauge", "counter", "histogram")


def escape_label_value(value: str) -> str:
    """Escape backslash, double quote and newline, as both formats require."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if value != value:  # NaN
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


@dataclass(frozen=True)
class Family:
    """One metric family of the catalogue: name, type, help and its fixed label names."""

    name: str
    type: str
    help: str
    labels: tuple[str, ...]
    group: str = "exporter"
    header_text: bytes = field(init=False, repr=False, compare=False)
    header_openmetrics: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.type not in METRIC_TYPES:
            raise ValueError(f"{self.name}: unknown metric type {self.type!r}")
        if self.type == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"{self.name}: counters end in _total")
        if "job" in self.labels or "instance" in self.labels:
            raise ValueError(f"{self.name}: 'job' and 'instance' are reserved by Prometheus")
        helptext = escape_help(self.help)
        om_name = self.name[: -len("_total")] if self.type == "counter" else self.name
        object.__setattr__(
            self, "header_text", f"# HELP {self.name} {helptext}\n# TYPE {self.name} {self.type}\n".encode()
        )
        object.__setattr__(
            self,
            "header_openmetrics",
            f"# HELP {om_name} {helptext}\n# TYPE {om_name} {self.type}\n".encode(),
        )

    def sample(self, values: Sequence[str], value: float, suffix: str = "", extra: str = "") -> str:
        """One sample line. `values` follow `labels`; `extra` is a pre-rendered label (`le="1"`)."""
        pairs = [f'{k}="{escape_label_value(v)}"' for k, v in zip(self.labels, values, strict=True)]
        if extra:
            pairs.append(extra)
        return f"{self.name}{suffix}{{{','.join(pairs)}}} {format_value(value)}\n"
