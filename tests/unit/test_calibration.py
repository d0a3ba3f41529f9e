"""Calibration and value checks: sentinels, ranges, two-point, polynomial, tank."""

from __future__ import annotations

import pytest

from firmware_bridge.calibration import calibrate, parse_calibration
from firmware_bridge.errors import ConfigError
from firmware_bridge.line_protocol import SensorError


def test_two_point_default_maps_the_end_points() -> None:
    out = calibrate({"sm0": 520, "sm1": 260, "sm2": 390})
    assert out.values["sm0"]["vwc_pct"] == 5.0
    assert out.values["sm1"]["vwc_pct"] == 45.0
    assert out.values["sm2"]["vwc_pct"] == 25.0
    assert out.raw == {"sm0": 520, "sm1": 260, "sm2": 390}


@pytest.mark.parametrize(("key", "value"), [("st0", 85.0), ("st0", -127), ("sm0", 0), ("sm0", 1023), ("tk0", 0)])
def test_sentinels_are_never_calibrated(key: str, value: float) -> None:
    out = calibrate({key: value, "at0": 20.5})
    assert out.errors == {key: "sentinel"}
    assert key not in out.values
    assert out.raw[key] == value  # kept raw, for the record
    assert out.values["at0"] == {"temp_c": 20.5}


def test_out_of_range_and_failed_sensors() -> None:
    out = calibrate({"rh0": 120.0, "at0": SensorError("nc"), "lx0": 300})
    assert out.errors == {"rh0": "out_of_range", "at0": "nc"}
    assert out.values == {"lx0": {"lux": 300}}


def test_probe_temperature_correction_uses_the_matching_soil_probe() -> None:
    cal = parse_calibration({"sm0": {"temp_coeff": -1.5}})
    cold = calibrate({"sm0": 400, "st0": 10.0}, cal).values["sm0"]["vwc_pct"]
    warm = calibrate({"sm0": 385, "st0": 20.0}, cal).values["sm0"]["vwc_pct"]
    # 10 °C colder reads 15 counts higher for the same water: corrected away.
    assert cold == warm


def test_polynomial_replaces_two_points() -> None:
    cal = parse_calibration({"sm0": {"poly": [100.0, -0.2]}})
    assert calibrate({"sm0": 400}, cal).values["sm0"]["vwc_pct"] == 20.0


def test_tank_litres_from_distance() -> None:
    cal = parse_calibration({"tk0": {"depth_cm": 120, "litres_per_cm": 10}})
    assert calibrate({"tk0": 40.0}, cal).values["tk0"] == {
        "distance_cm": 40.0,
        "level_cm": 80.0,
        "litres": 800.0,
    }
    assert calibrate({"tk0": 40.0}).values["tk0"] == {"distance_cm": 40.0}


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"sm0": {"dry": "high"}}, "calibration.sm0.dry"),
        ({"sm0": {"dry": 300, "wet": 300}}, "calibration.sm0"),
        ({"sm0": {"wat": 1}}, "calibration.sm0.wat"),
        ({"zz0": {}}, "calibration.zz0"),
        ({"tk0": {"depth_cm": True}}, "calibration.tk0.depth_cm"),
        ({"sm0": {"poly": ["a"]}}, "calibration.sm0.poly"),
        ([1, 2], "calibration"),
    ],
)
def test_bad_calibration_names_the_key(spec: object, path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_calibration(spec)
    assert caught.value.path == path


def test_hostile_calibrations_are_refused_or_flagged() -> None:
    for spec in ({"sm0": {"poly": [float("nan")]}}, {"sm0": {"poly": [10**400]}}, {"sm0": {"dry": 10**400}}):
        with pytest.raises(ConfigError):
            parse_calibration(spec)
    # Finite coefficients that overflow at real counts: the sensor is flagged, not the reading lost.
    cal = parse_calibration({"sm0": {"poly": [1e308, 1e308, 1e308]}})
    out = calibrate({"sm0": 500, "at0": 20.0}, cal)
    assert out.errors == {"sm0": "bad_calibration"}
    assert out.values == {"at0": {"temp_c": 20.0}}
