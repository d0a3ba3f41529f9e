"""The CLI's contract: help for every command, documented commands, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from garden.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def all_commands() -> list[tuple[str, Any]]:
    root = typer.main.get_command(app)
    found: list[tuple[str, Any]] = []

    def walk(prefix: str, cmd: Any) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(f"{prefix} {name}".strip(), sub)
        else:
            found.append((prefix, cmd))

    walk("", root)
    return found


def test_every_command_has_help_and_is_documented() -> None:
    docs = (ROOT / "docs" / "cli.md").read_text()
    commands = all_commands()
    assert {name for name, _ in commands} >= {"simulate", "up", "bridge run", "bridge status"}
    for name, cmd in commands:
        assert cmd.help and len(cmd.help) > 20, f"garden {name} has no help text"
        assert f"garden {name}" in docs, f"garden {name} is missing from docs/cli.md"


def test_bad_arguments_exit_2() -> None:
    assert runner.invoke(app, ["simulate", "--nodes", "0"]).exit_code == 2
    result = runner.invoke(app, ["simulate", "--faults", "lightning=1"])
    assert result.exit_code == 2
    assert "unknown fault 'lightning'" in result.output


def test_broken_config_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "garden.toml"
    config.write_text('[bridge]\nspool_max_rows = "lots"\n')
    result = runner.invoke(app, ["bridge", "status", "--config", str(config)])
    assert result.exit_code == 2
    assert "bridge.spool_max_rows" in result.output


def test_unreachable_broker_exits_1_with_a_hint() -> None:
    result = runner.invoke(app, ["bridge", "status", "--mqtt", "mqtt://127.0.0.1:9", "--config", "/dev/null"])
    assert result.exit_code == 1
    assert "cannot reach the MQTT broker" in result.output


def test_the_bridge_imports_nothing_of_the_hub() -> None:
    """The bridge runs on a small Pi with only pyserial and paho-mqtt."""
    code = (
        "import sys, firmware_bridge.service, firmware_bridge.simulator.pty_runner;"
        "import json; print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    )
    loaded = set(json.loads(subprocess.check_output([sys.executable, "-c", code])))
    assert not loaded & {"influxdb_client", "grafana_client", "pydantic", "typer", "rich", "garden"}
    assert {"serial", "paho"} <= loaded


@pytest.mark.parametrize("doc", ["README.md", "docs/protocol.md", "docs/architecture.md", "docs/configuration.md"])
def test_docs_exist(doc: str) -> None:
    assert len((ROOT / doc).read_text()) > 500


def test_protocol_doc_examples_parse() -> None:
    from firmware_bridge.line_protocol import parse_line

    examples = [ln for ln in (ROOT / "docs" / "protocol.md").read_text().splitlines() if ln.startswith("$G")]
    assert len(examples) == 4
    for line in examples:
        parse_line(line.encode() + b"\r\n")
