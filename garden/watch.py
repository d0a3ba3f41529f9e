"""The hub's watch: each bed's watering need, and the alerts that reach people.

Runs inside ``garden hub run`` (its own thread and its own MQTT client, so it
never slows the ingest), or alone. It

- follows the garden on MQTT: telemetry, node status and config, bed profiles
  (``garden/<g>/bed/<bed>/config``), and requests on ``cmd/alerts``;
- warms up from InfluxDB on start (the last ``history_h`` hours), so a
  restart does not forget the drydown under way;
- every ``evaluate_every_s``: computes each bed's need (garden/watering),
  detects waterings, checks the nodes (garden/alerting/rules.py), and steps
  each alert's life (garden/alerting/lifecycle.py);
- publishes each bed's need (retained ``bed/<bed>/need``), each alert change
  (retained ``alert/<kind>/<subject>``) and each watering
  (``event/watering``). The ingest writes all three to InfluxDB, so they are
  as durable as readings and show on the dashboards;
- hands notifications to the dispatcher (garden/notify), whose channels each
  have their own queue and thread: a dead webhook delays nothing.

All science and rules are pure functions; this module only moves data
between them, MQTT, InfluxDB, SQLite and the notifiers.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import logging
import math
import queue
import statistics
import threading
import time
import zoneinfo
from array import array
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from firmware_bridge.errors import ConfigError
from firmware_bridge.messages import compact_json
from firmware_bridge.mqtt_link import client_for
from firmware_bridge.topics import NAME_RE, Topics
from garden.alerting import rules
from garden.alerting.lifecycle import SEVERITY_ORDER, Alert, Condition, Transition, acknowledge, close, step
from garden.alerting.routing import Person, recipients_for
from garden.alerting.wording import bed_title, node_text, water_text, when_text
from garden.commands import serve, too_old
from garden.commons.scrub import mentions, scrub_value
from garden.errors import GardenError
from garden.hub import wall_ms
from garden.influx import Influx, InfluxError
from garden.notify.channels import Channel, NtfyChannel, SmtpChannel, WebhookChannel
from garden.notify.dispatch import Dispatcher
from garden.notify.notice import Notice
from garden.settings import HubSettings
from garden.watch_settings import WatchSettings
from garden.watch_store import ALERT_PERSON_KEYS, WatchStore
from garden.watering import fao56
from garden.watering.bed_profile import BedProfile, WaterParams, parse_bed_profile, water_params
from garden.watering.detection import detect_waterings, find_rises
from garden.watering.drydown import Forecast, forecast, hours_text
from garden.watering.need import Need, next_need, smoothed
from garden.watering.solar import DryingClock, longitude_from_utc_offset

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
MAX_SAMPLES = 20_000  # per series: bounded memory whatever the rate
FIRST_EVALUATION_S = 3.0
# Two probes in one bed see one watering a reading or two apart.
SAME_WATERING_MS = 2 * HOUR_MS


class Series:
    """(t_ms, value) kept sorted by time, deduplicated by time, bounded. In arrays of
    machine numbers: 16 bytes a sample, not the 90 of two lists of Python objects."""

    def __init__(self) -> None:
        self.t = array("q")
        self.v = array("d")

    def add(self, t_ms: int, value: float) -> None:
        i = bisect.bisect_left(self.t, t_ms)
        if i < len(self.t) and self.t[i] == t_ms:
            self.v[i] = value
            return
        self.t.insert(i, t_ms)
        self.v.insert(i, value)
        if len(self.t) > MAX_SAMPLES:
            del self.t[: len(self.t) - MAX_SAMPLES]
            del self.v[: len(self.v) - MAX_SAMPLES]

    def trim(self, before_ms: int) -> None:
        i = bisect.bisect_left(self.t, before_ms)
        if i:
            del self.t[:i]
            del self.v[:i]

    def since(self, t_ms: int) -> list[tuple[int, float]]:
        i = bisect.bisect_left(self.t, t_ms)
        return list(zip(self.t[i:], self.v[i:], strict=True))

    def __len__(self) -> int:
        return len(self.t)


class NameLog:
    """The names (boot, seq, ts) of a node's last ``maxlen`` readings, oldest first, in
    three arrays of int64: 24 bytes a reading, where a deque of tuples takes about 150
    (the soak, benchmarks/soak, found the hub's memory growing with it)."""

    def __init__(self, maxlen: int = 5000) -> None:
        self.maxlen = maxlen
        self.boot, self.seq, self.ts = array("q"), array("q"), array("q")

    def append(self, name: tuple[int, int, int]) -> None:
        self.boot.append(name[0])
        self.seq.append(name[1])
        self.ts.append(name[2])
        if len(self.ts) > self.maxlen:
            del self.boot[0], self.seq[0], self.ts[0]

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        return zip(self.boot, self.seq, self.ts, strict=True)

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(slots=True)
class NodeTrack:
    node: str
    bed: str | None = None
    interval_s: float = 300.0
    last_seen_ms: int | None = None
    retired: bool = False
    names: NameLog = field(default_factory=NameLog)
    raw: dict[str, deque[float]] = field(default_factory=dict)
    errors: dict[str, deque[str | None]] = field(default_factory=dict)
    moisture: dict[str, Series] = field(default_factory=dict)
    air: Series = field(default_factory=Series)
    tank: Series = field(default_factory=Series)
    battery: deque[float] = field(default_factory=lambda: deque(maxlen=10))


@dataclass(slots=True)
class ServiceTrack:
    """A bridge or a hub, as its retained status tells: is it losing or not storing readings?"""

    kind: str  # "bridge" or "hub"
    name: str
    status: dict[str, Any] = field(default_factory=dict)
    dropped: int | None = None  # the spool's drop counter when first seen, then the latest
    dropped_since: int = 0  # dropped since the watch started looking
    dropped_ms: int | None = None  # when the counter last went up


@dataclass(frozen=True, slots=True)
class BedView:
    """One evaluation of a bed: what ``garden water needs`` shows."""

    bed: str
    state: Need
    ts_ms: int
    vwc: float | None = None
    params: WaterParams | None = None
    to_trigger: Forecast | None = None
    to_critical: Forecast | None = None
    et0_mm: float | None = None
    balance_hours: float | None = None
    probe: str | None = None
    last_watering: dict[str, Any] | None = None
    crops: tuple[str, ...] = ()
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ts": self.ts_ms, "bed": self.bed, "state": self.state.value, "crops": list(self.crops)}
        if self.note:
            out["note"] = self.note
        if self.vwc is not None:
            out["vwc_pct"] = round(self.vwc, 2)
        if self.params is not None:
            p = self.params
            out.update(
                trigger_vwc=round(p.trigger_vwc, 2), critical_vwc=round(p.critical_vwc, 2),
                fc_vwc=round(p.theta_fc, 2), wp_vwc=round(p.theta_wp, 2), p=round(p.p, 3), kc=round(p.kc, 3),
                stage=p.stage, root_depth_mm=p.root_depth_mm, taw_mm=round(p.taw_mm, 1), raw_mm=round(p.raw_mm, 1),
            )  # fmt: skip
        for name, f in (("trigger", self.to_trigger), ("critical", self.to_critical)):
            if f is not None:
                out[f"forecast_{name}"] = {
                    "method": f.method,
                    "hours": _round(f.hours),
                    "low_h": _round(f.low_h),
                    "high_h": _round(f.high_h),
                }
        if self.to_trigger is not None and self.to_trigger.hours is not None:
            out["hours_left"] = _round(self.to_trigger.hours)
            if self.to_trigger.low_h is not None and self.to_trigger.high_h is not None:
                out["hours_low"], out["hours_high"] = _round(self.to_trigger.low_h), _round(self.to_trigger.high_h)
        if self.et0_mm is not None:
            out["et0_mm"] = round(self.et0_mm, 2)
        if self.balance_hours is not None:
            out["balance_hours"] = round(self.balance_hours, 1)
        if self.probe:
            out["probe"] = self.probe
        if self.last_watering:
            out["last_watering"] = self.last_watering
        return out


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 1)


def build_dispatcher(watch: WatchSettings) -> Dispatcher:
    channels: list[Channel] = [
        WebhookChannel(timeout_s=watch.webhook_timeout_s),
        NtfyChannel(server=watch.ntfy.server, token=watch.ntfy.token, timeout_s=watch.webhook_timeout_s),
    ]
    if watch.smtp is not None:
        s = watch.smtp
        channels.append(
            SmtpChannel(
                s.host,
                s.port,
                security=s.security,  # type: ignore[arg-type]
                username=s.username,
                password=s.password,
                sender=s.sender,
            )
        )
    return Dispatcher(channels, max_attempts=watch.max_attempts)


# How long a spool's overflow stays an open alert after the last reading it dropped.
SPOOL_ALERT_MS = 6 * HOUR_MS


class Watcher:
    """Runs until :meth:`request_stop`; :meth:`evaluate` can also be driven directly."""

    def __init__(
        self,
        settings: HubSettings,
        watch: WatchSettings,
        *,
        clock_ms: Callable[[], int] = wall_ms,
        dispatcher: Dispatcher | None = None,
        influx: Influx | None = None,
        on_duty: Callable[[int], Collection[str] | None] | None = None,
        members: Callable[[], Sequence[Person]] | None = None,
    ) -> None:
        """``on_duty`` (who is on watering duty at a time) and ``members`` (more people to
        notify) come from the commons (garden/commons/service.py) when it runs."""
        self.settings = settings
        self._on_duty = on_duty
        self._members = members
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.watch = watch
        self.topics = Topics(settings.garden)
        self._clock_ms = clock_ms
        self._stop = threading.Event()
        self.store = WatchStore(settings.data_dir / "watch.sqlite3")
        self.dispatcher = dispatcher if dispatcher is not None else build_dispatcher(watch)
        self.influx = influx if influx is not None else Influx(settings.influx)
        self.nodes: dict[str, NodeTrack] = {}
        self.services: dict[tuple[str, str], ServiceTrack] = {}
        self.profiles: dict[str, BedProfile] = {}
        self.views: dict[str, BedView] = {}
        self.alerts: dict[str, Alert] = self.store.alerts()
        known = {n.value for n in Need}
        self.needs: dict[str, Need] = {b: Need(s) for b, s in self.store.needs().items() if s in known}
        self.counters: Counter[str] = Counter()
        self._inbox: queue.SimpleQueue[mqtt.MQTTMessage] = queue.SimpleQueue()
        self._warm = False
        self._clock: DryingClock | None = None
        # The first round waits for the retained profiles and configs to arrive.
        self._next_eval = time.monotonic() + FIRST_EVALUATION_S
        self._client = self._make_client()

    # ------------------------------------------------------------------ MQTT

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = client_for(s.broker, f"garden-watch-{s.garden}-{s.hub_id}", nodelay=True)
        client.reconnect_delay_set(min_delay=1, max_delay=8)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        return client

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, reason: ReasonCode, props: object
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the watch: %s", reason)
            return
        t = self.topics
        client.subscribe(
            [
                (t.all_telemetry, 1),
                (t.all_node_status, 1),
                (t.all_node_configs, 1),
                (t.all_bed_configs, 1),
                (t.all_bridge_status, 1),
                (t.all_hub_status, 1),
                (t.command("alerts"), 1),
            ]
        )
        log.info("watch connected to %r", self.settings.broker)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        self._inbox.put(message)

    def publish(self, topic: str, body: dict[str, Any], *, retain: bool = False) -> None:
        info = self._client.publish(topic, compact_json(body), qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.counters["publish_failed"] += 1
            log.warning("could not publish %s: %s", topic, mqtt.error_string(info.rc))

    # --------------------------------------------------------------- running

    def request_stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        s = self.settings
        log.info("watch for garden %s: %d people to notify", s.garden, len(self.watch.people))
        if self.watch.latitude is None:
            log.warning(
                "watch: no [garden] latitude: drydowns are fitted in wall hours, not on the sun's clock, "
                "and there is no Hargreaves cross-check (docs/watering.md)"
            )
        self._client.connect_async(s.broker.host, s.broker.port, keepalive=30)
        self._client.loop_start()
        try:
            while not self._stop.is_set():
                self.step()
        finally:
            self._client.disconnect()
            self._client.loop_stop()
            self.dispatcher.close()
            self.store.close()

    def step(self) -> None:
        while not self._tasks.empty():
            try:
                self._tasks.get()()
            except Exception:  # one task's failure must not end the watch
                self.counters["task_errors"] += 1
                log.exception("watch: a task failed")
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:
            try:
                message = self._inbox.get(timeout=0.05)
            except queue.Empty:
                break
            self.handle(message.topic, bytes(message.payload), getattr(message, "properties", None))
        if time.monotonic() >= self._next_eval:
            self._next_eval = time.monotonic() + self.watch.evaluate_every_s
            if not self._warm:
                self.warm_up()
            now_ms = self._clock_ms()
            try:
                self.evaluate(now_ms)
            except GardenError as err:  # the state store: try again next round
                log.error("evaluation failed: %s", err)
            self.publish_status(now_ms)

    # ------------------------------------------------------------- messages

    def handle(self, topic: str, payload: bytes, props: Any = None) -> None:
        """One MQTT message; never raises (a bad payload is counted and logged)."""
        try:
            self._handle(topic, payload, props)
        except (ValueError, TypeError, KeyError, ArithmeticError, RecursionError, ConfigError) as err:
            self.counters["bad_messages"] += 1
            log.warning("watch ignored a message on %s: %s", topic, err)

    def _handle(self, topic: str, payload: bytes, props: Any) -> None:
        if topic == self.topics.command("alerts"):
            self._command(payload, props)
            return
        where = self.topics.kind_and_name(topic)
        if where is None:
            return
        kind, name, leaf = where
        if kind == "node" and leaf == "telemetry":
            self.observe(name, json.loads(payload))
        elif kind == "node" and leaf == "status" and payload:
            body = json.loads(payload)
            track = self._track(name)
            if isinstance(body.get("interval_s"), int | float) and body["interval_s"] > 0:
                track.interval_s = float(body["interval_s"])
            last = body.get("last_seen")
            if isinstance(last, int) and not isinstance(last, bool):
                track.last_seen_ms = max(track.last_seen_ms or 0, last)
        elif kind == "node" and leaf == "config":
            track = self._track(name)
            body = json.loads(payload) if payload else {}
            track.retired = bool(body.get("retired", False))
            bed = body.get("bed")
            track.bed = bed if isinstance(bed, str) and NAME_RE.fullmatch(bed) else None
        elif kind in ("bridge", "hub") and leaf == "status" and payload:
            self.service_status(kind, name, json.loads(payload), self._clock_ms())
        elif kind == "bed" and leaf == "config":
            if not payload:
                self.profiles.pop(name, None)
                return
            try:
                self.profiles[name] = parse_bed_profile(name, json.loads(payload), f"bed {name}")
            except ConfigError as err:
                self.counters["bad_bed_profiles"] += 1
                log.warning("bed %s: profile not used: %s", name, err)

    def service_status(self, kind: str, name: str, body: Any, now_ms: int) -> None:
        """A bridge's or hub's retained status: remember it, and when its spool dropped readings."""
        if not isinstance(body, dict):
            raise ValueError("status is not an object")
        track = self.services.setdefault((kind, name), ServiceTrack(kind, name))
        track.status = body
        spool = body.get("spool") if kind == "bridge" else {"dropped": body.get("spool_dropped")}
        dropped = spool.get("dropped") if isinstance(spool, dict) else None
        if not isinstance(dropped, int) or isinstance(dropped, bool):
            return
        if track.dropped is not None and dropped > track.dropped:
            track.dropped_since += dropped - track.dropped
            track.dropped_ms = now_ms
        track.dropped = dropped

    def _track(self, node: str) -> NodeTrack:
        track = self.nodes.get(node)
        if track is None:
            track = self.nodes[node] = NodeTrack(node)
        return track

    def observe(self, node: str, body: Any) -> None:
        """One telemetry payload (already JSON-decoded)."""
        if not isinstance(body, dict) or not NAME_RE.fullmatch(node):
            raise ValueError("not a telemetry object")
        ts, seq, boot = body.get("ts"), body.get("seq"), body.get("boot")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (ts, seq, boot)):
            raise ValueError("ts, seq and boot must be integers")
        assert isinstance(ts, int) and isinstance(seq, int) and isinstance(boot, int)
        track = self._track(node)
        bed = body.get("bed")
        if isinstance(bed, str) and NAME_RE.fullmatch(bed):
            track.bed = bed
        track.last_seen_ms = max(track.last_seen_ms or 0, ts)
        track.names.append((boot, seq, ts))
        raw, values, errors = body.get("raw") or {}, body.get("values") or {}, body.get("errors") or {}
        if not isinstance(raw, dict) or not isinstance(values, dict) or not isinstance(errors, dict):
            raise ValueError("raw, values and errors must be objects")
        for key in set(raw) | set(errors):
            track.errors.setdefault(key, deque(maxlen=10)).append(str(errors[key]) if key in errors else None)
        for key, value in raw.items():
            if isinstance(value, int | float) and math.isfinite(value):
                track.raw.setdefault(key, deque(maxlen=64)).append(float(value))
        self._values(track, ts, values)

    def _values(self, track: NodeTrack, ts: int, values: dict[str, Any]) -> None:
        for key, fields in values.items():
            if not isinstance(fields, dict):
                continue
            if "vwc_pct" in fields and _finite(fields["vwc_pct"]):
                track.moisture.setdefault(key, Series()).add(ts, float(fields["vwc_pct"]))
            elif key.startswith("at") and "temp_c" in fields and _finite(fields["temp_c"]):
                track.air.add(ts, float(fields["temp_c"]))
            elif "litres" in fields and _finite(fields["litres"]):
                track.tank.add(ts, float(fields["litres"]))
            elif "battery_v" in fields and _finite(fields["battery_v"]):
                track.battery.append(float(fields["battery_v"]))

    def warm_up(self) -> None:
        """Fill the recent history from InfluxDB; retried each round until it answers."""
        hours = max(1, math.ceil(self.watch.history_h))
        queries = (
            ("soil_moisture", "vwc_pct", "sm"),
            ("air_temperature", "temp_c", "at"),
            ("tank", "litres", "tk"),
        )
        try:
            for measurement, fld, _ in queries:
                # Fixed names and a number only: no user input reaches this query.
                q = (
                    f'SELECT "{fld}", "seq", "boot" FROM "{measurement}" WHERE time > now() - {hours}h '
                    'GROUP BY "node", "sensor", "bed"'
                )
                for series in self.influx.query(q):
                    node, sensor = series.tags.get("node", ""), series.tags.get("sensor", "")
                    if not NAME_RE.fullmatch(node) or not sensor:
                        continue
                    track = self._track(node)
                    bed = series.tags.get("bed")
                    if bed and track.bed is None:
                        track.bed = bed
                    for row in series.records():
                        value, ts = row.get(fld), row.get("time")
                        if not isinstance(ts, int) or not _finite(value):
                            continue
                        self._values(track, ts, {sensor: {fld: value}})
                        track.last_seen_ms = max(track.last_seen_ms or 0, ts)
                        if measurement == "soil_moisture" and isinstance(row.get("seq"), int):
                            track.names.append((int(row.get("boot") or 1), int(row["seq"]), ts))
        except InfluxError as err:
            self.counters["warm_up_failed"] += 1
            log.warning("watch: no history from InfluxDB yet (%s); will retry", err)
            return
        self._warm = True
        log.info("watch warmed up from InfluxDB: %d nodes", len(self.nodes))

    # ------------------------------------------------------------ evaluating

    def evaluate(self, now_ms: int) -> list[Transition]:
        """One round: needs, waterings, node rules, alert lifecycles. Returns the transitions."""
        since = now_ms - int(self.watch.history_h * HOUR_MS)
        for track in self.nodes.values():
            for series in (*track.moisture.values(), track.air, track.tank):
                series.trim(since)
        transitions: list[Transition] = []
        beds = set(self.profiles) | {t.bed for t in self.nodes.values() if t.bed and not t.retired}
        for bed in sorted(beds):
            transitions.extend(self._guarded(f"bed {bed}", self._evaluate_bed, bed, now_ms, since))
        for track in sorted(self.nodes.values(), key=lambda t: t.node):
            if not track.retired:
                transitions.extend(self._guarded(f"node {track.node}", self._evaluate_node, track, now_ms))
        for service in sorted(self.services.values(), key=lambda t: (t.kind, t.name)):
            transitions.extend(self._guarded(f"{service.kind} {service.name}", self._evaluate_service, service, now_ms))
        return transitions

    def _guarded(self, what: str, evaluate: Callable[..., list[Transition]], *args: Any) -> list[Transition]:
        """One bed's or node's round; what the science did not foresee costs that round only."""
        try:
            return evaluate(*args)
        except (ValueError, ArithmeticError, TypeError, KeyError, IndexError) as err:
            self.counters["evaluation_errors"] += 1
            log.exception("watch: %s not evaluated this round: %s", what, err)
            return []

    def _day_temperatures(self, nodes: Iterable[NodeTrack], now_ms: int) -> tuple[float, float] | None:
        temps = [v for n in nodes for t, v in n.air.since(now_ms - 24 * HOUR_MS)]
        if len(temps) < 6:
            return None
        return min(temps), max(temps)

    def _evaluate_bed(self, bed: str, now_ms: int, since: int) -> list[Transition]:
        members = [t for t in self.nodes.values() if t.bed == bed and not t.retired]
        profile = self.profiles.get(bed)
        previous = self.needs.get(bed, Need.UNKNOWN)
        tz = self.watch.timezone
        if profile is None:
            view = BedView(bed, Need.UNKNOWN, now_ms, note=f"no profile: garden beds set {bed} --soil ... --crop ...")
            self._publish_need(view)
            return []
        today = dt.datetime.fromtimestamp(now_ms / 1000, zoneinfo.ZoneInfo(tz)).date()
        crops = tuple(p.crop for p in profile.crops)
        params = water_params(profile, today)
        et0 = None
        temps = self._day_temperatures(members or self.nodes.values(), now_ms)
        if temps is not None and self.watch.latitude is not None:
            ra = fao56.extraterrestrial_radiation(self.watch.latitude, today.timetuple().tm_yday)
            et0 = fao56.hargreaves_et0(temps[0], temps[1], ra)
            params = water_params(profile, today, etc_mm_day=et0 * params.kc)
        residual = 0.8 * params.theta_wp
        best: tuple[float, str, list[tuple[int, float]]] | None = None
        transitions: list[Transition] = []
        for track in members:
            for key, series in track.moisture.items():
                samples = series.since(since)
                if not samples:
                    continue
                transitions.extend(self._waterings(bed, track.node, samples, params, now_ms))
                level = smoothed([v for _, v in samples], self.watch.need.smoothing)
                if level is not None and (best is None or level < best[0]):
                    best = (level, f"{track.node}/{key}", samples)
        last = self.store.last_watering(bed)
        if best is None:
            view = BedView(bed, Need.UNKNOWN, now_ms, params=params, crops=crops, last_watering=last,
                           note="no soil moisture readings yet")  # fmt: skip
            self._publish_need(view)
            return transitions
        vwc, probe, samples = best
        clock = self.drying_clock(now_ms)
        to_trigger = forecast(
            samples, trigger_vwc=params.trigger_vwc, residual_vwc=residual, now_ms=now_ms, clock=clock
        )
        to_critical = forecast(
            samples, trigger_vwc=params.critical_vwc, residual_vwc=residual, now_ms=now_ms, clock=clock
        )
        balance = None
        if et0 is not None:
            balance = fao56.water_balance_hours(vwc, params.trigger_vwc, params.root_depth_mm, et0 * params.kc)
        # A watering detected after the last evaluation resets the hysteresis.
        state = next_need(
            self.needs.get(bed, Need.UNKNOWN),
            vwc,
            trigger_vwc=params.trigger_vwc,
            critical_vwc=params.critical_vwc,
            hours_to_trigger=to_trigger.hours,
            policy=self.watch.need,
        )
        view = BedView(bed, state, now_ms, vwc, params, to_trigger, to_critical, et0, balance, probe, last, crops)
        if state is not previous:
            log.info("bed %s: %s -> %s (%.1f%% VWC, trigger %.1f%%)", bed, previous, state, vwc, params.trigger_vwc)
        self.needs[bed] = state
        self.store.save_need(bed, state.value)
        self._publish_need(view)
        active = state in (Need.NEEDS_WATER, Need.CRITICAL)
        text = ""
        if active:
            who = (last or {}).get("who")
            text = water_text(
                bed=bed, crops=crops, state=state.value, vwc=vwc, trigger_vwc=params.trigger_vwc,
                critical_vwc=params.critical_vwc, to_critical=to_critical,
                last_watering=(int(last["ts"]), who if isinstance(who, str) else None) if last else None,
                now_ms=now_ms, tz=tz,
            )  # fmt: skip
        closing = f"{bed_title(bed, crops)}: back above its trigger ({vwc:.0f}% VWC)."
        if not active:
            closing = self._watered_text(bed, samples, params, now_ms) or closing
        condition = Condition(
            "water",
            bed,
            active,
            severity="critical" if state is Need.CRITICAL else "warning",
            text=text or closing,
            bed=bed,
            details={"vwc_pct": round(vwc, 1), "trigger_vwc": round(params.trigger_vwc, 1), "probe": probe},
        )
        transitions.extend(self._apply(condition, now_ms))
        # A heads-up, at info level: on MQTT, the dashboards and `garden alerts list`;
        # pushed to people only where notify_min_severity = "info".
        soon = state is Need.SOON and to_trigger.hours is not None
        heads_up = (
            f"{bed_title(bed, crops)}: {vwc:.0f}% VWC, will reach its trigger ({params.trigger_vwc:.0f}%) "
            f"in {hours_text(to_trigger)}."
            if soon
            else f"{bed_title(bed, crops)}: {state.label}."
        )
        transitions.extend(
            self._apply(
                Condition("water_soon", bed, soon, "info", heads_up, bed=bed,
                          details={"hours": _round(to_trigger.hours), "low_h": _round(to_trigger.low_h),
                                   "high_h": _round(to_trigger.high_h)}),
                now_ms,
            )
        )  # fmt: skip
        return transitions

    def _watered_text(self, bed: str, samples: list[tuple[int, float]], params: WaterParams, now_ms: int) -> str:
        """ "watered today 14:05: +6.5% VWC, about 20 mm" when a rise since the open alert explains its end.

        A watering is logged once it is final (garden/watering/detection.py), some
        readings later; a large rise is believed at once, so the alert closes saying why.
        """
        alert = self.alerts.get(f"water/{bed}")
        if alert is None or not alert.open:
            return ""
        rises = find_rises([v for _, v in samples], provisional=True)
        if not rises:
            return ""
        rise = rises[-1]
        t_rise = samples[rise.start][0]
        if t_rise < alert.raised_ms - SAME_WATERING_MS:
            return ""
        jump = rise.after_vwc - rise.before_vwc
        return (f"watered {when_text(t_rise, now_ms, self.watch.timezone)}: +{jump:.1f}% VWC, "
                f"about {jump / 100 * params.root_depth_mm:.0f} mm")  # fmt: skip

    def drying_clock(self, now_ms: int) -> DryingClock | None:
        """The sun's hours at the garden (docs/watering.md), when its latitude is known.

        Without ``[garden] longitude`` solar noon comes from the time zone's standard
        offset (15° per hour), within about an hour of the truth.
        """
        lat = self.watch.latitude
        if lat is None:
            return None
        lon = self.watch.longitude
        if lon is None:
            zone = zoneinfo.ZoneInfo(self.watch.timezone)
            moment = dt.datetime.fromtimestamp(now_ms / 1000, zone)
            offset = (moment.utcoffset() or dt.timedelta()) - (moment.dst() or dt.timedelta())
            lon = longitude_from_utc_offset(offset.total_seconds() / 3600)
        if self._clock is None or (self._clock.latitude_deg, self._clock.longitude_deg) != (lat, lon):
            self._clock = DryingClock(lat, lon)
        return self._clock

    def _waterings(
        self, bed: str, node: str, samples: list[tuple[int, float]], params: WaterParams, now_ms: int
    ) -> list[Transition]:
        found = detect_waterings(samples, root_depth_mm=params.root_depth_mm)
        if not found:
            return []
        known = self.store.watering_times(bed)
        out: list[Transition] = []
        for w in found:
            if any(abs(w.t_ms - t) < SAME_WATERING_MS for t in known):
                continue
            known.append(w.t_ms)
            text = f"Watering detected in {bed}: +{w.rise_vwc:.1f}% VWC (about {w.mm:.0f} mm)"
            body = {"ts": w.t_ms, "bed": bed, "node": node, "mm": round(w.mm, 1), "text": text,
                    "rise_vwc": round(w.rise_vwc, 2), "detected": True}  # fmt: skip
            self.store.add_watering(bed, w.t_ms, body)
            self.publish(self.topics.event("watering"), {k: v for k, v in body.items() if k != "rise_vwc"})
            self.counters["waterings"] += 1
            log.info("%s", text)
            # Hysteresis starts again from a watered bed, and its water alert closes.
            self.needs[bed] = Need.OK
            alert = self.alerts.get(f"water/{bed}")
            if alert is not None and alert.open and w.t_ms >= alert.raised_ms - SAME_WATERING_MS:
                closed, transition = close(alert, now_ms, f"watered {when_text(w.t_ms, now_ms, self.watch.timezone)}: "
                                           f"+{w.rise_vwc:.1f}% VWC, about {w.mm:.0f} mm")  # fmt: skip
                out.append(self._record(closed, transition))
        return out

    def _evaluate_node(self, track: NodeTrack, now_ms: int) -> list[Transition]:
        policy = self.watch.rules
        node, bed = track.node, track.bed
        out: list[Transition] = []
        if track.last_seen_ms is not None:
            state = rules.liveness(track.last_seen_ms, track.interval_s, now_ms, policy)
            ago = (now_ms - track.last_seen_ms) / 60_000
            what = {
                rules.Liveness.LATE: f"late, nothing for {ago:.0f} min (reads every {track.interval_s / 60:g} min)",
                rules.Liveness.LOST: f"lost, nothing for {ago:.0f} min (reads every {track.interval_s / 60:g} min). "
                "Check its power and its USB cable.",
            }.get(state, "reading again")
            out += self._apply(
                Condition("node", node, state is not rules.Liveness.OK,
                          "warning" if state is rules.Liveness.LOST else "info",
                          node_text(node, bed, what), bed=bed, node=node, details={"liveness": state.value}),
                now_ms,
            )  # fmt: skip
        window = [(b, s) for b, s, t in track.names if t >= now_ms - 24 * HOUR_MS]
        missing = rules.missing_readings(window)
        out += self._apply(
            Condition("gaps", node, missing >= policy.gap_threshold, "info",
                      node_text(node, bed, f"{missing} readings lost in the last 24 h" if missing else "no gaps"),
                      bed=bed, node=node, details={"missing": missing}),
            now_ms,
        )  # fmt: skip
        stuck = rules.stuck_sensors({k: list(v) for k, v in track.raw.items()}, policy.stuck_samples)
        out += self._apply(
            Condition("stuck", node, bool(stuck), "warning",
                      node_text(node, bed, f"sensor {', '.join(stuck)} repeats the same value "
                                f"({policy.stuck_samples} readings): check the probe"
                                if stuck else "sensors vary again"),
                      bed=bed, node=node, details={"sensors": stuck}),
            now_ms,
        )  # fmt: skip
        recent_vwc = {k: [v for _, v in s.since(now_ms - 24 * HOUR_MS)] for k, s in track.moisture.items()}
        faults = rules.faulty_sensors({k: list(v) for k, v in track.errors.items()}, recent_vwc, policy.fault_samples)
        listing = ", ".join(f"{k} ({why})" for k, why in faults.items())
        out += self._apply(
            Condition("sensor", node, bool(faults), "warning",
                      node_text(node, bed, f"sensor readings out of range or failed: {listing}" if faults
                                else "sensors read normally again"),
                      bed=bed, node=node, details={"faults": faults}),
            now_ms,
        )  # fmt: skip
        battery = rules.battery_state(list(track.battery), policy)
        volts = statistics.median(list(track.battery)[-3:]) if track.battery else None
        out += self._apply(
            Condition("battery", node, battery is not None, battery or "warning",
                      node_text(node, bed, f"battery low, {volts:.2f} V: replace or charge it" if battery and volts
                                else "battery fine"),
                      bed=bed, node=node, details={"battery_v": volts}),
            now_ms,
        )  # fmt: skip
        if len(track.tank):
            days = rules.tank_days_left(track.tank.since(now_ms - policy.tank_use_window_ms), now_ms,
                                        policy.tank_use_window_ms)  # fmt: skip
            low = days is not None and days < policy.tank_min_days
            litres = track.tank.v[-1]
            out += self._apply(
                Condition("tank", node, low, "critical" if days is not None and days < 1 else "warning",
                          node_text(node, bed, f"water tank at {litres:.0f} l, about {days:.1f} days left at the "
                                    "recent use: refill it" if low and days is not None else f"tank at {litres:.0f} l"),
                          bed=bed, node=node, details={"litres": round(litres, 1), "days_left": _round(days)}),
                now_ms,
            )  # fmt: skip
        return out

    def _evaluate_service(self, track: ServiceTrack, now_ms: int) -> list[Transition]:
        """A spool that overflowed (readings dropped, by its documented policy) and a hub
        that cannot store what it receives (a full disk): never silent."""
        out: list[Transition] = []
        who = f"{track.kind.capitalize()} {track.name}"
        recent = track.dropped_ms is not None and now_ms - track.dropped_ms < SPOOL_ALERT_MS
        if track.kind == "bridge":
            spool = track.status.get("spool")
            spool = spool if isinstance(spool, dict) else {}
            depth, limit = spool.get("depth"), spool.get("max_rows")
            full = isinstance(depth, int) and isinstance(limit, int) and limit > 0 and depth >= 0.9 * limit
            policy = spool.get("overflow", "drop_oldest")
            if recent:
                what = (
                    f"its spool overflowed: {track.dropped_since} readings dropped ({policy}) while the broker "
                    "was out of reach. Check the bridge's network link to the broker."
                )
            elif full and isinstance(depth, int) and isinstance(limit, int):
                what = (
                    f"its spool is {depth / limit:.0%} full ({depth} of {limit} readings waiting): the broker "
                    f"has been out of reach; past the limit readings are dropped ({policy})."
                )
            else:
                what = "its spool has room again"
            out += self._apply(
                Condition("spool", track.name, recent or full, "critical" if recent else "warning",
                          f"{who}: {what}", details={"dropped": track.dropped_since, "depth": depth}),
                now_ms,
            )  # fmt: skip
            return out
        storage = track.status.get("storage")
        failing = isinstance(storage, dict) and storage.get("ok") is False and track.status.get("state") != "offline"
        if failing:
            assert isinstance(storage, dict)
            since = storage.get("since_ms")
            ago = f" for {(now_ms - since) / 60_000:.0f} min" if isinstance(since, int) else ""
            what = (
                f"cannot store readings{ago}: {storage.get('problem')}. Nothing is lost yet: the broker keeps "
                f"them unacknowledged until there is room. Free space in {storage.get('data_dir')}."
            )
        elif recent:
            what = f"its spool overflowed: {track.dropped_since} batches of readings dropped while InfluxDB was down"
        else:
            what = "storing readings normally again"
        out += self._apply(
            Condition("storage", track.name, failing or recent, "critical", f"{who}: {what}",
                      details={"problem": storage.get("problem") if isinstance(storage, dict) else None,
                               "dropped": track.dropped_since}),
            now_ms,
        )  # fmt: skip
        return out

    # ------------------------------------------------------------- alerting

    def _apply(self, condition: Condition, now_ms: int) -> list[Transition]:
        current = self.alerts.get(condition.key)
        if current is None and not condition.active:
            return []
        after, transition = step(current, condition, now_ms, self.watch.alerts)
        if after is None:
            return []
        if transition is None:
            self.alerts[after.key] = after
            if after != current:
                self._save(after)
            return []
        return [self._record(after, transition)]

    def _save(self, alert: Alert) -> None:
        """Keep an alert's state; a store that fails (a full disk) never silences the alert."""
        try:
            self.store.save_alert(alert)
        except GardenError as err:
            self.counters["alert_store_failed"] += 1
            log.error("alert %s not saved (it is still published and sent): %s", alert.key, err)

    def _record(self, alert: Alert, transition: Transition) -> Transition:
        self.alerts[alert.key] = alert
        self._save(alert)
        self.counters[f"alerts_{transition.change}"] += 1
        log.info("alert %s %s: %s", alert.key, transition.change, alert.text)
        self._publish_alert(transition)
        self._notify(transition)
        return transition

    def _publish_alert(self, transition: Transition) -> None:
        a = transition.alert
        body = {**a.to_json(), "ts": transition.ts_ms, "transition": transition.change}
        if transition.change == "resolved" and a.resolution:
            body["text"] = f"Resolved: {a.resolution}"  # what the annotation shows
        if transition.by:
            body["by"] = transition.by
        mute = self.store.mutes().get(a.key)
        if mute is not None and mute[0] > transition.ts_ms:
            body["muted_until_ms"], body["muted_by"] = mute
        self.publish(self.topics.alert(a.kind, a.subject), body, retain=True)

    def _notify(self, transition: Transition) -> None:
        a = transition.alert
        if not transition.notify:
            return
        if SEVERITY_ORDER.get(a.severity, 1) < SEVERITY_ORDER[self.watch.notify_min_severity]:
            return
        mute = self.store.mutes().get(a.key)
        if mute is not None and mute[0] > transition.ts_ms:
            self.counters["notices_muted"] += 1
            return
        everyone = list(self.watch.people)
        if self._members is not None:
            named = {p.name for p in everyone}
            everyone += [p for p in self._members() if p.name not in named]
        duty = self._on_duty(transition.ts_ms) if self._on_duty is not None else None
        people = recipients_for(a, everyone, escalated=a.escalated, on_duty=duty)
        if not people:
            return
        title = {
            "raised": f"{a.kind}: {a.subject}",
            "repeated": f"Still: {a.kind} {a.subject}",
            "escalated": f"Escalated: {a.kind} {a.subject}",
            "resolved": f"Resolved: {a.kind} {a.subject}",
        }[transition.change]
        if a.kind == "water":
            title = {"raised": f"{a.subject} needs water", "resolved": f"{a.subject}: watered"}.get(
                transition.change, f"{title}: needs water"
            )
        body = a.resolution if transition.change == "resolved" and a.resolution else a.text
        notice = Notice(
            key=a.key,
            transition=transition.change,
            severity=a.severity,
            title=title,
            body=body,
            data={**a.to_json(), "transition": transition.change},
            created_ms=transition.ts_ms,
        )
        self.dispatcher.submit(notice, people)
        self.counters["notices"] += len(people)

    # ------------------------------------------------------------- commands

    def _command(self, payload: bytes, props: Any) -> None:
        applied = serve(self._client, self.topics, payload, props, lambda body: self.command(body, self._clock_ms()),
                        (GardenError, TypeError, KeyError))  # fmt: skip
        if not applied:
            self.counters["commands_refused"] += 1

    def command(self, body: Any, now_ms: int) -> dict[str, Any]:
        """Apply one request: ``ack``, ``mute`` or ``unmute`` an alert. Raises CommandError."""
        if not isinstance(body, dict):
            raise CommandError("a request is a JSON object")
        if too_old(body, now_ms):
            raise CommandError("request too old: ignored")
        action, key, who = body.get("action"), body.get("key"), body.get("who")
        if not isinstance(who, str) or not NAME_RE.fullmatch(who):
            raise CommandError("who: a member name is required (GARDEN_USER)")
        if not isinstance(key, str):
            raise CommandError("key: the alert's id, e.g. water/bed-3")
        alert = self.alerts.get(key)
        if alert is None:
            raise CommandError(f"no alert {key!r}; see garden alerts list")
        self.counters[f"command_{action}"] += 1
        if action == "ack":
            if not alert.open:
                raise CommandError(f"{key} is already resolved")
            acked, transition = acknowledge(alert, who, now_ms)
            self._record(acked, transition)
            return {"alert": acked.to_json()}
        if action == "mute":
            seconds = body.get("for_s")
            if not isinstance(seconds, int | float) or not 60 <= seconds <= 90 * 86_400:
                raise CommandError("for_s: mute for 1 minute to 90 days")
            until = now_ms + int(seconds * 1000)
            self.store.mute(key, until, who)
            self._record(alert, Transition("muted", alert, now_ms, by=who))
            return {"alert": alert.to_json(), "muted_until_ms": until}
        if action == "unmute":
            self.store.unmute(key)
            return {"alert": alert.to_json(), "muted_until_ms": None}
        raise CommandError(f"unknown action {action!r}: ack, mute or unmute")

    # ------------------------------------------------------------- people

    def erase_person(self, name: str, alias: str) -> threading.Event:
        """Replace ``name`` with ``alias`` in the watch's alerts, mutes and waterings, in its own
        thread; the event is set once that is done."""
        done = threading.Event()

        def erase() -> None:
            try:
                self._erase(name, alias)
            finally:
                done.set()

        self._tasks.put(erase)
        return done

    def _erase(self, name: str, alias: str) -> None:
        for key, alert in list(self.alerts.items()):
            body = alert.to_json()
            if mentions(body, name):
                self.alerts[key] = Alert.from_json(scrub_value(body, name, alias, ALERT_PERSON_KEYS))
        changed = self.store.scrub(name, alias)
        log.info("watch: a member's name erased from %d stored rows", changed)

    def export_person(self, name: str) -> dict[str, Any]:
        """What the watch holds about ``name``: alerts they acknowledged, mutes they set."""
        return {
            "alerts_acknowledged": [a.to_json() for a in self.store.alerts().values() if a.acked_by == name],
            "mutes": [{"key": k, "until_ms": u} for k, (u, w) in self.store.mutes().items() if w == name],
        }

    def publish_status(self, now_ms: int) -> None:
        """Retained ``hub/<id>/watch``: what ``garden hub status`` shows of the watch."""
        body = {
            "ts": now_ms,
            "beds": len(self.views),
            "open_alerts": sum(1 for a in self.alerts.values() if a.open),
            "counters": dict(self.counters),
            "notify": self.dispatcher.stats(),
            "warm": self._warm,
        }
        self.publish(self.topics.hub_watch(self.settings.hub_id), body, retain=True)

    def _publish_need(self, view: BedView) -> None:
        self.views[view.bed] = view
        self.publish(self.topics.bed_need(view.bed), view.to_json(), retain=True)


class CommandError(GardenError):
    pass


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
