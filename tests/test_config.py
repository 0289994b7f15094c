"""Configuration: flags, environment twins and the YAML file; every problem reported at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from exporter import config


def test_defaults() -> None:
    cfg = config.load([], environ={})
    assert cfg.role == "cluster"
    assert cfg.web_listen_address == ("0.0.0.0", 9835)
    assert cfg.web_telemetry_path == "/metrics"
    assert cfg.sources == ("training", "notebooks", "pipelines", "serving", "platform")
    assert cfg.notebooks_probe is False
    assert cfg.namespaces is None and cfg.namespace_selector is None


def test_precedence_flag_over_environment_over_file(tmp_path: Path) -> None:
    file = tmp_path / "config.yaml"
    file.write_text("web.listen-address: 127.0.0.1:1111\nnamespaces: [team-a, team-b]\nwatch.page-size: 50\n")
    env = {"ML_EXPORTER_WEB_LISTEN_ADDRESS": "127.0.0.1:2222", "ML_EXPORTER_WATCH_PAGE_SIZE": "75"}
    cfg = config.load(["--config.file", str(file), "--web.listen-address", ":3333"], environ=env)
    assert cfg.web_listen_address == ("0.0.0.0", 3333)
    assert cfg.watch_page_size == 75
    assert cfg.namespaces == ("team-a", "team-b")


def test_every_problem_is_reported_with_its_key(tmp_path: Path) -> None:
    file = tmp_path / "config.yaml"
    file.write_text("web.listen-adress: 1\nwatch.timeout: soon\n")
    with pytest.raises(config.ConfigError) as excinfo:
        config.load(
            [
                "--config.file",
                str(file),
                "--web.listen-address",
                "nowhere",
                "--role",
                "gpu",
                "--namespace-selector",
                "a in (b",
                "--sources",
                "training,jobs",
            ],
            environ={"ML_EXPORTER_WATCH_PAGE_SIZE": "-1"},
        )
    problems = "\n".join(excinfo.value.problems)
    for key in (
        "web.listen-adress",
        "watch.timeout",
        "web.listen-address (flag",
        "role (flag",
        "namespace-selector",
        "sources",
        "watch.page-size (environment variable ML_EXPORTER_WATCH_PAGE_SIZE",
    ):
        assert key in problems, key
    assert len(excinfo.value.problems) == 7


def test_namespaces_and_selector_exclude_each_other() -> None:
    with pytest.raises(config.ConfigError, match="set one of them"):
        config.load(["--namespaces", "a", "--namespace-selector", "x=y"], environ={})


@pytest.mark.parametrize("selector", ["opendatahub.io/dashboard=true", "a,!b", "env in (dev, prod),tier!=x", "k==v"])
def test_valid_selectors(selector: str) -> None:
    assert config.load(["--namespace-selector", selector], environ={}).namespace_selector == selector


def test_bad_file_is_named(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("role: [unclosed\n")
    with pytest.raises(config.ConfigError, match=r"c\.yaml: not valid YAML"):
        config.load(["--config.file", str(file)], environ={})


def test_command_exits_2_and_names_the_key() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "--web.listen-address", "bad", "--watch.page-size", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith("ml-workload-exporter: configuration error: ") for line in lines)
    assert "web.listen-address" in proc.stderr and "watch.page-size" in proc.stderr
