"""Looking after bed profiles through the broker, like node configs (node_admin.py).

A bed's profile (soil, crops and their planting dates, overrides) is the
retained message on ``Topics.bed_config(bed)``. ``garden beds set`` reads
it, changes what was asked, validates the result with the same parser the
hub uses (garden/watering/bed_profile.py), publishes it retained and waits
for the PUBACK, then records a ``config`` event saying who changed what.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from firmware_bridge.errors import ConfigError
from firmware_bridge.messages import compact_json
from firmware_bridge.mqtt_link import BrokerAddress, read_retained
from firmware_bridge.topics import Topics
from garden.node_admin import publish_confirmed
from garden.watering.bed_profile import BedProfile, parse_bed_profile, profile_to_json


@dataclass(frozen=True, slots=True)
class BedInfo:
    bed: str
    profile: BedProfile | None = None
    problem: str | None = None  # why the retained profile does not validate
    need: Mapping[str, Any] | None = None
    nodes: tuple[str, ...] = ()
    claim: Mapping[str, Any] | None = None  # who will water it (the commons' retained claim)


def read_beds(broker: BrokerAddress, topics: Topics, *, wait_s: float = 1.5) -> dict[str, BedInfo]:
    """Every bed with a retained profile, need, or a node assigned to it."""
    retained = read_retained(
        broker,
        (topics.all_bed_configs, topics.all_bed_needs, topics.all_node_configs, topics.commons("claim", "+")),
        wait_s=wait_s,
    )
    profiles: dict[str, tuple[BedProfile | None, str | None]] = {}
    needs: dict[str, Mapping[str, Any]] = {}
    nodes: dict[str, list[str]] = {}
    claims: dict[str, Mapping[str, Any]] = {}
    for topic, payload in retained.items():
        where = topics.kind_and_name(topic)
        if where is None or not payload:
            continue
        kind, name, leaf = where
        try:
            body = json.loads(payload)
        except ValueError:
            body = None
        if kind == "bed" and leaf == "config":
            try:
                profiles[name] = (parse_bed_profile(name, body, f"bed {name}"), None)
            except ConfigError as err:
                profiles[name] = (None, str(err))
        elif kind == "bed" and leaf == "need" and isinstance(body, dict):
            needs[name] = body
        elif kind == "node" and leaf == "config" and isinstance(body, dict) and isinstance(body.get("bed"), str):
            nodes.setdefault(body["bed"], []).append(name)
        elif kind == "commons" and name == "claim" and isinstance(body, dict):
            claims[leaf] = body
    out = {}
    for bed in sorted(set(profiles) | set(needs) | set(nodes)):
        profile, problem = profiles.get(bed, (None, None))
        out[bed] = BedInfo(bed, profile, problem, needs.get(bed), tuple(sorted(nodes.get(bed, []))), claims.get(bed))
    return out


def edited_profile(
    bed: str,
    current: BedProfile | None,
    *,
    soil: str | None = None,
    crops: Sequence[tuple[str, str]] | None = None,
    overrides: Mapping[str, float | None] | None = None,
    area_m2: float | None = None,
) -> tuple[BedProfile, dict[str, Any]]:
    """The profile after the edit, validated, and the change as {key: {from, to}}. Pure."""
    before = profile_to_json(current) if current is not None else {}
    after = dict(before)
    if soil is not None:
        after["soil"] = soil
    if crops is not None:
        after["crops"] = [{"crop": c, "planted": d} for c, d in crops]
    if overrides:
        merged = dict(after.get("overrides") or {})
        for key, value in overrides.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        after["overrides"] = merged
    if area_m2 is not None:
        after["area_m2"] = area_m2
    if "soil" not in after:
        raise ConfigError(f"bed {bed}.soil", "a new bed needs --soil")
    profile = parse_bed_profile(bed, after, f"bed {bed}")
    after = profile_to_json(profile)
    change = {k: {"from": before.get(k), "to": after.get(k)} for k in sorted(set(before) | set(after))
              if before.get(k) != after.get(k)}  # fmt: skip
    return profile, change


def publish_profile(
    broker: BrokerAddress, topics: Topics, profile: BedProfile, change: Mapping[str, Any], *, who: str, now_ms: int
) -> dict[str, Any]:
    """Publish the profile retained, then a ``config`` event naming who changed what. Returns the event."""
    payload = compact_json(profile_to_json(profile))
    parse_bed_profile(profile.bed, json.loads(payload), f"bed {profile.bed}")  # what the hub will read
    summary = ", ".join(f"{k}={v['to']}" for k, v in change.items()) or "no change"
    event = {"ts": now_ms, "type": "config", "bed": profile.bed, "who": who, "change": dict(change),
             "text": f"bed {profile.bed} profile: {summary}"[:500]}  # fmt: skip
    publish_confirmed(broker, [(topics.bed_config(profile.bed), payload, True)])
    publish_confirmed(broker, [(topics.event("config"), compact_json(event), False)])
    return event
