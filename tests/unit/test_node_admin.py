"""Editing a node's config (pure), who makes the change, and the CLI's refusals before any I/O."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from firmware_bridge.errors import ConfigError
from firmware_bridge.messages import compact_json, parse_node_config
from garden.cli.app import app
from garden.grafana_push import GrafanaError, find_dashboard_dir, folder_uid_for, load_dashboards
from garden.node_admin import (
    current_user,
    edit_assign,
    edit_calibration,
    edit_interval,
    edit_retire,
    parse_interval,
)

runner = CliRunner()
CONFIG = {"bed": "bed-1", "interval_s": 300, "calibration": {"sm0": {"dry": 520, "wet": 260, "temp_coeff": -1.5}}}


def valid(config: dict[str, object]) -> None:
    parse_node_config(compact_json(config))


def test_assign_and_unassign() -> None:
    edit = edit_assign(CONFIG, "n1", "bed-4")
    assert edit.config["bed"] == "bed-4"
    assert edit.change == {"bed": {"from": "bed-1", "to": "bed-4"}}
    assert edit.config["calibration"] == CONFIG["calibration"]
    valid(edit.config)
    edit = edit_assign(CONFIG, "n1", None)
    assert "bed" not in edit.config
    assert edit.change == {"bed": {"from": "bed-1", "to": None}}
    assert CONFIG["bed"] == "bed-1"  # the input is never changed
    with pytest.raises(ValueError, match="bed"):
        edit_assign(CONFIG, "n1", "bed 4")


def test_same_value_is_no_change() -> None:
    assert edit_interval(CONFIG, "n1", 300).change == {}
    assert edit_assign(CONFIG, "n1", "bed-1").change == {}


@given(st.integers(1, 86_400))
def test_every_allowed_interval_gives_a_valid_config(seconds: int) -> None:
    edit = edit_interval(CONFIG, "n1", seconds)
    valid(edit.config)
    assert parse_node_config(compact_json(edit.config)).interval_s == seconds


@pytest.mark.parametrize("seconds", [0, -1, 86_401])
def test_interval_out_of_range(seconds: int) -> None:
    with pytest.raises(ConfigError, match="interval_s"):
        edit_interval(CONFIG, "n1", seconds)


def test_parse_interval() -> None:
    assert parse_interval("600") == 600
    assert parse_interval("10m") == 600
    for bad in ("0", "fast", "2d", "-5"):
        with pytest.raises(ValueError):
            parse_interval(bad)


def test_retire_and_undo() -> None:
    edit = edit_retire(CONFIG, "n1")
    assert edit.config["retired"] is True
    valid(edit.config)
    assert edit_retire(edit.config, "n1", retired=False).config == CONFIG


def test_calibration_merges_into_the_sensor_and_names_it_in_the_change() -> None:
    edit = edit_calibration(CONFIG, "n1", "sm0", {"dry": 530.0, "wet": 250.0})
    assert edit.config["calibration"]["sm0"] == {"dry": 530, "wet": 250, "temp_coeff": -1.5}
    assert list(edit.change) == ["calibration.sm0"]
    valid(edit.config)
    edit = edit_calibration(edit.config, "n1", "tk0", {"depth_cm": 120.0, "litres_per_cm": 10.0})
    assert edit.config["calibration"]["tk0"] == {"depth_cm": 120, "litres_per_cm": 10}
    assert edit.config["calibration"]["sm0"]["dry"] == 530
    valid(edit.config)
    edit = edit_calibration({}, "n1", "rh0", {"offset_pct": -2.5})
    assert edit.config == {"calibration": {"rh0": {"offset_pct": -2.5}}}
    valid(edit.config)


@pytest.mark.parametrize(
    ("sensor", "values", "message"),
    [
        ("sm0", {"dry": 2000.0}, r"calibration\.sm0\.dry: must be ADC counts"),
        ("sm0", {"wet": 0.0}, r"calibration\.sm0\.wet"),
        ("sm0", {"dry": 300.0, "wet": 300.0}, "must differ"),
        ("sm0", {"wet": 520.0}, "must differ"),  # the kept dry is 520
        ("tk0", {"depth_cm": -1.0}, r"calibration\.tk0\.depth_cm"),
        ("tk0", {"litres_per_cm": 0.0}, r"calibration\.tk0\.litres_per_cm"),
        ("tk0", {"dry": 500.0}, r"does not apply to tk0"),
        ("lx0", {"offset_c": 1.0}, "no calibration applies"),
        ("st0", {"offset_c": 99.0}, "between"),
        ("sm0", {}, "nothing to set"),
    ],
)
def test_calibration_refuses_values_no_probe_could_have(sensor: str, values: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        edit_calibration(CONFIG, "n1", sensor, values)


def test_who_comes_from_env_then_config_then_login(tmp_path: Path) -> None:
    config = tmp_path / "garden.toml"
    config.write_text('[garden]\nid = "g"\nuser = "bea"\n')
    assert current_user(config, env={"GARDEN_USER": "alice"}) == "alice"
    assert current_user(config, env={}) == "bea"
    assert current_user(Path("/dev/null"), env={})  # the login name, whatever it is
    config.write_text("[garden]\nuser = 7\n")
    with pytest.raises(ConfigError, match=r"garden\.user"):
        current_user(config, env={})
    with pytest.raises(ConfigError, match="GARDEN_USER"):
        current_user(config, env={"GARDEN_USER": "x" * 65})


# ------------------------------------------------------------- dashboards files


def test_the_repository_dashboards_load() -> None:
    dashboards = load_dashboards(find_dashboard_dir())
    assert {d.uid for d in dashboards} >= {"garden-overview", "garden-bed", "garden-water", "garden-nodes"}
    assert folder_uid_for("Garden") == "garden"
    assert folder_uid_for("Allotment 7 / Water!") == "allotment-7-water"


def test_bad_dashboard_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(GrafanaError, match="no dashboard JSON"):
        load_dashboards(tmp_path)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(GrafanaError, match=r"broken\.json"):
        load_dashboards(tmp_path)
    (tmp_path / "broken.json").write_text('{"title": "x"}')
    with pytest.raises(GrafanaError, match="needs a uid"):
        load_dashboards(tmp_path)


# ------------------------------------------------------------- CLI refusals (no servers needed)

NO_BROKER = ["--mqtt", "mqtt://127.0.0.1:9", "--config", "/dev/null"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["readings", "bed-1", "--since", "yesterday"], "--since: 'yesterday' is not a duration"),
        (["readings", "bed-1", "--since", "0h"], "more than zero"),
        (["readings", "bed 1"], "not a bed or node name"),
        (["readings", "x' OR 1=1"], "not a bed or node name"),
        (["readings", "bed-1", "--sensor", "SM-0"], "--sensor"),
        (["node", "set-interval", "bed/1", "600", *NO_BROKER], "not a node id"),
        (["node", "set-interval", "n1", "fast", *NO_BROKER], "interval: 'fast' is not a duration"),
        (["node", "set-interval", "n1", "0", *NO_BROKER], "1-86400 seconds"),
        (["node", "show", "n+1", *NO_BROKER], "not a node id"),
        (["node", "assign", "n1", *NO_BROKER], "give a bed, or --none"),
        (["node", "assign", "n1", "bed-1", "--none", *NO_BROKER], "give a bed, or --none"),
        (["node", "assign", "n1", "bed#1", *NO_BROKER], "not a bed name"),
        (["node", "calibrate", "n1", *NO_BROKER], "give one kind of calibration"),
        (["node", "calibrate", "n1", "--dry", "500", "--tank-depth-cm", "90", *NO_BROKER], "one kind"),
        (["node", "calibrate", "n1", "--dry", "5000", *NO_BROKER], "calibration.sm0.dry"),
        (["node", "calibrate", "n1", "--dry", "300", "--wet", "300", *NO_BROKER], "must differ"),
        (["node", "calibrate", "n1", "--sensor", "tk0", "--dry", "300", *NO_BROKER], "does not apply to tk0"),
        (["node", "calibrate", "n1", "--litres-per-cm", "-3", *NO_BROKER], "calibration.tk0.litres_per_cm"),
        (["node", "calibrate", "n1", "--offset", "1"], "--offset needs --sensor"),
        (["dashboards", "push", "--grafana-url", "ftp://x"], "must look like http://host:3000"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(args: list[str], message: str) -> None:
    result = runner.invoke(app, args, env={"GARDEN_GRAFANA_URL": None, "COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output


def test_dashboards_push_needs_a_url() -> None:
    result = runner.invoke(app, ["dashboards", "push"], env={"GARDEN_GRAFANA_URL": None})
    assert result.exit_code == 2
    assert "--grafana-url" in result.output
