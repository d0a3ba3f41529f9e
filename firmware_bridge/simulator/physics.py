"""A bed, its weather and its water tank, advanced in simulated time. Pure code.

Not a crop model: just enough physics that the data looks like a garden's,
so that drydown fits, watering detection and dashboards have something
honest to chew on.

- Air temperature follows a sine with its minimum near sunrise (06:00) and
  its maximum mid-afternoon (15:00); soil at 10 cm follows it damped and
  about three hours late.
- Soil water dries down exponentially towards the wilting point, at a rate
  that scales with daylight (evapotranspiration is mostly a daytime flux).
- Above field capacity, water drains away with a time constant of hours.
- When the soil reaches the gardener's trigger, the bed is watered from the
  tank: a step up in water content, then drainage, and the tank falls.
- A capacitive probe's counts fall as water content rises, and drift with
  soil temperature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class BedParams:
    # Loam, from FAO-56 Table 19 (typical of the ranges given): field
    # capacity 0.22-0.36, wilting point 0.07-0.20 m3/m3.
    theta_fc: float = 30.0  # % VWC
    theta_wp: float = 12.0
    theta_sat: float = 45.0
    root_depth_mm: float = 300.0
    bed_area_m2: float = 2.0
    dry_rate_per_h: float = 0.012  # at full sun; nights are ~10% of it
    drainage_tau_h: float = 3.0
    water_at_vwc: float = 18.0  # the simulated gardener waters here
    watering_litres: float = 40.0
    # Probe: counts at dry_vwc and wet_vwc, and drift per °C (capacitive
    # v1.2 probes read lower counts when warm).
    probe_dry_counts: float = 520.0
    probe_wet_counts: float = 260.0
    probe_dry_vwc: float = 5.0
    probe_wet_vwc: float = 45.0
    probe_temp_coeff: float = -1.5
    # Weather
    air_mean_c: float = 16.0
    air_amplitude_c: float = 7.0
    soil_damping: float = 0.4
    soil_lag_h: float = 3.0
    peak_lux: float = 60_000.0
    # Tank: a 1000 l IBC is about 100 cm tall, 10 l per cm.
    tank_depth_cm: float = 120.0
    tank_litres_per_cm: float = 10.0
    tank_capacity_l: float = 1000.0


@dataclass(frozen=True, slots=True)
class BedState:
    t_s: float  # simulated seconds since the epoch (UTC)
    theta: float  # % VWC
    tank_l: float
    waterings: int = 0


def hour_of_day(t_s: float) -> float:
    return (t_s % 86_400) / 3600.0


def daylight(t_s: float) -> float:
    """0 at night, 1 at solar noon; sunrise 06:00, sunset 18:00."""
    h = hour_of_day(t_s)
    return max(0.0, math.sin(math.pi * (h - 6.0) / 12.0))


def air_temp_c(p: BedParams, t_s: float) -> float:
    h = hour_of_day(t_s)
    return p.air_mean_c + p.air_amplitude_c * math.sin(2 * math.pi * (h - 9.0) / 24.0)


def soil_temp_c(p: BedParams, t_s: float) -> float:
    lagged = air_temp_c(p, t_s - p.soil_lag_h * 3600.0)
    return p.air_mean_c + p.soil_damping * (lagged - p.air_mean_c)


def air_rh_pct(p: BedParams, t_s: float) -> float:
    # Relative humidity moves against temperature over the day.
    swing = (air_temp_c(p, t_s) - p.air_mean_c) / max(p.air_amplitude_c, 1e-9)
    return min(100.0, max(5.0, 70.0 - 20.0 * swing))


def lux(p: BedParams, t_s: float) -> float:
    return p.peak_lux * daylight(t_s)


def advance(p: BedParams, s: BedState, dt_s: float) -> BedState:
    """Move the bed forward by ``dt_s`` seconds (sub-stepped to stay stable)."""
    theta, tank, waterings = s.theta, s.tank_l, s.waterings
    t = s.t_s
    remaining = dt_s
    while remaining > 0:
        h = min(remaining, 600.0)
        rate = p.dry_rate_per_h * (0.1 + 0.9 * daylight(t)) / 3600.0
        theta -= rate * (theta - p.theta_wp * 0.8) * h
        if theta > p.theta_fc:
            excess = theta - p.theta_fc
            theta -= excess * (1.0 - math.exp(-h / (p.drainage_tau_h * 3600.0)))
        t += h
        remaining -= h
        if theta <= p.water_at_vwc and tank >= p.watering_litres:
            theta, tank = watered(p, theta, tank, p.watering_litres)
            waterings += 1
    return BedState(t, theta, tank, waterings)


def watered(p: BedParams, theta: float, tank_l: float, litres: float) -> tuple[float, float]:
    """The step a watering gives: litres over the bed's area, into the root zone."""
    depth_mm = litres / p.bed_area_m2  # 1 l over 1 m2 is 1 mm
    theta = min(p.theta_sat, theta + 100.0 * depth_mm / p.root_depth_mm)
    return theta, max(0.0, tank_l - litres)


def probe_counts(p: BedParams, theta: float, soil_c: float) -> float:
    frac = (theta - p.probe_dry_vwc) / (p.probe_wet_vwc - p.probe_dry_vwc)
    counts = p.probe_dry_counts - frac * (p.probe_dry_counts - p.probe_wet_counts)
    return counts + p.probe_temp_coeff * (soil_c - 20.0)


def tank_distance_cm(p: BedParams, tank_l: float) -> float:
    return p.tank_depth_cm - tank_l / p.tank_litres_per_cm


def start_state(p: BedParams, t_s: float) -> BedState:
    return replace(BedState(t_s, p.theta_fc - 2.0, p.tank_capacity_l * 0.8))
