"""The watch's edges that need no server: alert/need payloads into points, watch
settings with every error naming its key, bed-profile edits, soil calibration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware_bridge.calibration import parse_calibration
from firmware_bridge.errors import ConfigError
from garden.bed_admin import edited_profile
from garden.ingest import Refused, alert_points, need_points
from garden.node_admin import edit_calibration
from garden.watch_settings import load_watch_settings
from garden.watering.bed_profile import parse_bed_profile

NOW = 1_800_000_000_000


def test_alert_and_need_payloads_become_points() -> None:
    body = {"ts": NOW, "transition": "raised", "severity": "warning", "text": 'Bed 3: 19% "dry", water', "bed": "bed-3"}
    (point,) = alert_points("g", "water", "bed-3", json.dumps(body).encode(), NOW).lines
    assert point == (
        f'alert,bed=bed-3,garden=g,kind=water,state=raised,subject=bed-3 severity="warning",'
        f'text="Bed 3: 19% \\"dry\\", water" {NOW}'
    )
    assert alert_points("g", "water", "bed-3", b"", NOW).lines == []  # a cleared retained alert
    need = {"ts": NOW, "state": "needs_water", "vwc_pct": 19.5, "trigger_vwc": 21.1, "hours_left": 0.0}
    (line,) = need_points("g", "bed-3", json.dumps(need).encode(), NOW).lines
    assert line.startswith("water_need,bed=bed-3,garden=g ") and "level=2i" in line and "trigger_vwc=21.1" in line


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"ts": NOW, "transition": "exploded", "severity": "warning"}, "bad_transition"),
        ({"ts": NOW, "transition": "raised", "severity": "apocalyptic"}, "bad_severity"),
        ({"ts": NOW, "transition": "raised", "severity": "info", "bed": "a b"}, "bad_name"),
        ({"ts": "now", "transition": "raised", "severity": "info"}, "wrong_type"),
    ],
)
def test_bad_alerts_are_refused_with_a_reason(body: dict[str, object], reason: str) -> None:
    with pytest.raises(Refused) as err:
        alert_points("g", "water", "bed-3", json.dumps(body).encode(), NOW)
    assert err.value.reason == reason


def test_bad_needs_are_refused() -> None:
    with pytest.raises(Refused) as err:
        need_points("g", "bed-3", json.dumps({"ts": NOW, "state": "thirsty"}).encode(), NOW)
    assert err.value.reason == "bad_state"
    with pytest.raises(Refused) as err:
        need_points("g", "bed-3", json.dumps({"ts": NOW, "state": "ok", "vwc_pct": "wet"}).encode(), NOW)
    assert err.value.reason == "wrong_type"


def test_watch_settings_defaults_and_people(tmp_path: Path) -> None:
    config = tmp_path / "garden.toml"
    config.write_text(
        '[garden]\nlatitude = 52.5\ntimezone = "Europe/Berlin"\n'
        "[watch]\nevaluate_every_s = 30\n"
        '[notify.smtp]\nhost = "smtp.example.org"\n'
        '[[people]]\nname = "ana"\nemail = "ana@example.org"\nbeds = ["bed-1"]\nquiet_hours = "22:00-07:00"\n'
    )
    s = load_watch_settings(config, env={"GARDEN_SMTP_PASSWORD": "s3cret"})
    assert s.latitude == 52.5 and s.evaluate_every_s == 30 and s.smtp is not None
    assert s.smtp.password == "s3cret" and "s3cret" not in repr(s)
    (ana,) = s.people
    assert ana.beds == ("bed-1",) and ana.recipient.timezone == "Europe/Berlin"
    assert ana.recipient.quiet_hours is not None


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[garden]\nlatitude = 123.0\n", "garden.latitude"),
        ('[garden]\ntimezone = "Mars/Olympus"\n', "garden.timezone"),
        ("[watch]\nlate_tolerance = 3.0\nlost_tolerance = 2.0\n", "watch.lost_tolerance"),
        ("[watch]\nevaluate_every_s = -1\n", "watch.evaluate_every_s"),
        ("[watch]\nhurry = true\n", "watch.hurry"),
        ('[watch]\nnotify_min_severity = "loud"\n', "watch.notify_min_severity"),
        ('[notify.smtp]\nhost = "x"\npassword = "p"\n', "notify.smtp.password"),
        ('[notify.smtp]\nhost = "x"\nsecurity = "ssl3"\n', "notify.smtp.security"),
        ('[notify.ntfy]\ntoken = "t"\n', "notify.ntfy.token"),
        ('[[people]]\nname = "ana"\n', "people[0]"),
        ('[[people]]\nname = "ana"\nemail = "not-an-address"\n', "people[0].email"),
        ('[[people]]\nname = "ana"\nemail = "a@b.c"\nquiet_hours = "late"\n', "people[0].quiet_hours"),
        ('[[people]]\nname = "ana"\nwebhook = "ftp://x"\n', "people[0].webhook"),
        ('[[people]]\nname = "a"\nemail = "a@b.c"\n[[people]]\nname = "a"\nemail = "a@b.c"\n', "people"),
    ],
)
def test_broken_watch_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    config = tmp_path / "garden.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_watch_settings(config, env={})
    assert err.value.path == key


def test_bed_profile_edits_validate_and_record_the_change() -> None:
    profile, change = edited_profile("bed-3", None, soil="loam", crops=[("lettuce", "2026-04-01")])
    assert profile.soil == "loam" and set(change) >= {"soil", "crops"}
    again, change = edited_profile("bed-3", profile, overrides={"trigger_vwc": 24.0})
    assert again.override("trigger_vwc") == 24.0 and list(change) == ["overrides"]
    cleared, _ = edited_profile("bed-3", again, overrides={"trigger_vwc": None})
    assert cleared.override("trigger_vwc") is None
    with pytest.raises(ConfigError, match="needs --soil"):
        edited_profile("bed-4", None, crops=[("lettuce", "2026-04-01")])
    with pytest.raises(ConfigError) as err:
        edited_profile("bed-3", profile, soil="lome")
    assert "loam" in str(err.value)
    assert parse_bed_profile("bed-3", {"soil": "loam"}).crops == ()


def test_soil_calibration_polynomial_is_checked_and_used() -> None:
    edit = edit_calibration({}, "n1", "sm0", {"poly": [95.2, -0.17]})
    cal = parse_calibration(edit.config["calibration"])
    assert cal.moisture_for("sm0").vwc_pct(400.0, None) == pytest.approx(95.2 - 0.17 * 400)
    with pytest.raises(ConfigError, match="VWC at"):
        edit_calibration({}, "n1", "sm0", {"poly": [0.0, 1.0]})  # 1 % per count: 800 % at 800 counts
    with pytest.raises(ConfigError, match="finite"):
        edit_calibration({}, "n1", "sm0", {"poly": [float("nan")]})
    removed = edit_calibration(edit.config, "n1", "sm0", {"poly": []})
    assert "poly" not in removed.config["calibration"]["sm0"]
