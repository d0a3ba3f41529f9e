"""Tables and equations from FAO Irrigation and Drainage Paper 56.

Allen, R. G., Pereira, L. S., Raes, D. and Smith, M. (1998). *Crop
evapotranspiration: guidelines for computing crop water requirements.* FAO
Irrigation and Drainage Paper 56, Rome. Every constant and equation below
names its table or equation number in that paper ("FAO-56").

Units: soil water contents θ are in percent volumetric water content
(m³/m³ × 100), the unit the moisture probes report. Depths are in mm, water
in mm, ET in mm/day, radiation in MJ m⁻² day⁻¹, temperatures in °C.

Pure code: no I/O, no clock. Dates come in as arguments.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType

from garden.watering import solar

# ------------------------------------------------------------------- soils


@dataclass(frozen=True, slots=True)
class Soil:
    """A soil texture class: water content at field capacity and at the wilting point, in % VWC."""

    name: str
    theta_fc: float
    theta_wp: float


# FAO-56 Table 19, "Typical soil water characteristics for different soil
# types", in % VWC: (θFC low, θFC high, θWP low, θWP high). The table gives
# ranges; a soil without a lab analysis gets the mid-point of each range.
_TABLE_19: dict[str, tuple[float, float, float, float]] = {
    "sand": (7, 17, 2, 7),
    "loamy_sand": (11, 19, 3, 10),
    "sandy_loam": (18, 28, 6, 16),
    "loam": (20, 30, 7, 17),
    "silt_loam": (22, 36, 9, 21),
    "silt": (28, 36, 12, 22),
    "silty_clay_loam": (30, 37, 17, 24),
    "silty_clay": (30, 42, 17, 29),
    "clay": (32, 40, 20, 24),
}

SOILS: Mapping[str, Soil] = MappingProxyType(
    {
        name: Soil(name, (fc_lo + fc_hi) / 2, (wp_lo + wp_hi) / 2)  # mid-points of Table 19's ranges
        for name, (fc_lo, fc_hi, wp_lo, wp_hi) in _TABLE_19.items()
    }
)

# ------------------------------------------------------------------- crops


@dataclass(frozen=True, slots=True)
class Crop:
    """One crop's FAO-56 numbers.

    ``stage_days`` are the lengths of the initial, development, mid-season and
    late-season stages (Table 11). ``kc_*`` are the single crop coefficients
    (Table 12). ``root_depth_m`` is Table 22's range of the maximum effective
    root depth, (min, max); ``p`` is Table 22's depletion fraction for no
    stress at ETc ≈ 5 mm/day. ``fao_rows`` names the FAO-56 rows the numbers
    come from when they are not simply the crop's own name.
    """

    name: str
    kc_ini: float
    kc_mid: float
    kc_end: float
    stage_days: tuple[int, int, int, int]
    root_depth_m: tuple[float, float]
    p: float
    fao_rows: str = ""

    @property
    def season_days(self) -> int:
        return sum(self.stage_days)


# Kc: FAO-56 Table 12 (Kc_ini, Kc_mid, Kc_end).
# Stage lengths: FAO-56 Table 11, one row per crop; the planting month and
#   region of the row are in the comment. Spring rows from the Mediterranean
#   or Europe were preferred, as closest to a temperate community garden.
# Zr and p: FAO-56 Table 22.
CROPS: Mapping[str, Crop] = MappingProxyType(
    {
        "tomato": Crop(
            "tomato",
            0.6,  # Table 12 "Tomato" Kc_ini
            1.15,  # Table 12 "Tomato" Kc_mid
            0.80,  # Table 12 "Tomato" Kc_end is given as 0.70-0.90; mid-point
            (30, 40, 45, 30),  # Table 11 "Tomato", Apr/May, Mediterranean (145 days)
            (0.7, 1.5),  # Table 22 "Tomato" Zr
            0.40,  # Table 22 "Tomato" p
        ),
        "lettuce": Crop(
            "lettuce",
            0.7,  # Table 12 "Lettuce" Kc_ini
            1.00,  # Table 12 "Lettuce" Kc_mid
            0.95,  # Table 12 "Lettuce" Kc_end
            (20, 30, 15, 10),  # Table 11 "Lettuce", April, Mediterranean (75 days)
            (0.3, 0.5),  # Table 22 "Lettuce" Zr
            0.30,  # Table 22 "Lettuce" p
        ),
        "beans": Crop(
            "beans",
            0.5,  # Table 12 "Beans, green" Kc_ini
            1.05,  # Table 12 "Beans, green" Kc_mid
            0.90,  # Table 12 "Beans, green" Kc_end
            (20, 30, 30, 10),  # Table 11 "Beans, green", Feb/Mar, Calif., Mediterranean (90 days)
            (0.5, 0.7),  # Table 22 "Beans, green" Zr
            0.45,  # Table 22 "Beans, green" p
            fao_rows="Beans, green",
        ),
        "courgette": Crop(
            "courgette",
            0.5,  # Table 12 "Squash, Zucchini" Kc_ini
            0.95,  # Table 12 "Squash, Zucchini" Kc_mid
            0.75,  # Table 12 "Squash, Zucchini" Kc_end
            (20, 30, 25, 15),  # Table 11 "Squash, Zucchini", May/June, Mediterranean, Europe (90 days)
            (0.6, 1.0),  # Table 22 "Squash, Zucchini" Zr
            0.50,  # Table 22 "Squash, Zucchini" p
            fao_rows="Squash, Zucchini",
        ),
        "squash": Crop(
            "squash",
            0.5,  # Table 12 "Pumpkin, Winter Squash" Kc_ini
            1.00,  # Table 12 "Pumpkin, Winter Squash" Kc_mid
            0.80,  # Table 12 "Pumpkin, Winter Squash" Kc_end
            (25, 35, 35, 25),  # Table 11 "Pumpkin, Winter squash", June, Europe (120 days)
            (1.0, 1.5),  # Table 22 "Pumpkin, Winter Squash" Zr
            0.35,  # Table 22 "Pumpkin, Winter Squash" p
            fao_rows="Pumpkin, Winter Squash",
        ),
        "potato": Crop(
            "potato",
            0.5,  # Table 12 "Potato" Kc_ini
            1.15,  # Table 12 "Potato" Kc_mid
            0.75,  # Table 12 "Potato" Kc_end
            (30, 35, 50, 30),  # Table 11 "Potato", April, Europe (145 days)
            (0.4, 0.6),  # Table 22 "Potato" Zr
            0.35,  # Table 22 "Potato" p
        ),
        "onion": Crop(
            "onion",
            0.7,  # Table 12 "Onions, dry" Kc_ini
            1.05,  # Table 12 "Onions, dry" Kc_mid
            0.75,  # Table 12 "Onions, dry" Kc_end
            (15, 25, 70, 40),  # Table 11 "Onion (dry)", April, Mediterranean (150 days)
            (0.3, 0.6),  # Table 22 "Onions, dry" Zr
            0.30,  # Table 22 "Onions, dry" p
            fao_rows="Onions, dry",
        ),
        "carrot": Crop(
            "carrot",
            0.7,  # Table 12 "Carrots" Kc_ini
            1.05,  # Table 12 "Carrots" Kc_mid
            0.95,  # Table 12 "Carrots" Kc_end
            (30, 40, 60, 20),  # Table 11 "Carrots", Feb/Mar, Mediterranean (150 days)
            (0.5, 1.0),  # Table 22 "Carrots" Zr
            0.35,  # Table 22 "Carrots" p
            fao_rows="Carrots",
        ),
        # FAO-56 has no row for culinary herbs. The proxy: Kc from the Table 12
        # group row "Small Vegetables"; stage lengths, Zr and p from spinach,
        # the shallow-rooted leafy crop closest to parsley, coriander or basil.
        # Spinach's p = 0.20 is among the most sensitive in Table 22, so herbs
        # are watered early rather than late. ("Mint" has its own Table 12 row,
        # but as a perennial with a high Kc it does not stand for annual herbs.)
        "herbs": Crop(
            "herbs",
            0.7,  # Table 12 "Small Vegetables" Kc_ini
            1.05,  # Table 12 "Small Vegetables" Kc_mid
            0.95,  # Table 12 "Small Vegetables" Kc_end
            (20, 30, 40, 10),  # Table 11 "Spinach", November, Arid Region (100 days: herbs are cut for months)
            (0.3, 0.5),  # Table 22 "Spinach" Zr
            0.20,  # Table 22 "Spinach" p
            fao_rows="proxy: Small Vegetables (Kc), Spinach (stages, Zr, p)",
        ),
    }
)

# A bed with no crop growing is bare soil. FAO-56 gives no p for bare soil;
# Chapter 8 (text above Table 22) notes that p = 0.50 "is commonly used for
# many crops", and that is the value used. The water that matters to bare soil
# is in the evaporation layer, Ze = 0.10-0.15 m (FAO-56 Chapter 7, Eq. 73);
# the lower end is taken, like the crops' root depths. Kc for bare soil is
# evaporation only (FAO-56 Chapter 6, Kc_ini and Fig. 29): about 0.3 for a
# surface wetted every week or so at ETo 3-5 mm/day, which is how a fallow
# garden bed is treated.
BARE_SOIL_P = 0.50  # FAO-56 Chapter 8, the commonly used p
BARE_SOIL_DEPTH_M = 0.10  # FAO-56 Chapter 7, Ze (lower end of 0.10-0.15 m)
BARE_SOIL_KC = 0.30  # FAO-56 Chapter 6, Fig. 29, infrequent light wetting

STAGES = ("initial", "development", "mid", "late")

# ---------------------------------------------------------- crop calendar


def growth_stage(crop: Crop, planted: date, day: date) -> str:
    """The crop's FAO-56 growth stage on ``day`` (Table 11's stage lengths).

    The planting day is day 0 of the initial stage. Returns ``"not_planted"``
    before planting and ``"after_harvest"`` once the season is over.
    """
    elapsed = (day - planted).days
    if elapsed < 0:
        return "not_planted"
    end = 0
    for stage, length in zip(STAGES, crop.stage_days, strict=True):
        end += length
        if elapsed < end:
            return stage
    return "after_harvest"


def kc_on(crop: Crop, planted: date, day: date) -> float:
    """The crop coefficient on ``day``: the Kc curve of FAO-56 Fig. 25, Eq. 66.

    Kc_ini through the initial stage, a straight line up to Kc_mid through
    development, Kc_mid through mid-season, a straight line down to Kc_end
    through the late season. Before planting and after the season the bed is
    bare or freshly sown, and Kc_ini, which FAO-56 (Chapter 6) defines as
    mostly soil evaporation, is used.
    """
    elapsed = (day - planted).days
    l_ini, l_dev, l_mid, l_late = crop.stage_days
    if elapsed < 0 or elapsed >= crop.season_days:
        return crop.kc_ini
    if elapsed < l_ini:
        return crop.kc_ini
    if elapsed < l_ini + l_dev:
        # Eq. 66: Kc_i = Kc_prev + [(i - ΣL_prev) / L_stage] (Kc_next - Kc_prev)
        return crop.kc_ini + (elapsed - l_ini) / l_dev * (crop.kc_mid - crop.kc_ini)
    if elapsed < l_ini + l_dev + l_mid:
        return crop.kc_mid
    # Eq. 66 again, from Kc_mid down to Kc_end over the late season.
    return crop.kc_mid + (elapsed - l_ini - l_dev - l_mid) / l_late * (crop.kc_end - crop.kc_mid)


# ------------------------------------------------------- soil water budget


def _require_finite(**values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")


P_MIN = 0.1  # FAO-56 Chapter 8, note to Table 22: 0.1 ≤ p ≤ 0.8
P_MAX = 0.8


def p_adjusted(p_table: float, etc_mm_day: float) -> float:
    """Table 22's p adjusted for the day's ETc.

    FAO-56 Chapter 8, note to Table 22: the table's p holds for ETc ≈ 5 mm/day;
    p = p_table + 0.04 (5 - ETc), limited to 0.1 ≤ p ≤ 0.8.
    """
    _require_finite(p_table=p_table, etc_mm_day=etc_mm_day)
    p = p_table + 0.04 * (5.0 - etc_mm_day)
    return min(max(p, P_MIN), P_MAX)


def taw_mm(theta_fc: float, theta_wp: float, root_depth_mm: float) -> float:
    """Total available water in the root zone, mm: FAO-56 Eq. 82.

    Eq. 82 is TAW = 1000 (θFC - θWP) Zr with θ in m³/m³ and Zr in m. With θ in
    percent and Zr in mm that is (θFC - θWP) / 100 × Zr.
    """
    _require_finite(theta_fc=theta_fc, theta_wp=theta_wp, root_depth_mm=root_depth_mm)
    return (theta_fc - theta_wp) / 100.0 * root_depth_mm


def raw_mm(p: float, taw: float) -> float:
    """Readily available water, mm: FAO-56 Eq. 83, RAW = p TAW."""
    _require_finite(p=p, taw=taw)
    return p * taw


def trigger_vwc(theta_fc: float, theta_wp: float, p: float) -> float:
    """The water content, % VWC, at which the root zone has lost its readily available water.

    Depletion reaches RAW (Eq. 83) when θ = θFC - RAW / Zr; with Eq. 82 that is
    θFC - p (θFC - θWP), whatever the root depth.
    """
    _require_finite(theta_fc=theta_fc, theta_wp=theta_wp, p=p)
    return theta_fc - p * (theta_fc - theta_wp)


def water_balance_hours(theta_now: float, trigger: float, root_depth_mm: float, etc_mm_day: float) -> float | None:
    """Hours until θ falls from ``theta_now`` to ``trigger`` if the root zone loses ETc mm/day.

    The root zone holds θ / 100 × Zr mm of water, so the water above the
    trigger lasts (θnow - θtrig) / 100 × Zr / ETc days. This is the plain
    water balance (FAO-56 Eq. 85 without rain, irrigation or drainage), the
    cross-check for the drydown fit. None when ETc ≤ 0 (the soil does not dry);
    0.0 when θ is already at or below the trigger.
    """
    _require_finite(theta_now=theta_now, trigger=trigger, root_depth_mm=root_depth_mm, etc_mm_day=etc_mm_day)
    if etc_mm_day <= 0:
        return None
    water_mm = (theta_now - trigger) / 100.0 * root_depth_mm
    if water_mm <= 0:
        return 0.0
    return water_mm / etc_mm_day * 24.0


# --------------------------------------------------------- radiation and ET0

SOLAR_CONSTANT = 0.0820  # Gsc, MJ m-2 min-1: FAO-56 Eq. 21
MJ_TO_MM = 0.408  # MJ m-2 day-1 to mm/day of evaporation: FAO-56 Eq. 20 (1 / λ, λ = 2.45 MJ kg-1)


def extraterrestrial_radiation(latitude_deg: float, day_of_year: int) -> float:
    """Ra, the radiation at the top of the atmosphere, MJ m⁻² day⁻¹: FAO-56 Eqs. 21-25.

    ``latitude_deg`` is positive north, negative south. Beyond the polar circles
    the sunset hour angle of Eq. 25 is undefined in polar night and polar day;
    clipping the arccos argument to [-1, 1] gives ωs = 0 (no sunrise, Ra = 0)
    and ωs = π (no sunset).
    """
    _require_finite(latitude_deg=latitude_deg)
    if not -90.0 <= latitude_deg <= 90.0:
        raise ValueError(f"latitude must be within -90..90 degrees, got {latitude_deg!r}")
    if not 1 <= day_of_year <= 366:
        raise ValueError(f"day of year must be 1..366, got {day_of_year!r}")
    phi = math.radians(latitude_deg)  # Eq. 22
    year_angle = 2.0 * math.pi * day_of_year / 365.0
    dr = 1.0 + 0.033 * math.cos(year_angle)  # Eq. 23: inverse relative Earth-Sun distance
    delta = solar.solar_declination(day_of_year)  # Eq. 24
    omega_s = solar.sunset_hour_angle(latitude_deg, day_of_year)  # Eq. 25, clipped
    ra = (
        (24.0 * 60.0 / math.pi)
        * SOLAR_CONSTANT
        * dr
        * (omega_s * math.sin(phi) * math.sin(delta) + math.cos(phi) * math.cos(delta) * math.sin(omega_s))
    )  # Eq. 21
    return max(ra, 0.0)  # rounding can leave -1e-16 in polar night


def hargreaves_et0(tmin_c: float, tmax_c: float, ra_mj: float) -> float:
    """Reference evapotranspiration from air temperature alone, mm/day: FAO-56 Eq. 52.

    ET0 = 0.0023 (Tmean + 17.8) (Tmax - Tmin)^0.5 Ra, with Tmean = (Tmax + Tmin) / 2
    (Eq. 9) and Ra as evaporation equivalent in mm/day (× 0.408, Eq. 20).
    Raises ValueError for non-finite input, Tmax < Tmin or Ra < 0. A result
    below zero (Tmean under -17.8 °C) is returned as 0.
    """
    _require_finite(tmin_c=tmin_c, tmax_c=tmax_c, ra_mj=ra_mj)
    if tmax_c < tmin_c:
        raise ValueError(f"tmax ({tmax_c}) is below tmin ({tmin_c})")
    if ra_mj < 0:
        raise ValueError(f"extraterrestrial radiation cannot be negative, got {ra_mj}")
    tmean = (tmax_c + tmin_c) / 2.0  # Eq. 9
    et0 = 0.0023 * (tmean + 17.8) * math.sqrt(tmax_c - tmin_c) * MJ_TO_MM * ra_mj  # Eq. 52
    return max(et0, 0.0)
