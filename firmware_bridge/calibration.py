"""From raw sensor values to calibrated ones, and the checks in between.

Pure code. Nodes send raw values (ADC counts, degrees, centimetres); the
host calibrates, so a better calibration can later be applied to history.
Each sensor key is a kind prefix and an index: ``sm0`` is the first soil
moisture probe. The kinds and their units are listed in docs/protocol.md.

A value the node reports as failed (``na``), a known sentinel, or a value
outside what the sensor can physically read is never calibrated: it is
reported in ``errors`` with a reason and counted by the caller.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from firmware_bridge.errors import ConfigError
from firmware_bridge.line_protocol import SensorError, Value

_KEY_RE = re.compile(r"([a-z]+)(\d*)")

# Sentinels that a driver returns instead of a reading:
# - DS18B20: 85.0 °C is the power-on reset value of the scratchpad, -127 is
#   the DallasTemperature library's DEVICE_DISCONNECTED_C (Maxim DS18B20
#   datasheet, "Operation - Measuring Temperature", and the library source).
# - A disconnected analog probe floats to 0 or to full scale.
# - An ultrasonic ranger reports 0 for no echo and its maximum for a timeout.
DS18B20_SENTINELS = (85.0, -127.0)

# Physical ranges of the reference parts (datasheets): DS18B20 -55..125 °C,
# SHT3x -40..125 °C and 0..100 %RH, BH1750 0..65535 lx. The tank ranger
# (JSN-SR04T) reads 20..600 cm.
_RANGES: dict[str, tuple[float, float]] = {
    "st": (-55.0, 125.0),
    "at": (-40.0, 125.0),
    "rh": (0.0, 100.0),
    "lx": (0.0, 65535.0),
    "bt": (0.0, 6000.0),
}


@dataclass(frozen=True, slots=True)
class MoistureCalibration:
    """Raw counts to volumetric water content, in percent.

    Two-point by default: ``dry`` counts, read in air-dry soil, map to
    ``dry_vwc``; ``wet`` counts, read in saturated soil, map to ``wet_vwc``.
    (Air and water are the wrong end points for soil.) The defaults suit a
    capacitive v1.2 probe on a 10-bit ADC at 5 V. A polynomial in raw
    counts (``poly``, lowest power first) replaces the two points when a probe
    was calibrated against samples. ``temp_coeff`` corrects the capacitive
    probe's drift with soil temperature, in counts per °C from 20 °C.
    """

    dry: float = 520.0
    wet: float = 260.0
    dry_vwc: float = 5.0
    wet_vwc: float = 45.0
    poly: tuple[float, ...] = ()
    temp_coeff: float = 0.0
    adc_max: int = 1023

    def vwc_pct(self, raw: float, soil_temp_c: float | None) -> float:
        counts = raw
        if self.temp_coeff and soil_temp_c is not None:
            counts = raw - self.temp_coeff * (soil_temp_c - 20.0)
        if self.poly:
            try:
                vwc = sum(c * counts**i for i, c in enumerate(self.poly))
            except OverflowError:
                return math.nan
            if not math.isfinite(vwc):
                return math.nan
        else:
            frac = (self.dry - counts) / (self.dry - self.wet)
            vwc = self.dry_vwc + frac * (self.wet_vwc - self.dry_vwc)
        return round(min(max(vwc, 0.0), 100.0), 2)


@dataclass(frozen=True, slots=True)
class TankCalibration:
    """Ultrasonic distance (sensor to water surface, cm) to level and litres.

    ``depth_cm`` is the distance from the sensor to the tank floor; the level
    is what is left of it. ``litres_per_cm`` is the tank's cross-section in
    litres per centimetre of height (a 1000 l IBC: about 10 l/cm).
    """

    depth_cm: float | None = None
    litres_per_cm: float | None = None
    max_range_cm: float = 600.0


@dataclass(frozen=True, slots=True)
class Calibration:
    """One node's calibration, as carried in its retained config topic."""

    moisture: Mapping[str, MoistureCalibration] = field(default_factory=dict)
    tank: Mapping[str, TankCalibration] = field(default_factory=dict)
    offsets: Mapping[str, float] = field(default_factory=dict)  # added to st/at/rh

    def moisture_for(self, key: str) -> MoistureCalibration:
        return self.moisture.get(key, _DEFAULT_MOISTURE)

    def tank_for(self, key: str) -> TankCalibration:
        return self.tank.get(key, _DEFAULT_TANK)


_DEFAULT_MOISTURE = MoistureCalibration()
_DEFAULT_TANK = TankCalibration()
DEFAULT_CALIBRATION = Calibration()


@dataclass(frozen=True, slots=True)
class Calibrated:
    """A reading after calibration: raw values, calibrated fields per sensor, errors."""

    raw: dict[str, float]
    values: dict[str, dict[str, float]]
    errors: dict[str, str]


@functools.lru_cache(maxsize=256)
def _finite(value: float) -> bool:
    """math.isfinite, but False (not OverflowError) for an integer too big for a float."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def sensor_kind(key: str) -> str:
    match = _KEY_RE.fullmatch(key)
    return match.group(1) if match else key


def _check(kind: str, key: str, raw: float, cal: Calibration) -> str | None:
    """The reason a raw value cannot be trusted, or None."""
    if not math.isfinite(raw):
        return "not_finite"
    if kind == "st" and raw in DS18B20_SENTINELS:
        return "sentinel"
    if kind == "sm":
        adc_max = cal.moisture_for(key).adc_max
        if raw <= 0 or raw >= adc_max:
            return "sentinel"
    if kind == "tk":
        max_range = cal.tank_for(key).max_range_cm
        if raw <= 0 or raw >= max_range:
            return "sentinel"
    bounds = _RANGES.get(kind)
    if bounds is not None and not bounds[0] <= raw <= bounds[1]:
        return "out_of_range"
    return None


def calibrate(values: Mapping[str, Value], cal: Calibration = DEFAULT_CALIBRATION) -> Calibrated:
    """Calibrate one data frame's values.

    Soil temperature is applied to moisture probes with the same index
    (``st0`` corrects ``sm0``) when the probe has a temperature coefficient.
    """
    raw: dict[str, float] = {}
    errors: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, SensorError):
            errors[key] = value.code
            continue
        reason = _check(sensor_kind(key), key, value, cal)
        if reason is not None:
            errors[key] = reason
        raw[key] = value
    out: dict[str, dict[str, float]] = {}
    for key, value in raw.items():
        if key in errors:
            continue
        kind = sensor_kind(key)
        if kind == "sm":
            index = key[2:]
            soil_t = raw.get("st" + index)
            if ("st" + index) in errors:
                soil_t = None
            vwc = cal.moisture_for(key).vwc_pct(value, soil_t)
            if not _finite(vwc):  # a polynomial that overflows at these counts
                errors[key] = "bad_calibration"
                continue
            out[key] = {"vwc_pct": vwc}
        elif kind in ("st", "at"):
            out[key] = {"temp_c": round(value + cal.offsets.get(key, 0.0), 3)}
        elif kind == "rh":
            rh = min(max(value + cal.offsets.get(key, 0.0), 0.0), 100.0)
            out[key] = {"rh_pct": round(rh, 2)}
        elif kind == "lx":
            out[key] = {"lux": value}
        elif kind == "bt":
            out[key] = {"battery_v": round(value / 1000.0, 3)}
        elif kind == "tk":
            tank = cal.tank_for(key)
            fields = {"distance_cm": value}
            if tank.depth_cm is not None:
                level = max(tank.depth_cm - value, 0.0)
                fields["level_cm"] = round(level, 2)
                if tank.litres_per_cm is not None:
                    fields["litres"] = round(level * tank.litres_per_cm, 1)
            out[key] = fields
    return Calibrated(raw, out, errors)


# ------------------------------------------------------ config validation


def _number(obj: Mapping[str, Any], key: str, path: str, default: float | None) -> float | None:
    value = obj.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
        raise ConfigError(f"{path}.{key}", f"must be a number, got {value!r}"[:120])
    return float(value)


def parse_calibration(obj: Any, path: str = "calibration") -> Calibration:
    """Validate the ``calibration`` object of a node's config topic.

    ``{"sm0": {"dry": 530, "wet": 250}, "tk0": {"depth_cm": 120,
    "litres_per_cm": 10}, "st0": {"offset_c": -0.3}}``. Errors name the path.
    """
    if obj is None:
        return DEFAULT_CALIBRATION
    if not isinstance(obj, Mapping):
        raise ConfigError(path, "must be an object keyed by sensor (sm0, tk0, ...)")
    moisture: dict[str, MoistureCalibration] = {}
    tank: dict[str, TankCalibration] = {}
    offsets: dict[str, float] = {}
    for key, spec in obj.items():
        here = f"{path}.{key}"
        if not isinstance(spec, Mapping):
            raise ConfigError(here, "must be an object")
        kind = sensor_kind(str(key))
        allowed: set[str]
        if kind == "sm":
            allowed = {"dry", "wet", "dry_vwc", "wet_vwc", "poly", "temp_coeff", "adc_max"}
            poly = spec.get("poly", [])
            if (
                not isinstance(poly, list)
                or len(poly) > 6
                or not all(isinstance(c, int | float) and not isinstance(c, bool) and _finite(c) for c in poly)
            ):
                raise ConfigError(f"{here}.poly", "must be a list of numbers, lowest power first")
            cal = MoistureCalibration(
                dry=_number(spec, "dry", here, 520.0) or 0.0,
                wet=_number(spec, "wet", here, 260.0) or 0.0,
                dry_vwc=_number(spec, "dry_vwc", here, 5.0) or 0.0,
                wet_vwc=_number(spec, "wet_vwc", here, 45.0) or 0.0,
                poly=tuple(float(c) for c in poly),
                temp_coeff=_number(spec, "temp_coeff", here, 0.0) or 0.0,
                adc_max=int(_number(spec, "adc_max", here, 1023.0) or 0),
            )
            if not cal.poly and cal.dry == cal.wet:
                raise ConfigError(here, "dry and wet counts must differ")
            moisture[str(key)] = cal
        elif kind == "tk":
            allowed = {"depth_cm", "litres_per_cm", "max_range_cm"}
            tank[str(key)] = TankCalibration(
                depth_cm=_number(spec, "depth_cm", here, None),
                litres_per_cm=_number(spec, "litres_per_cm", here, None),
                max_range_cm=_number(spec, "max_range_cm", here, 600.0) or 600.0,
            )
        elif kind in ("st", "at", "rh"):
            allowed = {"offset_c"} if kind != "rh" else {"offset_pct"}
            name = next(iter(allowed))
            offsets[str(key)] = _number(spec, name, here, 0.0) or 0.0
        else:
            raise ConfigError(here, f"no calibration applies to sensor kind {kind!r}")
        unknown = set(spec) - allowed
        if unknown:
            raise ConfigError(f"{here}.{sorted(unknown)[0]}", f"unknown key; expected {sorted(allowed)}")
    return Calibration(moisture, tank, offsets)
