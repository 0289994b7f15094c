"""Tooling for the monitoring pack: promtool wrapper, dashboard check, generated artefacts."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "recording_rules"
DASHBOARDS_DIR = ROOT / "dashboards"
DOCS_DIR = ROOT / "docs"
MONITORS_DIR = ROOT / "servicemonitors"
CHART_DIR = ROOT / "helm" / "ml-workload-exporter"
