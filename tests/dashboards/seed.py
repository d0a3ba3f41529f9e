"""Three days of a small garden, written to InfluxDB the way the hub will write it.

Three simulated nodes (``firmware_bridge.simulator``) send protocol lines, with
faults; the bridge's own pure parts turn them into telemetry: ``FrameDecoder``
(rejects by reason), ``sequencing.advance`` (boots, lost readings),
``calibrate`` and ``telemetry_payload``. Each telemetry message then becomes
points through the hub's point builder, ``garden.points.telemetry_lines``.
Node and port status, and a few gardeners' events, are written with
``garden.points.line`` in the shape docs/schema.md gives them.

Alongside the line protocol, :class:`Facts` keeps what was sent, so a test can
check a dashboard's answer against the data rather than against itself.
"""

from __future__ import annotations

import json
import random
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
from garden.points import line, telemetry_lines

GARDEN = "demo"
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
    ),
    NodeSpec(
        "bed-3a",
        "bed-3",
        BedParams(dry_rate_per_h=0.05, water_at_vwc=11.0),
        Faults(failed=0.01, partial=0.005),
        assigned_after_s=2 * 3600,
    ),
)

# (day, hour, bed, text, who, kg): harvests a gardener logs by hand.
HARVESTS = (
    (1, 17, "bed-1", "Courgettes, first of the year", "Ana", 2.1),
    (2, 10, "bed-2", "Lettuce for the Saturday lunch", "Sam", 0.8),
)


@dataclass(slots=True)
class NodeFacts:
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


@dataclass(slots=True)
class Facts:
    start_ms: int
    end_ms: int
    nodes: dict[str, NodeFacts] = field(default_factory=dict)
    events: list[tuple[int, str | None, str]] = field(default_factory=list)  # (ms, bed, type)
    lines: list[str] = field(default_factory=list)

    def event(self, ts: int, bed: str | None, kind: str, fields: Mapping[str, float | int | bool | str]) -> None:
        self.lines.append(line("event", {"garden": GARDEN, "bed": bed, "type": kind}, fields, ts))
        self.events.append((ts, bed, kind))

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


def _simulate_node(spec: NodeSpec, start_s: int, end_s: int, facts: Facts) -> None:
    """One node on one port, through the bridge's parser and sequencing, for the whole range."""
    port = f"/dev/serial/by-id/usb-garden-sim-{spec.node}"
    nf = facts.nodes[spec.node] = NodeFacts(spec.node, spec.bed, port)
    sim = SimNode(spec.node, seed=7, interval_s=INTERVAL_S, faults=spec.faults, params=spec.params,
                  start_t_s=float(start_s))  # fmt: skip
    jitter = random.Random(f"latency:{spec.node}")
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
                out.extend(telemetry_lines(GARDEN, message))
                nf.readings += 1
                values = message["values"]
                if "sm0" in values and bed is not None:
                    nf.vwc.append((ts, values["sm0"]["vwc_pct"]))
                if "tk0" in values:
                    nf.litres.append((ts, values["tk0"]["litres"]))
                if "bt0" in values:
                    battery_v = values["bt0"]["battery_v"]
                    nf.battery_v.append(battery_v)
        if sim.bed.waterings > waterings:  # the simulated gardener logs it
            waterings = sim.bed.waterings
            litres = spec.params.watering_litres
            fields: dict[str, float | str] = {"text": f"Watered {spec.bed}", "who": "rota", "litres": litres}
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
            out.append(line("node_status", {"garden": GARDEN, "node": spec.node, "bed": bed},
                            node_fields, status_ms))  # fmt: skip
            nf.statuses.append((status_ms, node_fields))
            port_fields: dict[str, float | int | bool | str] = {
                "open": True,
                "frames": frames,
                "opens": 1,
                "rejected": sum(nf.rejects.values()),
            }
            port_fields.update({f"rejects_{r}": n for r, n in sorted(nf.rejects.items())})
            out.append(line("bridge_port", {"garden": GARDEN, "bridge": BRIDGE, "port": port},
                            port_fields, status_ms))  # fmt: skip
            nf.port_statuses.append((status_ms, port_fields))
            next_status += STATUS_EVERY_S
        if now_s >= end_s:
            break
        emissions = sim.tick()


def simulate(end_ms: int) -> Facts:
    """``DAYS`` whole UTC days ending at ``end_ms`` (a midnight), as line protocol."""
    end_s = end_ms // 1000
    start_s = end_s - DAYS * 86_400
    facts = Facts(start_s * 1000, end_ms)
    for spec in NODES:
        _simulate_node(spec, start_s, end_s, facts)
    for day, hour, bed, text, who, kg in HARVESTS:
        ts = facts.start_ms + day * DAY_MS + hour * 3_600_000
        facts.event(ts, bed, "harvest", {"text": text, "who": who, "kg": kg})
    late = NODES[2]  # its bed is claimed when the node is assigned to it
    fields = {"text": "Claimed by the school garden club", "who": "Jo"}
    facts.event(facts.start_ms + late.assigned_after_s * 1000, late.bed, "claim", fields)
    # A garden-wide event has no bed: it must not show on any one bed's dashboard.
    fields = {"text": "Bridge moved to the new shed", "who": "Kim"}
    facts.event(facts.start_ms + DAY_MS + 9 * 3_600_000, None, "config", fields)
    return facts
