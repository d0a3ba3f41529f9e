"""Bed profiles: parsing, error paths, round trips, and the values derived for a day."""

from __future__ import annotations

import math
from datetime import date
from typing import Any

import pytest

from firmware_bridge.errors import ConfigError
from garden.watering.bed_profile import (
    CROP_NAMES,
    SOIL_NAMES,
    BedProfile,
    Planting,
    parse_bed_profile,
    profile_to_json,
    water_params,
)

EXAMPLE: dict[str, Any] = {
    "soil": "loam",
    "crops": [{"crop": "lettuce", "planted": "2026-04-01"}],
    "overrides": {"p": 0.3},
    "area_m2": 2.0,
}


def test_parse_example() -> None:
    profile = parse_bed_profile("bed-3", EXAMPLE)
    assert profile == BedProfile("bed-3", "loam", (Planting("lettuce", date(2026, 4, 1)),), (("p", 0.3),), 2.0)
    assert profile.override("p") == 0.3
    assert profile.override("kc") is None
    hash(profile)  # frozen and hashable


def test_minimal_profile() -> None:
    assert parse_bed_profile("b", {"soil": "clay"}) == BedProfile("b", "clay")


@pytest.mark.parametrize(
    "obj",
    [
        EXAMPLE,
        {"soil": "clay"},
        {
            "soil": "silty_clay_loam",
            "crops": [
                {"crop": "tomato", "planted": "2026-05-10"},
                {"crop": "herbs", "planted": "2026-05-01"},
            ],
            "overrides": {"theta_fc": 35.0, "theta_wp": 18.0, "trigger_vwc": 28.0, "critical_vwc": 22.0},
        },
    ],
)
def test_round_trip(obj: dict[str, Any]) -> None:
    profile = parse_bed_profile("b", obj)
    as_json = profile_to_json(profile)
    assert parse_bed_profile("b", as_json) == profile
    assert profile_to_json(parse_bed_profile("b", as_json)) == as_json


def test_names_are_forgiving_and_normalised() -> None:
    profile = parse_bed_profile(
        "b",
        {
            "soil": "Sandy Loam",
            "crops": [{"crop": "Zucchini", "planted": "2026-05-01"}, {"crop": "pumpkin", "planted": "2026-05-01"}],
        },
    )
    assert profile.soil == "sandy_loam"
    assert [p.crop for p in profile.crops] == ["courgette", "squash"]


def test_toml_dates_are_accepted() -> None:
    profile = parse_bed_profile("b", {"soil": "loam", "crops": [{"crop": "onion", "planted": date(2026, 3, 20)}]})
    assert profile.crops[0].planted == date(2026, 3, 20)


def test_override_order_does_not_matter() -> None:
    a = parse_bed_profile("b", {"soil": "loam", "overrides": {"p": 0.3, "kc": 1.0}})
    b = parse_bed_profile("b", {"soil": "loam", "overrides": {"kc": 1.0, "p": 0.3}})
    assert a == b
    assert hash(a) == hash(b)


def _with(**changes: Any) -> dict[str, Any]:
    return {**EXAMPLE, **changes}


@pytest.mark.parametrize(
    ("bed", "obj", "path"),
    [
        ("no/slash", EXAMPLE, "bed"),
        ("", EXAMPLE, "bed"),
        ("b", ["loam"], "bed"),
        ("b", _with(colour="green"), "bed.colour"),
        ("b", {"crops": []}, "bed.soil"),
        ("b", _with(soil="lome"), "bed.soil"),
        ("b", _with(soil=3), "bed.soil"),
        ("b", _with(crops="lettuce"), "bed.crops"),
        ("b", _with(crops=["lettuce"]), "bed.crops[0]"),
        (
            "b",
            _with(crops=[{"crop": "lettuce", "planted": "2026-04-01"}, {"crop": "kale", "planted": "2026-04-01"}]),
            "bed.crops[1].crop",
        ),
        (
            "b",
            _with(crops=[{"crop": "lettuce", "planted": "2026-04-01"}, {"crop": "beans", "planted": "1 April"}]),
            "bed.crops[1].planted",
        ),
        ("b", _with(crops=[{"crop": "beans", "planted": "2026-02-30"}]), "bed.crops[0].planted"),
        ("b", _with(crops=[{"crop": "beans", "planted": 20260401}]), "bed.crops[0].planted"),
        ("b", _with(crops=[{"crop": "beans"}]), "bed.crops[0].planted"),
        ("b", _with(crops=[{"planted": "2026-04-01"}]), "bed.crops[0].crop"),
        ("b", _with(crops=[{"crop": "beans", "planted": "2026-04-01", "row": 2}]), "bed.crops[0].row"),
        ("b", _with(overrides=[0.3]), "bed.overrides"),
        ("b", _with(overrides={"depth": 300}), "bed.overrides.depth"),
        ("b", _with(overrides={"p": 1.2}), "bed.overrides.p"),
        ("b", _with(overrides={"p": 0.01}), "bed.overrides.p"),
        ("b", _with(overrides={"p": math.nan}), "bed.overrides.p"),
        ("b", _with(overrides={"p": True}), "bed.overrides.p"),
        ("b", _with(overrides={"p": "0.3"}), "bed.overrides.p"),
        ("b", _with(overrides={"kc": math.inf}), "bed.overrides.kc"),
        ("b", _with(overrides={"theta_fc": 120.0}), "bed.overrides.theta_fc"),
        ("b", _with(overrides={"theta_wp": -1.0}), "bed.overrides.theta_wp"),
        ("b", _with(overrides={"root_depth_mm": 5}), "bed.overrides.root_depth_mm"),
        ("b", _with(overrides={"root_depth_mm": 10**400}), "bed.overrides.root_depth_mm"),
        ("b", _with(overrides={"theta_wp": 30.0}), "bed.overrides.theta_wp"),  # above loam's θFC 25
        ("b", _with(overrides={"theta_fc": 10.0}), "bed.overrides.theta_fc"),  # below loam's θWP 12
        ("b", _with(overrides={"trigger_vwc": 26.0}), "bed.overrides.trigger_vwc"),
        ("b", _with(overrides={"trigger_vwc": 12.0}), "bed.overrides.trigger_vwc"),
        ("b", _with(overrides={"trigger_vwc": 20.0, "critical_vwc": 21.0}), "bed.overrides.critical_vwc"),
        ("b", _with(overrides={"critical_vwc": 5.0}), "bed.overrides.critical_vwc"),
        ("b", _with(area_m2=0), "bed.area_m2"),
        ("b", _with(area_m2=-2.0), "bed.area_m2"),
        ("b", _with(area_m2=math.nan), "bed.area_m2"),
        ("b", _with(area_m2="2 m2"), "bed.area_m2"),
    ],
)
def test_every_error_names_its_key_path(bed: str, obj: Any, path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_bed_profile(bed, obj)
    assert caught.value.path == path


def test_path_prefix_is_used() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_bed_profile("b", _with(soil="lome"), path="beds.b")
    assert caught.value.path == "beds.b.soil"


def test_unknown_names_list_the_choices_and_suggest_the_closest() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_bed_profile("b", _with(soil="lome"))
    assert "did you mean 'loam'?" in caught.value.problem
    assert all(name in caught.value.problem for name in SOIL_NAMES)
    with pytest.raises(ConfigError) as caught:
        parse_bed_profile("b", _with(crops=[{"crop": "tomatoe", "planted": "2026-04-01"}]))
    assert "did you mean 'tomato'?" in caught.value.problem
    assert all(name in caught.value.problem for name in CROP_NAMES)


# ------------------------------------------------------------ water_params

MAY_1 = date(2026, 5, 1)


def test_lettuce_on_loam() -> None:
    # Same numbers as test_fao56.test_lettuce_on_loam_by_hand; 2026-05-01 is day 30, development.
    params = water_params(parse_bed_profile("b", _with(overrides={})), MAY_1)
    assert (params.theta_fc, params.theta_wp, params.root_depth_mm, params.p) == (25.0, 12.0, 300.0, 0.30)
    assert params.taw_mm == pytest.approx(39.0)
    assert params.raw_mm == pytest.approx(11.7)
    assert params.trigger_vwc == pytest.approx(21.1)
    assert params.critical_vwc == pytest.approx(16.55)  # 21.1 - 0.5 (21.1 - 12)
    assert params.stage == "development"
    assert params.kc == pytest.approx(0.8)  # 0.7 + 10/30 × 0.3
    assert params.sources == {
        "theta_fc": "FAO-56 Table 19 (loam), mid-point of the range",
        "theta_wp": "FAO-56 Table 19 (loam), mid-point of the range",
        "root_depth_mm": "FAO-56 Table 22 (lettuce), lower end of the range",
        "p": "FAO-56 Table 22 (lettuce)",
        "kc": "FAO-56 Table 12, Eq. 66 (lettuce; development stage)",
        "stage": "FAO-56 Table 11 (lettuce, planted 2026-04-01)",
        "trigger_vwc": "θFC - p (θFC - θWP), FAO-56 Eqs. 82-83",
        "taw_mm": "FAO-56 Eq. 82",
        "raw_mm": "FAO-56 Eq. 83",
        "critical_vwc": "half way from the trigger to the wilting point",
    }


def test_p_is_adjusted_only_when_etc_is_given() -> None:
    profile = parse_bed_profile("b", _with(overrides={}))
    params = water_params(profile, MAY_1, etc_mm_day=3.1)
    assert params.p == pytest.approx(0.30 + 0.04 * (5 - 3.1))
    assert params.sources["p"] == "FAO-56 Table 22 (lettuce), adjusted for ETc 3.1 mm/day"
    assert params.trigger_vwc == pytest.approx(25 - params.p * 13)


def test_overrides_replace_derived_values() -> None:
    overrides = {"theta_fc": 30.0, "theta_wp": 10.0, "root_depth_mm": 200, "p": 0.5, "kc": 1.1}
    params = water_params(parse_bed_profile("b", _with(overrides=overrides)), MAY_1, etc_mm_day=8.0)
    assert (params.theta_fc, params.theta_wp, params.root_depth_mm, params.p, params.kc) == (30, 10, 200, 0.5, 1.1)
    assert params.taw_mm == pytest.approx(40.0)  # 20 / 100 × 200
    assert params.raw_mm == pytest.approx(20.0)
    assert params.trigger_vwc == pytest.approx(20.0)  # 30 - 0.5 × 20; p not adjusted for ETc
    for key in overrides:
        assert params.sources[key] == "override"


def test_trigger_and_critical_overrides() -> None:
    params = water_params(parse_bed_profile("b", _with(overrides={"trigger_vwc": 20.0, "critical_vwc": 15.0})), MAY_1)
    assert params.trigger_vwc == 20.0
    assert params.critical_vwc == 15.0
    assert params.raw_mm == pytest.approx(15.0)  # (25 - 20) / 100 × 300: the water above the trigger
    assert params.sources["trigger_vwc"] == params.sources["critical_vwc"] == "override"


def test_critical_override_above_the_day_trigger_is_capped() -> None:
    # 22 % is valid at parse time (below θFC 25), but lettuce's trigger is 21.1 %.
    params = water_params(parse_bed_profile("b", _with(overrides={"critical_vwc": 22.0})), MAY_1)
    assert params.critical_vwc == pytest.approx(params.trigger_vwc)
    assert params.sources["critical_vwc"] == "override, capped at the trigger"


def test_several_crops_smallest_p_largest_kc_shallowest_roots() -> None:
    profile = parse_bed_profile(
        "b",
        {
            "soil": "loam",
            "crops": [
                {"crop": "tomato", "planted": "2026-03-01"},  # day 61: development, p 0.40, Zr 0.7
                {"crop": "potato", "planted": "2026-04-01"},  # day 30: development, p 0.35, Zr 0.4
                {"crop": "herbs", "planted": "2026-04-20"},  # day 11: initial, p 0.20, Zr 0.3
            ],
        },
    )
    params = water_params(profile, MAY_1)
    assert params.p == 0.20  # herbs
    assert params.root_depth_mm == pytest.approx(300.0)  # herbs
    # Kc: tomato 0.6 + 31/40 × 0.55 = 1.02625; potato 0.5 + 0/35 × 0.65 = 0.5 ... tomato wins.
    assert params.kc == pytest.approx(0.6 + 31 / 40 * (1.15 - 0.6))
    assert params.stage == "development"
    assert params.sources["p"].startswith("FAO-56 Table 22 (herbs: proxy")
    assert "the most sensitive of tomato, potato, herbs" in params.sources["p"]
    assert "the shallowest of tomato, potato, herbs" in params.sources["root_depth_mm"]
    assert "(tomato, the largest of tomato, potato, herbs; development stage)" in params.sources["kc"]
    assert params.sources["stage"] == "FAO-56 Table 11 (tomato, planted 2026-03-01)"


def test_only_crops_in_season_count() -> None:
    profile = parse_bed_profile(
        "b",
        {
            "soil": "loam",
            "crops": [
                {"crop": "lettuce", "planted": "2025-04-01"},  # harvested last year
                {"crop": "carrot", "planted": "2026-04-01"},
                {"crop": "herbs", "planted": "2026-06-01"},  # not sown yet
            ],
        },
    )
    params = water_params(profile, MAY_1)
    assert params.p == 0.35  # carrot alone
    assert params.root_depth_mm == pytest.approx(500.0)


@pytest.mark.parametrize(
    ("crops", "stage"),
    [
        ([], "bare"),
        ([{"crop": "beans", "planted": "2026-06-01"}], "not_planted"),
        ([{"crop": "beans", "planted": "2025-06-01"}], "after_harvest"),
    ],
)
def test_bare_soil(crops: list[dict[str, str]], stage: str) -> None:
    params = water_params(parse_bed_profile("b", {"soil": "sand", "crops": crops}), MAY_1)
    assert params.stage == stage
    assert (params.p, params.kc, params.root_depth_mm) == (0.5, 0.3, 100.0)
    assert params.trigger_vwc == pytest.approx(12.0 - 0.5 * (12.0 - 4.5))
    assert params.sources["p"].startswith("bare soil")


def test_water_params_rejects_non_finite_etc() -> None:
    with pytest.raises(ValueError):
        water_params(parse_bed_profile("b", EXAMPLE), MAY_1, etc_mm_day=math.nan)
