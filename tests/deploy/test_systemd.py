"""The example systemd units of the native path (deploy/systemd/).

``systemd-analyze verify`` reads each unit as systemd would (unknown keys and
bad values are reported), on a copy whose ExecStart points at this checkout's
``garden``; the rest checks the settings the deployment relies on.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
GARDEN = str(Path(sys.executable).with_name("garden"))


def settings(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    text = (UNITS / unit).read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.mark.parametrize("unit", ["garden-bridge.service", "garden-hub.service"])
def test_unit_has_restart_environment_and_hardening(unit: str) -> None:
    s = settings(unit)
    assert s["Restart"] == ["on-failure"]
    assert s["EnvironmentFile"][0].startswith("/etc/garden/")
    assert s["User"] == ["garden"]
    assert s["StateDirectory"] == ["garden"]
    assert "GARDEN_DATA_DIR=%S/garden" in s["Environment"]
    assert "GARDEN_MQTT_PASSWORD_FILE=%d/mqtt_password" in s["Environment"]
    assert any(c.startswith("mqtt_password:/etc/garden/secrets/") for c in s["LoadCredential"])
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "CapabilityBoundingSet": "",
        "SystemCallFilter": "@system-service",
    }.items():
        assert s.get(key) == [value], f"{unit}: {key}={s.get(key)}"
    assert "multi-user.target" in s["WantedBy"]
    # No secret in the unit itself.
    assert not re.search(r"PASSWORD=|TOKEN=", (UNITS / unit).read_text())


def test_bridge_may_use_serial_ports_only() -> None:
    s = settings("garden-bridge.service")
    assert s["SupplementaryGroups"] == ["dialout"]
    assert s["DevicePolicy"] == ["closed"]
    assert sorted(s["DeviceAllow"]) == ["char-ttyACM rw", "char-ttyUSB rw"]
    assert s["ExecStart"] == ["/opt/garden-commons/bin/garden bridge run"]


def test_hub_has_no_devices() -> None:
    s = settings("garden-hub.service")
    assert s["PrivateDevices"] == ["yes"]
    assert "garden hub run" in s["ExecStart"][0]


@pytest.mark.parametrize("example", ["bridge.env.example", "hub.env.example"])
def test_environment_examples_hold_no_secrets(example: str) -> None:
    for line in (UNITS / example).read_text().splitlines():
        if line and not line.startswith("#"):
            key = line.split("=", 1)[0]
            assert key.startswith("GARDEN_") and not re.search(r"PASSWORD|TOKEN", key), line


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is missing: run scripts/setup.sh (apt-get install systemd)")
    names = []
    for unit in ("garden-bridge.service", "garden-hub.service"):
        text = (UNITS / unit).read_text().replace("/opt/garden-commons/bin/garden", GARDEN)
        (tmp_path / unit).write_text(text)
        names.append(unit)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    complaints = [line for line in result.stderr.splitlines() if "garden-" in line]
    assert result.returncode == 0 and not complaints, result.stderr
