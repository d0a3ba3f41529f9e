"""Three days of a small garden, written to InfluxDB the way the hub will write it.

Three simulated nodes (``firmware_bridge.simulator``) send protocol lines, with
faults; the bridge's own pure parts turn them into telemetry: ``FrameDecoder``
(rejects by reason), ``sequencing.advance`` (boots, lost readings),
``calibrate`` and ``telemetry_payload``. Each telemetry message then becomes
points through the hub's point builder, ``garden.points.telemetry_lines``.
Node and port status, and a few gardeners' events, are written with
``garden.points.line`` in the shape docs/schema.md gives them.

The hub's watch is repeated over the same readings (:func:`_watch`): every
``EVALUATE_EVERY_S`` each bed gets a ``water_need`` point, and each change of
an alert an ``alert`` point, built by the hub's ingest from the message the
watch publishes (``garden.ingest.need_points``, ``alert_points``). The
watering science itself (garden/watering) is not repeated: the seed's need is
a plain model with the same outputs (trigger and critical lines, a linear
drydown forecast, states with hysteresis), so the dashboards' tests do not
change whenever the forecast is refined.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import statistics
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from firmware_bridge.calibration import calibrate, parse_calibration
from firmware_bridge.line_protocol import DataFrame, FrameDecoder, HelloFrame, Reject
from firmware_bridge.messages import telemetry_payload
from firmware_bridge.sequencing import NodeSeq, Step, advance
from firmware_bridge.simulator.node import Faults, SimNode
from firmware_bridge.simulator.physics import BedParams
from garden.ingest import alert_points, need_points
from garden.points import line, telemetry_lines

GARDEN = "demo"
# A second garden on the same regional hub: the same bed, node and port names, other weather.
OTHER_GARDEN = "north"
OTHER_SEED = 11
BRIDGE = "shed-pi"
DAYS = 3
INTERVAL_S = 300
STATUS_EVERY_S = 900
DAY_MS = 86_400_000

# The bridge's calibration for every node: the tank is a 1000 l IBC, 120 cm from
# the ranger to the floor, 10 l per cm; the moisture probe drifts -1.5 counts/°C.
CALIBRATION = parse_calibration({"tk0": {"depth_cm": 120, "litres_per_cm": 10}, "sm0": {"temp_coeff": -1.5}})


@dataclass(frozen=True, slots=True)
class NodeSpec:
    node: str
    bed: str
    params: BedParams
    faults: Faults
    assigned_after_s: int = 0  # the bed tag appears once a volunteer's config names the bed
    detected_waterings: bool = False  # nobody logs the waterings; the hub detects them


# A hot week. bed-1's gardener waters at 18 %, bed-2's at 16 %; bed-3's is away
# (the simulated gardener would only water at 11 %), so bed-3 goes thirsty.
NODES: tuple[NodeSpec, ...] = (
    NodeSpec(
        "bed-1a",
        "bed-1",
        BedParams(dry_rate_per_h=0.05),
        Faults(partial=0.01, bad_crc=0.01, noise=0.01),
    ),
    NodeSpec(
        "bed-2a",
        "bed-2",
        BedParams(dry_rate_per_h=0.06, water_at_vwc=16.0),
        Faults(bad_crc=0.02, sentinel=0.01, reboot_every=400),
        detected_waterings=True,
    ),
    NodeSpec(
        "bed-3a",
        "bed-3",
        BedParams(dry_rate_per_h=0.05, water_at_vwc=11.0),
        Faults(failed=0.01, partial=0.005),
        assigned_after_s=2 * 3600,
    ),
)


@dataclass(frozen=True, slots=True)
class BedWater:
    """A bed's watering numbers, as the hub derives them from its profile (FAO-56)."""

    crop: str
    trigger_vwc: float
    critical_vwc: float
    fc_vwc: float = 25.0  # loam
    wp_vwc: float = 12.0
    p: float = 0.5
    kc: float = 0.8
    root_depth_mm: float = 300.0


# bed-4 has a profile but no node yet: its need stays "unknown".
BED_WATER: dict[str, BedWater] = {
    "bed-1": BedWater("courgette", 18.1, 15.0, p=0.53, kc=0.85),
    "bed-2": BedWater("beans", 18.5, 15.2, p=0.5, kc=0.74),
    "bed-3": BedWater("tomato", 19.4, 15.7, p=0.43, kc=0.85),
    "bed-4": BedWater("lettuce", 20.4, 16.2, p=0.35, kc=0.73, root_depth_mm=200.0),
}
NEED_LEVELS = {"unknown": -1, "ok": 0, "soon": 1, "needs_water": 2, "critical": 3}
EVALUATE_EVERY_S = 300  # the hub evaluates every 60 s; the readings come every 300 s
ET0_MM = 5.0  # a hot week's reference evapotranspiration, mm per day
SOON_H = 24.0  # "soon": the forecast reaches the trigger within a day
HYSTERESIS_VWC = 2.0  # a state is left 2 % above its line (or by a watering)
DRYDOWN_H = 6.0  # the forecast fits a line to the last hours since the last watering
# The watch sees a watering once the smoothed moisture (the median of the last
# three readings) has risen: two readings after it.
SEEN_AFTER_READINGS = 2
REPEAT_EVERY_MS = 6 * 3_600_000  # an open, unacknowledged alert is repeated
MAX_REPEATS = 3
ACK_AFTER_MS = 3_600_000  # someone acknowledges bed-3's alert this long after it was escalated

# (day, hour, bed, text, who, kg): harvests a gardener logs by hand.
HARVESTS = (
    (1, 17, "bed-1", "Courgettes, first of the year", "Ana", 2.1),
    (2, 10, "bed-2", "Lettuce for the Saturday lunch", "Sam", 0.8),
)


@dataclass(slots=True)
class NodeFacts:
    garden: str
    node: str
    bed: str
    port: str
    readings: int = 0  # telemetry messages written
    rejects: Counter[str] = field(default_factory=Counter)
    last_seen_ms: int = 0
    vwc: list[tuple[int, float]] = field(default_factory=list)
    litres: list[tuple[int, float]] = field(default_factory=list)
    battery_v: list[float] = field(default_factory=list)
    statuses: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # node_status points
    port_statuses: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # bridge_port points


@dataclass(frozen=True, slots=True)
class SeededAlert:
    """One ``alert`` point: an alert's change, as the watch published it."""

    ts: int
    kind: str
    subject: str
    state: str  # the transition: raised, repeated, escalated, resolved, acked, muted
    bed: str | None
    severity: str
    text: str
    who: str | None = None


@dataclass(slots=True)
class Facts:
    start_ms: int
    end_ms: int
    garden: str = GARDEN
    nodes: dict[str, NodeFacts] = field(default_factory=dict)
    events: list[tuple[int, str | None, str]] = field(default_factory=list)  # (ms, bed, type)
    needs: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)  # bed: water_need fields
    alerts: list[SeededAlert] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def event(self, ts: int, bed: str | None, kind: str, fields: Mapping[str, float | int | bool | str],
              node: str | None = None) -> None:  # fmt: skip
        self.lines.append(line("event", {"garden": self.garden, "bed": bed, "node": node, "type": kind}, fields, ts))
        self.events.append((ts, bed, kind))

    def need(self, bed: str, ts: int, state: str, numbers: Mapping[str, float | None]) -> None:
        """What the watch publishes on ``bed/<bed>/need``, through the hub's ingest."""
        body = {"ts": ts, "bed": bed, "state": state, **{k: v for k, v in numbers.items() if v is not None}}
        self.lines.extend(need_points(self.garden, bed, json.dumps(body).encode(), self.end_ms).lines)
        fields: dict[str, Any] = {"state": state, "level": NEED_LEVELS[state]}
        fields.update({k: float(v) for k, v in numbers.items() if v is not None})
        self.needs.setdefault(bed, []).append((ts, fields))

    def alert(self, alert: SeededAlert) -> None:
        """What the watch publishes on ``alert/<kind>/<subject>``, through the hub's ingest."""
        body: dict[str, Any] = {"ts": alert.ts, "transition": alert.state, "severity": alert.severity,
                                "text": alert.text, "bed": alert.bed}  # fmt: skip
        if alert.who:
            body["by"] = alert.who
        self.lines.extend(
            alert_points(self.garden, alert.kind, alert.subject, json.dumps(body).encode(), self.end_ms).lines
        )
        self.alerts.append(alert)

    @property
    def beds(self) -> list[str]:
        return sorted(f.bed for f in self.nodes.values())


def _telemetry_message(
    node: str, boot: int, seq: int, ts_ms: int, values: dict[str, Any], bed: str | None
) -> dict[str, Any]:
    """The telemetry message exactly as the hub receives it from MQTT."""
    payload = telemetry_payload(
        node=node,
        boot=boot,
        seq=seq,
        ts_ms=ts_ms,
        reading=calibrate(values, CALIBRATION),
        bridge=BRIDGE,
        bed=bed,
    )
    message: dict[str, Any] = json.loads(payload)
    return message


def _simulate_node(spec: NodeSpec, start_s: int, end_s: int, facts: Facts, seed: int) -> None:
    """One node on one port, through the bridge's parser and sequencing, for the whole range."""
    port = f"/dev/serial/by-id/usb-garden-sim-{spec.node}"
    nf = facts.nodes[spec.node] = NodeFacts(facts.garden, spec.node, spec.bed, port)
    sim = SimNode(spec.node, seed=seed, interval_s=INTERVAL_S, faults=spec.faults, params=spec.params,
                  start_t_s=float(start_s))  # fmt: skip
    jitter = random.Random(f"latency:{facts.garden}:{spec.node}")
    decoder = FrameDecoder()
    seq_state: NodeSeq | None = None
    last_ts = 0
    frames = 0
    battery_v: float | None = None
    next_status = start_s + STATUS_EVERY_S
    waterings = 0
    out = facts.lines

    emissions = [sim.boot()]
    while True:
        now_s = sim.bed.t_s
        received_ms = int(now_s * 1000) + jitter.randrange(20, 400)
        bed = spec.bed if now_s - start_s >= spec.assigned_after_s else None
        for emission in emissions:
            for item in decoder.feed(emission.data):
                if isinstance(item, Reject):
                    nf.rejects[item.reason.value] += 1
                    continue
                frames += 1
                if not isinstance(item, DataFrame | HelloFrame):
                    continue
                nf.last_seen_ms = received_ms
                sequenced = advance(seq_state, item.seq, hello=isinstance(item, HelloFrame))
                seq_state = sequenced.state
                if isinstance(item, HelloFrame) or sequenced.step is Step.DUPLICATE:
                    continue
                ts = last_ts = max(received_ms, last_ts + 1)
                message = _telemetry_message(spec.node, seq_state.boot, item.seq, ts, dict(item.values), bed)
                out.extend(telemetry_lines(facts.garden, message))
                nf.readings += 1
                values = message["values"]
                if "sm0" in values and bed is not None:
                    nf.vwc.append((ts, values["sm0"]["vwc_pct"]))
                if "tk0" in values:
                    nf.litres.append((ts, values["tk0"]["litres"]))
                if "bt0" in values:
                    battery_v = values["bt0"]["battery_v"]
                    nf.battery_v.append(battery_v)
        if sim.bed.waterings > waterings:
            waterings = sim.bed.waterings
            litres = spec.params.watering_litres
            mm = round(litres / spec.params.bed_area_m2, 1)  # 1 l on 1 m² is 1 mm
            if spec.detected_waterings:  # nobody logs it: the hub's watch sees the rise
                text = f"Watering detected in {spec.bed}: about {mm:.0f} mm"
                fields: dict[str, float | str] = {"text": text, "mm": mm}
                facts.event(int(now_s * 1000) - 60_000, spec.bed, "watering", fields, node=spec.node)
            else:  # the simulated gardener logs it
                fields = {"text": f"Watered {spec.bed}", "who": "rota", "litres": litres, "mm": mm}
                facts.event(int(now_s * 1000) - 60_000, spec.bed, "watering", fields)
        if now_s >= next_status or now_s >= end_s:
            status_ms = int(now_s * 1000) + 500
            state = seq_state or NodeSeq()
            node_fields: dict[str, float | int | bool | str] = {
                "online": True,
                "interval_s": INTERVAL_S,
                "last_seen": nf.last_seen_ms,
                "boot": state.boot,
                "seq": state.last_seq,
                "lost": state.lost,
                "reboots": state.reboots,
                "readings": nf.readings,
            }
            if battery_v is not None:
                node_fields["battery_v"] = battery_v
            out.append(line("node_status", {"garden": facts.garden, "node": spec.node, "bed": bed},
                            node_fields, status_ms))  # fmt: skip
            nf.statuses.append((status_ms, node_fields))
            port_fields: dict[str, float | int | bool | str] = {
                "open": True,
                "frames": frames,
                "opens": 1,
                "rejected": sum(nf.rejects.values()),
            }
            port_fields.update({f"rejects_{r}": n for r, n in sorted(nf.rejects.items())})
            out.append(line("bridge_port", {"garden": facts.garden, "bridge": BRIDGE, "port": port},
                            port_fields, status_ms))  # fmt: skip
            nf.port_statuses.append((status_ms, port_fields))
            next_status += STATUS_EVERY_S
        if now_s >= end_s:
            break
        emissions = sim.tick()


def _since(points: list[tuple[int, float]], low: int, high: int) -> list[tuple[int, float]]:
    """The points (sorted by time) from ``low`` to ``high``."""
    return points[bisect.bisect_left(points, (low,)) : bisect.bisect_right(points, (high, math.inf))]


def _slope_per_h(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of the points, % VWC per hour."""
    if len(points) < 6:
        return None
    t = [ts / 3_600_000 for ts, _ in points]
    v = [value for _, value in points]
    mt, mv = sum(t) / len(t), sum(v) / len(v)
    var = sum((x - mt) ** 2 for x in t)
    return sum((x - mt) * (y - mv) for x, y in zip(t, v, strict=True)) / var if var else None


def _next_state(previous: str, vwc: float, w: BedWater, hours_left: float | None) -> str:
    """The need after ``previous``: entered at its line, left only ``HYSTERESIS_VWC`` above it."""
    band = HYSTERESIS_VWC
    if vwc <= w.critical_vwc or (previous == "critical" and vwc <= w.critical_vwc + band):
        return "critical"
    if vwc <= w.trigger_vwc or (previous in ("critical", "needs_water") and vwc <= w.trigger_vwc + band):
        return "needs_water"
    if hours_left is not None and hours_left <= SOON_H:
        return "soon"
    return "ok"


@dataclass(slots=True)
class _OpenAlert:
    notified_ms: int
    severity: str
    repeats: int = 0
    escalated_ms: int | None = None
    acked: bool = False


def _watch(facts: Facts) -> None:
    """The hub's watch over the seeded readings: each bed's need and its water alert.

    The alert is raised on "needs water", escalated on "critical", repeated
    every six hours until someone acknowledges it (bed-3's neighbour Kim does,
    an hour after it was escalated), and resolved by a watering or by the soil
    rising back above the trigger.
    """
    previous = dict.fromkeys(BED_WATER, "unknown")
    open_alerts: dict[str, _OpenAlert] = {}
    waterings = sorted((ts, bed) for ts, bed, kind in facts.events if kind == "watering")
    members = {bed: [nf for nf in facts.nodes.values() if nf.bed == bed] for bed in BED_WATER}
    seen: set[int] = set()
    for now in range(facts.start_ms + EVALUATE_EVERY_S * 1000, facts.end_ms + 1, EVALUATE_EVERY_S * 1000):
        for bed, w in BED_WATER.items():
            title = f"{bed.replace('-', ' ').capitalize()} {w.crop}"
            # A watering the readings show: hysteresis starts again and the alert closes.
            watered = [ts for ts, b in waterings if b == bed and ts <= now]
            if watered and watered[-1] not in seen:
                after = [ts for nf in members[bed] for ts, _ in _since(nf.vwc, watered[-1], now)]
                if len(after) >= SEEN_AFTER_READINGS:
                    seen.add(watered[-1])
                    previous[bed] = "ok"
                    if bed in open_alerts:
                        severity = open_alerts.pop(bed).severity
                        facts.alert(SeededAlert(now, "water", bed, "resolved", bed, severity, f"{title}: watered."))
            lines = {"trigger_vwc": w.trigger_vwc, "critical_vwc": w.critical_vwc, "fc_vwc": w.fc_vwc,
                     "wp_vwc": w.wp_vwc, "kc": w.kc, "p": w.p, "et0_mm": ET0_MM}  # fmt: skip
            driest: tuple[float, list[tuple[int, float]]] | None = None
            for nf in members[bed]:
                recent = _since(nf.vwc, now - int(DRYDOWN_H * 3_600_000), now)
                if recent:
                    level = statistics.median(v for _, v in recent[-3:])
                    if driest is None or level < driest[0]:
                        driest = (level, recent)
            if driest is None:  # no readings: the need is unknown
                previous[bed] = "unknown"
                facts.need(bed, now, "unknown", lines)
                continue
            vwc, recent = driest
            drydown = [(ts, v) for ts, v in recent if not watered or ts > watered[-1]]
            slope = _slope_per_h(drydown)
            hours: tuple[float, float, float] | None = None
            if vwc <= w.trigger_vwc:
                hours = (0.0, 0.0, 0.0)
            elif slope is not None and slope < -0.01:
                left = (vwc - w.trigger_vwc) / -slope
                hours = (round(left, 1), round(left * 0.7, 1), round(left * 1.5, 1))
            etc_mm = ET0_MM * w.kc
            balance = max(0.0, (vwc - w.trigger_vwc) / 100 * w.root_depth_mm / etc_mm * 24)
            state = previous[bed] = _next_state(previous[bed], vwc, w, hours[0] if hours else None)
            numbers = {**lines, "vwc_pct": round(vwc, 2), "balance_hours": round(balance, 1)}
            if hours is not None:
                numbers.update(hours_left=hours[0], hours_low=hours[1], hours_high=hours[2])
            facts.need(bed, now, state, numbers)
            _water_alert(facts, open_alerts, bed, now, state, f"{title}: {vwc:.0f}% VWC, trigger {w.trigger_vwc:.0f}%.")
    _node_alerts(facts)


def _water_alert(facts: Facts, open_alerts: dict[str, _OpenAlert], bed: str, now: int, state: str,
                 text: str) -> None:  # fmt: skip
    opened = open_alerts.get(bed)
    severity = "critical" if state == "critical" else "warning"
    if state not in ("needs_water", "critical"):
        if opened is not None:
            del open_alerts[bed]
            facts.alert(SeededAlert(now, "water", bed, "resolved", bed, opened.severity, f"{text} Back above it."))
        return
    text += " Water now." if state == "critical" else " Water today."
    if opened is None:
        open_alerts[bed] = _OpenAlert(now, severity)
        facts.alert(SeededAlert(now, "water", bed, "raised", bed, severity, text))
    elif severity == "critical" and opened.severity != "critical":
        opened.severity, opened.escalated_ms, opened.notified_ms = severity, now, now
        facts.alert(SeededAlert(now, "water", bed, "escalated", bed, severity, text))
    elif opened.escalated_ms is not None and not opened.acked and now - opened.escalated_ms >= ACK_AFTER_MS:
        opened.acked = True
        facts.alert(SeededAlert(now, "water", bed, "acked", bed, severity, text, who="Kim"))
    elif not opened.acked and opened.repeats < MAX_REPEATS and now - opened.notified_ms >= REPEAT_EVERY_MS:
        opened.repeats += 1
        opened.notified_ms = now
        facts.alert(SeededAlert(now, "water", bed, "repeated", bed, severity, text))


def _node_alerts(facts: Facts) -> None:
    """Alerts about nodes: with a ``bed`` tag when the node is assigned to a bed, without otherwise."""
    start = facts.start_ms
    # bed-3a lost readings before anyone assigned it to a bed: no bed.
    text = "Node bed-3a: lost 4 readings in the last hour"
    facts.alert(SeededAlert(start + 1_800_000, "gaps", "bed-3a", "raised", None, "warning", text))
    facts.alert(SeededAlert(start + 6_000_000, "gaps", "bed-3a", "resolved", None, "warning", text))
    # bed-2a restarts (its faults reboot it every 400 readings): it is bed-2's node.
    bed2a = facts.nodes["bed-2a"]
    reboots = 0
    for ts, status in bed2a.statuses:
        if status["reboots"] > reboots:
            reboots = status["reboots"]
            text = f"Node bed-2a ({bed2a.bed}): restarted (restart {reboots} since the bridge started)"
            facts.alert(SeededAlert(ts, "node", "bed-2a", "raised", bed2a.bed, "warning", text))
            facts.alert(SeededAlert(ts + 3_600_000, "node", "bed-2a", "resolved", bed2a.bed, "warning", text))
    # The tank runs low on the last day; Ana mutes the alert (rain is forecast). A tank has no bed.
    low = start + (DAYS - 1) * DAY_MS + 8 * 3_600_000
    text = "Tank at bed-1a: about 9 days of water left"
    facts.alert(SeededAlert(low, "tank", "bed-1a", "raised", None, "warning", text))
    facts.alert(SeededAlert(low + 1_800_000, "tank", "bed-1a", "muted", None, "warning", text, who="Ana"))


def simulate(end_ms: int, garden: str = GARDEN, seed: int = 7) -> Facts:
    """``DAYS`` whole UTC days of ``garden`` ending at ``end_ms`` (a midnight), as line protocol.

    Another garden (``OTHER_GARDEN``, ``OTHER_SEED``) has the same beds, nodes, ports and
    scenario, and other readings: its simulated sensors draw other noise and faults.
    """
    end_s = end_ms // 1000
    start_s = end_s - DAYS * 86_400
    facts = Facts(start_s * 1000, end_ms, garden)
    for spec in NODES:
        _simulate_node(spec, start_s, end_s, facts, seed)
    for day, hour, bed, text, who, kg in HARVESTS:
        ts = facts.start_ms + day * DAY_MS + hour * 3_600_000
        facts.event(ts, bed, "harvest", {"text": text, "who": who, "kg": kg})
    late = NODES[2]  # its bed is claimed when the node is assigned to it
    fields = {"text": "Claimed by the school garden club", "who": "Jo"}
    facts.event(facts.start_ms + late.assigned_after_s * 1000, late.bed, "claim", fields)
    # A garden-wide event has no bed: it must not show on any one bed's dashboard.
    fields = {"text": "Bridge moved to the new shed", "who": "Kim"}
    facts.event(facts.start_ms + DAY_MS + 9 * 3_600_000, None, "config", fields)
    _watch(facts)
    return facts
