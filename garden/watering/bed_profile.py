"""A bed's profile (soil, crops, overrides) and the watering numbers derived from it.

Pure code. ``parse_bed_profile`` validates a bed's object from the config and
names the path of any bad key; ``water_params`` turns a profile into the
numbers for one day, each with its source.

The numbers come from FAO-56 (see :mod:`garden.watering.fao56`):

- θFC and θWP from the soil (Table 19, mid-points of the ranges);
- root depth, p and the Kc curve from the crops growing on the day (Tables
  11, 12 and 22). The root depth is the LOWER end of Table 22's range: garden
  beds are shallow (often 20-40 cm of topsoil over subsoil or a raised-bed
  floor) and the probes sit near the surface;
- p is adjusted for the day's ETc (note to Table 22) only when ETc is given.

Several crops in one bed: the bed gets the smallest p (the most sensitive
crop sets the trigger), the largest Kc on the day (the thirstiest crop sets
the water use), and the shallowest root depth (water has to reach the
shallowest roots). Only crops in their season count: from the planting day
until the end of their Table 11 season. A crop past its season counts as
harvested; replant by editing the profile.

A bed with no crop in season is bare soil: p = 0.5, Kc = 0.3 and a 100 mm
layer (``fao56.BARE_SOIL_*``, where the choice is explained).

Overrides replace a derived value and are used as given (an overridden p is
not adjusted for ETc). Keys: ``theta_fc``, ``theta_wp``, ``root_depth_mm``,
``p``, ``kc``, ``trigger_vwc``, ``critical_vwc``. The critical level
defaults to half way from the trigger to the wilting point.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from types import MappingProxyType
from typing import Any

from firmware_bridge.errors import ConfigError
from firmware_bridge.topics import check_name
from garden.watering import fao56

SOIL_NAMES: tuple[str, ...] = tuple(fao56.SOILS)
CROP_NAMES: tuple[str, ...] = tuple(fao56.CROPS)

# Other names people write for the crops in fao56.CROPS.
_CROP_ALIASES = {
    "zucchini": "courgette",
    "summer_squash": "courgette",
    "pumpkin": "squash",
    "winter_squash": "squash",
    "green_beans": "beans",
    "bean": "beans",
    "tomatoes": "tomato",
    "potatoes": "potato",
    "onions": "onion",
    "carrots": "carrot",
    "herb": "herbs",
}

OVERRIDE_KEYS = ("theta_fc", "theta_wp", "root_depth_mm", "p", "kc", "trigger_vwc", "critical_vwc")

# Allowed range of each override, inclusive.
_OVERRIDE_RANGES: dict[str, tuple[float, float]] = {
    "theta_fc": (0.0, 100.0),
    "theta_wp": (0.0, 100.0),
    "root_depth_mm": (10.0, 3000.0),
    "p": (0.05, 0.95),
    "kc": (0.05, 2.0),  # FAO-56 Table 12 spans about 0.15-1.3; 2 leaves room, not nonsense
    "trigger_vwc": (0.0, 100.0),
    "critical_vwc": (0.0, 100.0),
}

_BED_KEYS = ("soil", "crops", "overrides", "area_m2")
_PLANTING_KEYS = ("crop", "planted")
_ISO_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True, slots=True)
class Planting:
    crop: str
    planted: date


@dataclass(frozen=True, slots=True)
class BedProfile:
    """What a bed is: its soil, its crops and any per-bed overrides.

    ``overrides`` is a tuple of ``(key, value)`` pairs, sorted by key, so the
    profile stays frozen and hashable; :meth:`override` reads one. Build a
    profile with :func:`parse_bed_profile`, which validates; the constructor
    trusts its arguments.
    """

    bed: str
    soil: str
    crops: tuple[Planting, ...] = ()
    overrides: tuple[tuple[str, float], ...] = ()
    area_m2: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "overrides", tuple(sorted(self.overrides)))

    def override(self, key: str) -> float | None:
        for name, value in self.overrides:
            if name == key:
                return value
        return None


@dataclass(frozen=True, slots=True)
class WaterParams:
    """A bed's watering numbers for one day. θ in % VWC, depths and water in mm.

    ``stage`` is the growth stage of the crop that sets Kc, or ``"bare"``,
    ``"not_planted"`` or ``"after_harvest"`` when no crop is in season.
    ``sources`` says where each value came from.
    """

    theta_fc: float
    theta_wp: float
    root_depth_mm: float
    p: float
    kc: float
    stage: str
    trigger_vwc: float
    critical_vwc: float
    taw_mm: float
    raw_mm: float
    sources: Mapping[str, str]


# ------------------------------------------------------------- validation


def _finite(value: float) -> bool:
    """math.isfinite, but False (not OverflowError) for an integer too big for a float."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
        raise ConfigError(path, f"must be a finite number, got {value!r}"[:120])
    return float(value)


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _reject_unknown(obj: Mapping[Any, Any], allowed: tuple[str, ...], path: str) -> None:
    for key in obj:
        if key not in allowed:
            hint = _suggest(str(key), list(allowed))
            raise ConfigError(f"{path}.{key}", f"unknown key{hint}; expected one of: {', '.join(allowed)}")


def _normal_name(value: str) -> str:
    return value.strip().lower().replace(" ", "_").replace("-", "_")


def _choice(value: Any, names: tuple[str, ...], aliases: Mapping[str, str], what: str, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, f"must be a {what} name, one of: {', '.join(names)}")
    name = _normal_name(value)
    name = aliases.get(name, name)
    if name not in names:
        close = difflib.get_close_matches(name, [*names, *aliases], n=1)
        hint = f" (did you mean {aliases.get(close[0], close[0])!r}?)" if close else ""
        raise ConfigError(path, f"unknown {what} {value!r}{hint}; choices: {', '.join(names)}")
    return name


def _date(value: Any, path: str) -> date:
    # A TOML config gives a date; JSON gives an ISO string.
    if isinstance(value, datetime):
        raise ConfigError(path, f"must be a date (YYYY-MM-DD), not a date and time: {value.isoformat()}")
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _ISO_DATE_RE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError as exc:
            raise ConfigError(path, f"not a real date: {value!r} ({exc})") from None
    raise ConfigError(path, f"must be a date as YYYY-MM-DD, got {value!r}"[:120])


def _plantings(obj: Any, path: str) -> tuple[Planting, ...]:
    if not isinstance(obj, list | tuple):
        raise ConfigError(path, 'must be a list of {"crop": ..., "planted": "YYYY-MM-DD"}')
    out: list[Planting] = []
    for i, item in enumerate(obj):
        here = f"{path}[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(here, 'must be an object {"crop": ..., "planted": "YYYY-MM-DD"}')
        _reject_unknown(item, _PLANTING_KEYS, here)
        for key in _PLANTING_KEYS:
            if key not in item:
                raise ConfigError(f"{here}.{key}", "is required")
        crop = _choice(item["crop"], CROP_NAMES, _CROP_ALIASES, "crop", f"{here}.crop")
        out.append(Planting(crop, _date(item["planted"], f"{here}.planted")))
    return tuple(out)


def _overrides(obj: Any, path: str, soil: fao56.Soil) -> tuple[tuple[str, float], ...]:
    if not isinstance(obj, Mapping):
        raise ConfigError(path, f"must be an object with any of: {', '.join(OVERRIDE_KEYS)}")
    _reject_unknown(obj, OVERRIDE_KEYS, path)
    values: dict[str, float] = {}
    for key, raw in obj.items():
        here = f"{path}.{key}"
        value = _number(raw, here)
        low, high = _OVERRIDE_RANGES[key]
        if not low <= value <= high:
            raise ConfigError(here, f"must be within {low:g}..{high:g}, got {value:g}")
        values[key] = value
    fc = values.get("theta_fc", soil.theta_fc)
    wp = values.get("theta_wp", soil.theta_wp)
    if not wp < fc:
        key = "theta_wp" if "theta_wp" in values else "theta_fc"
        raise ConfigError(f"{path}.{key}", f"the wilting point ({wp:g}) must be below field capacity ({fc:g})")
    trigger = values.get("trigger_vwc")
    if trigger is not None and not wp < trigger < fc:
        raise ConfigError(
            f"{path}.trigger_vwc", f"must lie between the wilting point ({wp:g}) and field capacity ({fc:g})"
        )
    critical = values.get("critical_vwc")
    if critical is not None:
        upper, upper_name = (trigger, "the trigger") if trigger is not None else (fc, "field capacity")
        if not wp <= critical < upper:
            raise ConfigError(
                f"{path}.critical_vwc", f"must lie between the wilting point ({wp:g}) and {upper_name} ({upper:g})"
            )
    return tuple(sorted(values.items()))


def parse_bed_profile(bed: str, obj: Any, path: str = "bed") -> BedProfile:
    """Validate one bed's object and build its profile.

    ``{"soil": "loam", "crops": [{"crop": "lettuce", "planted": "2026-04-01"}],
    "overrides": {"p": 0.3}, "area_m2": 2.0}``. Only ``soil`` is required. Soil
    and crop names ignore case, and spaces or hyphens stand for underscores.
    Every error is a ConfigError naming the bad key's path, such as
    ``bed.crops[1].planted``.
    """
    try:
        check_name("bed", bed)
    except ValueError as exc:
        raise ConfigError(path, str(exc)) from None
    if not isinstance(obj, Mapping):
        raise ConfigError(path, f"must be an object with {', '.join(_BED_KEYS)}")
    _reject_unknown(obj, _BED_KEYS, path)
    if "soil" not in obj:
        raise ConfigError(f"{path}.soil", f"is required, one of: {', '.join(SOIL_NAMES)}")
    soil = _choice(obj["soil"], SOIL_NAMES, {}, "soil", f"{path}.soil")
    crops = _plantings(obj.get("crops", []), f"{path}.crops")
    overrides = _overrides(obj.get("overrides", {}), f"{path}.overrides", fao56.SOILS[soil])
    area: float | None = None
    if obj.get("area_m2") is not None:
        area = _number(obj["area_m2"], f"{path}.area_m2")
        if area <= 0:
            raise ConfigError(f"{path}.area_m2", f"must be above 0, got {area:g}")
    return BedProfile(bed, soil, crops, overrides, area)


def profile_to_json(profile: BedProfile) -> dict[str, Any]:
    """The profile as the object :func:`parse_bed_profile` reads (the bed's name is its key, outside)."""
    out: dict[str, Any] = {
        "soil": profile.soil,
        "crops": [{"crop": p.crop, "planted": p.planted.isoformat()} for p in profile.crops],
    }
    if profile.overrides:
        out["overrides"] = dict(profile.overrides)
    if profile.area_m2 is not None:
        out["area_m2"] = profile.area_m2
    return out


# ---------------------------------------------------------- derived values


def _crop_label(crop: fao56.Crop) -> str:
    return f"{crop.name}: {crop.fao_rows}" if crop.fao_rows else crop.name


def water_params(profile: BedProfile, day: date, etc_mm_day: float | None = None) -> WaterParams:
    """The bed's watering numbers on ``day``; ``etc_mm_day`` adjusts p (FAO-56 note to Table 22).

    See the module docstring for the rules: FAO-56 values, the multi-crop
    rule, bare soil and overrides.
    """
    if etc_mm_day is not None and not _finite(etc_mm_day):
        raise ValueError(f"etc_mm_day must be a finite number, got {etc_mm_day!r}")
    soil = fao56.SOILS[profile.soil]
    sources: dict[str, str] = {}
    etc_note = f", adjusted for ETc {etc_mm_day:.1f} mm/day" if etc_mm_day is not None else ""

    def adjust(p: float) -> float:
        return fao56.p_adjusted(p, etc_mm_day) if etc_mm_day is not None else p

    growing = [
        (fao56.CROPS[planting.crop], planting)
        for planting in profile.crops
        if fao56.growth_stage(fao56.CROPS[planting.crop], planting.planted, day) in fao56.STAGES
    ]
    if growing:
        several = len(growing) > 1
        names = ", ".join(crop.name for crop, _ in growing)

        def chosen(crop: fao56.Crop, rule: str) -> str:
            return f"{_crop_label(crop)}, the {rule} of {names}" if several else _crop_label(crop)

        p_crop = min((crop for crop, _ in growing), key=lambda crop: crop.p)
        p = adjust(p_crop.p)
        p_source = f"FAO-56 Table 22 ({chosen(p_crop, 'most sensitive')}){etc_note}"
        zr_crop = min((crop for crop, _ in growing), key=lambda crop: crop.root_depth_m[0])
        root_depth = zr_crop.root_depth_m[0] * 1000.0
        zr_source = f"FAO-56 Table 22 ({chosen(zr_crop, 'shallowest')}), lower end of the range"
        kc_crop, kc_planting = max(growing, key=lambda cp: fao56.kc_on(cp[0], cp[1].planted, day))
        kc = fao56.kc_on(kc_crop, kc_planting.planted, day)
        stage = fao56.growth_stage(kc_crop, kc_planting.planted, day)
        kc_source = f"FAO-56 Table 12, Eq. 66 ({chosen(kc_crop, 'largest')}; {stage} stage)"
        stage_source = f"FAO-56 Table 11 ({kc_crop.name}, planted {kc_planting.planted.isoformat()})"
    else:
        p = adjust(fao56.BARE_SOIL_P)
        p_source = f"bare soil, FAO-56 Chapter 8 (the commonly used p){etc_note}"
        root_depth = fao56.BARE_SOIL_DEPTH_M * 1000.0
        zr_source = "bare soil, FAO-56 Chapter 7 evaporation layer Ze"
        kc = fao56.BARE_SOIL_KC
        kc_source = "bare soil, FAO-56 Chapter 6 (soil evaporation)"
        stages = {fao56.growth_stage(fao56.CROPS[pl.crop], pl.planted, day) for pl in profile.crops}
        stage = "not_planted" if "not_planted" in stages else "after_harvest" if stages else "bare"
        stage_source = "no crop in season"

    soil_source = f"FAO-56 Table 19 ({soil.name}), mid-point of the range"
    theta_fc = _pick(profile, "theta_fc", soil.theta_fc, soil_source, sources)
    theta_wp = _pick(profile, "theta_wp", soil.theta_wp, soil_source, sources)
    root_depth = _pick(profile, "root_depth_mm", root_depth, zr_source, sources)
    p = _pick(profile, "p", p, p_source, sources)
    kc = _pick(profile, "kc", kc, kc_source, sources)
    sources["stage"] = stage_source

    taw = fao56.taw_mm(theta_fc, theta_wp, root_depth)
    sources["taw_mm"] = "FAO-56 Eq. 82"
    trigger = profile.override("trigger_vwc")
    if trigger is None:
        trigger = fao56.trigger_vwc(theta_fc, theta_wp, p)
        sources["trigger_vwc"] = "θFC - p (θFC - θWP), FAO-56 Eqs. 82-83"
        raw = fao56.raw_mm(p, taw)
        sources["raw_mm"] = "FAO-56 Eq. 83"
    else:
        sources["trigger_vwc"] = "override"
        # RAW is the water between field capacity and the trigger, whatever set it.
        raw = (theta_fc - trigger) / 100.0 * root_depth
        sources["raw_mm"] = "water between θFC and the trigger override"

    critical = profile.override("critical_vwc")
    if critical is None:
        critical = trigger - 0.5 * (trigger - theta_wp)
        sources["critical_vwc"] = "half way from the trigger to the wilting point"
    elif critical > trigger:
        critical = trigger
        sources["critical_vwc"] = "override, capped at the trigger"
    else:
        sources["critical_vwc"] = "override"

    return WaterParams(
        theta_fc=theta_fc,
        theta_wp=theta_wp,
        root_depth_mm=root_depth,
        p=p,
        kc=kc,
        stage=stage,
        trigger_vwc=trigger,
        critical_vwc=critical,
        taw_mm=taw,
        raw_mm=raw,
        sources=MappingProxyType(sources),
    )


def _pick(profile: BedProfile, key: str, derived: float, source: str, sources: dict[str, str]) -> float:
    value = profile.override(key)
    if value is None:
        sources[key] = source
        return derived
    sources[key] = "override"
    return value
