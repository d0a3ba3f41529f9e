"""``[commons]`` and ``[commons.rota]`` in garden.toml: the garden's own rules for its shared work.

Documented in docs/commons.md and docs/configuration.md. Validated whole at
start-up; an error names the key's path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_bridge.errors import ConfigError
from firmware_bridge.settings import find_config_file, read_toml, table_of, typed_value
from firmware_bridge.topics import NAME_RE
from garden.commons.rota import WEEKDAYS, Rota
from garden.commons.shares import RULES

_KEYS = {
    "claim_expires_h", "confirm_within_h", "share_expires_h", "share_rule", "allocate_after_h",
    "contribution_days", "league_table", "rota",
}  # fmt: skip
HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class CommonsSettings:
    claim_expires_ms: int = 3 * HOUR_MS  # a watering claim with no watering seen lapses
    confirm_within_ms: int = 3 * HOUR_MS  # a logged watering with no moisture rise is flagged
    share_expires_ms: int = 48 * HOUR_MS  # a share with no pickup window closes after this
    share_rule: str = "first_come"
    allocate_after_ms: int = 2 * HOUR_MS  # by_contribution: claims gathered this long first
    contribution_days: int = 90  # by_contribution: contributions counted over this many days
    league_table: bool = False  # totals per person in `garden commons totals` and Grafana
    rota: Rota = field(default_factory=lambda: Rota({}))


def _hours(table: Mapping[str, Any], key: str, default_h: float) -> int:
    value = typed_value(table, "commons", key, float, default_h)
    if not math.isfinite(value) or not 0 < value <= 24 * 365:
        raise ConfigError(f"commons.{key}", "must be more than 0 and at most a year, in hours")
    return int(value * HOUR_MS)


def parse_commons(data: Mapping[str, Any]) -> CommonsSettings:
    table = table_of(data, "commons")
    for key in set(table) - _KEYS:
        raise ConfigError(f"commons.{key}", f"unknown key; expected one of {sorted(_KEYS)}")
    rule = typed_value(table, "commons", "share_rule", str, "first_come")
    if rule not in RULES:
        raise ConfigError("commons.share_rule", f"must be one of {list(RULES)}, got {rule!r}")
    days = typed_value(table, "commons", "contribution_days", int, 90)
    if not 1 <= days <= 3650:
        raise ConfigError("commons.contribution_days", "must be 1 to 3650 days")
    rota_t = table.get("rota", {})
    if not isinstance(rota_t, Mapping):
        raise ConfigError("commons.rota", 'must be a table: [commons.rota] with monday = ["ana"], ...')
    weekly: dict[str, tuple[str, ...]] = {}
    for day, names in rota_t.items():
        if day not in WEEKDAYS:
            raise ConfigError(f"commons.rota.{day}", f"not a weekday; expected one of {list(WEEKDAYS)}")
        if not isinstance(names, list) or not all(isinstance(n, str) and NAME_RE.fullmatch(n) for n in names):
            raise ConfigError(f"commons.rota.{day}", 'must be a list of member names, e.g. ["ana", "ben"]')
        weekly[day] = tuple(dict.fromkeys(names))
    return CommonsSettings(
        claim_expires_ms=_hours(table, "claim_expires_h", 3.0),
        confirm_within_ms=_hours(table, "confirm_within_h", 3.0),
        share_expires_ms=_hours(table, "share_expires_h", 48.0),
        share_rule=rule,
        allocate_after_ms=_hours(table, "allocate_after_h", 2.0),
        contribution_days=days,
        league_table=typed_value(table, "commons", "league_table", bool, False),
        rota=Rota(weekly),
    )


def load_commons_settings(config_file: Path | None = None) -> CommonsSettings:
    path = find_config_file(config_file)
    return parse_commons(read_toml(path) if path is not None else {})
