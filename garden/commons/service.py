"""The hub's commons: the single writer of the garden's shared work.

Runs inside ``garden hub run`` in its own thread, with its own MQTT client.
Volunteers' CLIs send requests on ``garden/<g>/cmd/commons`` (MQTT v5
request/response, garden/commands.py); this thread applies them one at a
time, in the order the broker delivered them, each in one SQLite transaction
(garden/commons/store.py), answers, and then publishes the resulting state:

- retained ``commons/claim/<bed>`` while a bed is claimed, ``commons/share/<id>``
  while a harvest share is open, and ``commons/rota/week``;
- every event mirrored into InfluxDB (measurements ``event``, ``water_claim``,
  ``harvest``, ``harvest_share``, ``contribution`` and ``rota``, docs/schema.md)
  through the store's outbox.

Because one thread orders everything, two volunteers claiming the same bed at
the same moment cannot both win, and claims on a share never add up to more
than was offered. It also follows the watch's ``event/watering`` (a detected
moisture rise confirms a claim), node config events (calibrations count as
maintenance) and each bed's retained need. The design is in docs/commons.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import queue
import re
import secrets
import threading
import time
import zoneinfo
from collections import Counter
from collections.abc import Callable, Collection
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from firmware_bridge.errors import BridgeError, ConfigError
from firmware_bridge.messages import compact_json
from firmware_bridge.mqtt_link import client_for, read_retained
from firmware_bridge.topics import NAME_RE, Topics
from garden.alerting.routing import Person
from garden.commands import serve, too_old
from garden.commons.quantity import Quantity, format_amount, parse_quantity
from garden.commons.rota import Swap, check_swap, on_duty, week
from garden.commons.scrub import mentions, scrub_line, scrub_text, scrub_value
from garden.commons.settings import CommonsSettings
from garden.commons.shares import Ask, by_weight, first_come
from garden.commons.store import PERSON_FIELDS, PERSONAL, CommonsStore
from garden.errors import GardenError
from garden.hub import wall_ms
from garden.influx import Influx, InfluxError, InfluxRejected
from garden.notify.dispatch import Dispatcher
from garden.notify.notice import Notice
from garden.points import FieldValue, line
from garden.watch_settings import WatchSettings, parse_person

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
# A rise this long before the claim still confirms it (the detection dates a
# watering from the first reading of the rise; a claim made at the tap is late).
CLAIM_LEAD_MS = HOUR_MS
MAX_CLAIM_S = 24 * 3600
ERASE_AGAIN_S = 15.0  # a second pass catches an event that was on its way to InfluxDB
ERASE_RETRY_S = 30.0  # while InfluxDB is down
NAMED_MEASUREMENTS = ("event", "alert", "water_claim", "harvest", "harvest_share", "contribution", "rota")
CONTRIBUTION_KINDS = ("watering", "claim_honoured", "node_maintained", "harvest_shared", "share_picked_up")
MAINTENANCE = ("battery", "probe", "cable", "enclosure", "firmware", "cleaned", "other")
ACTIVE_CLAIM = ("open", "done")


class CommonsError(GardenError):
    """A request the hub refuses; the message is what the volunteer reads."""


def _name(body: dict[str, Any], key: str, what: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise CommonsError(f"{key}: {what} (1-32 letters, digits, '-' or '_'), got {value!r}"[:200])
    return value


# Line breaks, tabs, NUL and other control characters, and unpaired surrogates (not
# Unicode): none can be written to InfluxDB unchanged (garden/points.py), so a
# request carrying one is refused here, with a message, before anything is stored.
_NOT_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _text(body: dict[str, Any], key: str, limit: int = 120) -> str:
    value = body.get(key) or ""
    if not isinstance(value, str) or len(value) > limit or _NOT_TEXT.search(value):
        raise CommonsError(f"{key}: a line of text up to {limit} characters, without line breaks, tabs "
                           "or control characters")  # fmt: skip
    return value.strip()


def _number(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise CommonsError(f"{key}: a number from {low:g} to {high:g}")
    return float(value)


class Commons:
    """Runs until :meth:`request_stop`; :meth:`command` and :meth:`tick` can also be driven directly."""

    def __init__(
        self,
        settings: Any,
        commons: CommonsSettings,
        watch: WatchSettings,
        *,
        clock_ms: Callable[[], int] = wall_ms,
        influx: Influx | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.settings = settings
        self.rules = commons
        self.watch = watch
        self.topics = Topics(settings.garden)
        self.tz = zoneinfo.ZoneInfo(watch.timezone)
        self._clock_ms = clock_ms
        self._stop = threading.Event()
        self.store = CommonsStore(settings.data_dir / "commons.sqlite3")
        self.influx = influx if influx is not None else Influx(settings.influx)
        self.dispatcher = dispatcher
        self.owns_dispatcher = False  # closed with the commons when it is its own
        self.counters: Counter[str] = Counter()
        self.beds: dict[str, str] = {}  # bed -> its need state, from the watch's retained messages
        # Called with (name, alias) after an erasure; may return an Event set once done.
        self.erase_hooks: list[Callable[[str, str], threading.Event | None]] = []
        self._after_commit: list[Callable[[], None]] = []  # external effects of the transaction under way
        self.export_hooks: list[Callable[[str], dict[str, Any]]] = []
        # Each message with when it arrived (monotonic): a request that waited here longer than
        # its CLI waits for the answer is refused, since its sender was told nothing happened.
        self._inbox: queue.SimpleQueue[tuple[mqtt.MQTTMessage, float]] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards what the watch's thread reads: swaps and people
        self._swaps: list[Swap] = []
        self._people: tuple[Person, ...] = ()
        self._last_ts: dict[str, int] = {}
        self._rota_day: dt.date | None = None
        self._next_tick = 0.0
        self._next_flush = 0.0
        self._flush_backoff = 1.0
        self._influx_down = False
        # Erasures still to be done in InfluxDB: (when, name, alias, failed so far). Held in
        # memory only: a name is kept nowhere on disk once it is erased.
        self._erase_again: list[tuple[float, str, str, bool]] = []
        self.erase_retry_s = ERASE_RETRY_S
        self._refresh()
        self._client = client_for(settings.broker, f"garden-commons-{settings.garden}-{settings.hub_id}", nodelay=True)
        self._status_topic = self.topics.hub_commons(settings.hub_id)
        # Volunteers' CLIs read this before asking: with the commons down, they fail at once.
        self._client.will_set(self._status_topic, self._status("offline"), qos=1, retain=True)
        self._client.reconnect_delay_set(min_delay=1, max_delay=8)
        self._client.on_connect = self._on_connect
        self._client.on_message = lambda c, u, m: self._inbox.put((m, time.monotonic()))

    # ------------------------------------------------------ for the watch

    def on_duty(self, now_ms: int) -> Collection[str] | None:
        """Who is on watering duty now; None when the garden keeps no rota (everyone hears)."""
        if self.rules.rota.empty:
            return None
        with self._lock:
            swaps = list(self._swaps)
        return set(on_duty(self.rules.rota, swaps, self._day(now_ms)))

    def people(self) -> tuple[Person, ...]:
        """Members who gave a way to reach them, as the watch's routing wants them."""
        with self._lock:
            return self._people

    # ------------------------------------------------------------ running

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, reason: ReasonCode, props: object
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the commons: %s", reason)
            return
        t = self.topics
        client.subscribe(
            [(t.command("commons"), 1), (t.event("watering"), 1), (t.event("config"), 1),
             (t.all_bed_needs, 1), (t.all_bed_configs, 1)]
        )  # fmt: skip
        client.publish(self._status_topic, self._status("online"), qos=1, retain=True)
        log.info("commons connected to %r", self.settings.broker)

    def _status(self, state: str) -> bytes:
        return compact_json({"state": state, "hub": self.settings.hub_id, "ts": self._clock_ms()})

    def other_hubs(self) -> list[str]:
        """Other hubs whose commons is online for this garden: there must be one writer only."""
        try:
            found = read_retained(self.settings.broker, (self.topics.hub_commons("+"),), wait_s=0.5)
        except BridgeError:
            return []  # no broker yet: the hub waits for it anyway
        others = []
        for topic, payload in found.items():
            try:
                body = json.loads(payload)
            except ValueError:
                continue
            if topic != self._status_topic and isinstance(body, dict) and body.get("state") == "online":
                others.append(str(body.get("hub") or topic.split("/")[3]))
        return others

    def request_stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        s = self.settings
        log.info("commons for garden %s: %d members, share rule %s", s.garden, len(self.store.members()),
                 self.rules.share_rule)  # fmt: skip
        self._client.connect_async(s.broker.host, s.broker.port, keepalive=30)
        self._client.loop_start()
        try:
            while not self._stop.is_set():
                try:
                    self.step()
                except Exception:  # a bug, or the disk: log it and go on, never leave the hub without it
                    self.counters["step_errors"] += 1
                    log.exception("commons: a step failed")
                    self._stop.wait(1.0)
        finally:
            with contextlib.suppress(RuntimeError, ValueError):  # not connected: the last will says it
                self._client.publish(self._status_topic, self._status("offline"), qos=1, retain=True).wait_for_publish(
                    2.0
                )
            self._client.disconnect()
            self._client.loop_stop()
            self.store.close()
            if self.owns_dispatcher and self.dispatcher is not None:
                self.dispatcher.close()

    def step(self) -> None:
        try:
            message, arrived = self._inbox.get(timeout=0.2)
            self.handle(message.topic, bytes(message.payload), getattr(message, "properties", None),
                        waited_s=time.monotonic() - arrived)  # fmt: skip
        except queue.Empty:
            pass
        now = time.monotonic()
        if now >= self._next_tick:
            self._next_tick = now + 1.0
            try:
                self.tick(self._clock_ms())
            except GardenError as err:
                log.error("commons tick failed: %s", err)
        if now >= self._next_flush:
            self.flush()

    # ------------------------------------------------------------ messages

    def handle(self, topic: str, payload: bytes, props: Any = None, *, waited_s: float = 0.0) -> None:
        """One MQTT message; never raises (a bad payload is counted and logged)."""
        try:
            if topic == self.topics.command("commons"):
                self._request(payload, props, waited_s)
                return
            where = self.topics.kind_and_name(topic)
            if where is None:
                return
            kind, name, leaf = where
            if kind == "bed" and leaf == "need" and payload:
                state = json.loads(payload).get("state")
                self.beds[name] = state if isinstance(state, str) else "unknown"
            elif kind == "bed" and leaf == "config" and payload:
                self.beds.setdefault(name, "unknown")
            elif kind == "event" and name == "watering" and payload:
                self.watering_seen(json.loads(payload), self._clock_ms())
            elif kind == "event" and name == "config" and payload:
                self.config_event(json.loads(payload))
        except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError, ConfigError, GardenError) as err:
            self.counters["bad_messages"] += 1
            log.warning("commons ignored a message on %s: %s", topic, err)
        except Exception:  # a bug must cost one message, never the commons thread
            self.counters["handler_errors"] += 1
            log.exception("commons failed on a message on %s", topic)

    def _request(self, payload: bytes, props: Any, waited_s: float = 0.0) -> None:
        def apply(body: Any) -> dict[str, Any]:
            patience = body.get("timeout_ms") if isinstance(body, dict) else None
            if isinstance(patience, int) and not isinstance(patience, bool) and waited_s * 1000 > patience - 200:
                self.counters["requests_too_late"] += 1
                raise CommonsError(f"the hub was busy for {waited_s:.1f} s and your command gave up; "
                                   "nothing was done: try again")  # fmt: skip
            try:
                return self.command(body, self._clock_ms())
            except CommonsError:
                raise
            except GardenError as err:  # the store failed: say so, and stay up
                log.error("commons request failed: %s", err)
                self.counters["commands_failed"] += 1
                raise CommonsError(f"the hub could not store it: {err}") from err

        if not serve(self._client, self.topics, payload, props, apply, (CommonsError, TypeError, KeyError,
                                                                         ArithmeticError)):  # fmt: skip
            self.counters["commands_refused"] += 1

    def command(self, body: Any, now_ms: int) -> dict[str, Any]:
        """Apply one request. Raises CommonsError (refused) or GardenError (store failed)."""
        if not isinstance(body, dict):
            raise CommonsError("a request is a JSON object")
        if too_old(body, now_ms):
            raise CommonsError("request too old: ignored")
        action = body.get("action")
        handler = self._actions().get(action) if isinstance(action, str) else None
        if handler is None:
            raise CommonsError(f"unknown action {action!r}; one of {sorted(self._actions())}"[:300])
        who = _name(body, "who", "who is asking: set GARDEN_USER or [garden] user")
        self.counters[f"command_{action}"] += 1
        self._after_commit.clear()
        try:
            with self.store.transaction():
                result, publish = handler(body, who, now_ms)
        except BaseException:
            self._after_commit.clear()
            self._refresh()  # what the refused request put in memory goes with its rollback
            raise
        for topic, state in publish:
            self._client.publish(topic, compact_json(state) if state else b"", qos=1, retain=True)
        for then in self._after_commit:
            then()
        self._after_commit.clear()
        return result

    def _actions(self) -> dict[str, Callable[[dict[str, Any], str, int], tuple[dict[str, Any], list[Any]]]]:
        return {
            "member.add": self._member_add, "member.list": self._member_list, "member.show": self._member_show,
            "member.remove": self._member_remove, "member.export": self._member_export,
            "member.erase": self._member_erase,
            "rota.show": self._rota_show, "rota.swap": self._rota_swap,
            "water.claim": self._water_claim, "water.release": self._water_release, "water.done": self._water_done,
            "water.claims": self._water_claims,
            "harvest.log": self._harvest_log, "harvest.list": self._harvest_list, "harvest.shares": self._shares,
            "harvest.claim": self._share_claim, "harvest.collected": self._share_collected,
            "me": self._me, "totals": self._totals, "node.maintained": self._node_maintained,
        }  # fmt: skip

    # ------------------------------------------------------------ helpers

    def _day(self, ms: int) -> dt.date:
        return dt.datetime.fromtimestamp(ms / 1000, self.tz).date()

    def _at(self, ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, self.tz).strftime("%a %H:%M %Z")

    def _midnight_ms(self, day: dt.date) -> int:
        return int(dt.datetime.combine(day, dt.time(), self.tz).timestamp() * 1000)

    def _refresh(self) -> None:
        swaps = [Swap(dt.date.fromisoformat(r["day"]), r["giver"], r["taker"])
                 for r in self.store.rows("SELECT day, giver, taker FROM swaps ORDER BY id")]  # fmt: skip
        people = []
        for m in self.store.members():
            if m.get("email") or m.get("ntfy") or m.get("webhook"):
                try:
                    people.append(parse_person(f"member {m['name']}", _person_table(m), self.watch.timezone))
                except ConfigError as err:
                    log.warning("member %s cannot be notified: %s", m.get("name"), err)
        with self._lock:
            self._swaps = swaps
            self._people = tuple(people)

    def _is_member(self, name: str) -> bool:
        if self.store.member(name) is not None:
            return True
        return name in {p.name for p in self.watch.people} or name in self.rules.rota.names()

    def _require_member(self, who: str) -> None:
        if not self._is_member(who):
            raise CommonsError(f"{who!r} is not a member of this garden: `garden member add {who}` first")

    def _point(self, measurement: str, tags: dict[str, str | None], fields: dict[str, FieldValue], ts: int) -> str:
        # Two events in the same series and millisecond would overwrite each other in InfluxDB.
        series = measurement + repr(sorted((k, v) for k, v in tags.items() if v))
        ts = max(ts, self._last_ts.get(series, 0) + 1)
        self._last_ts[series] = ts
        return line(measurement, {"garden": self.settings.garden, **tags}, fields, ts)

    def _event(self, kind: str, ts: int, text: str, who: str | None = None, *, bed: str | None = None,
               node: str | None = None, numbers: dict[str, float] | None = None) -> None:  # fmt: skip
        fields: dict[str, FieldValue] = {"text": text[:500]}
        if who:
            fields["who"] = who
        fields.update({k: float(v) for k, v in (numbers or {}).items()})
        self.store.mirror([self._point("event", {"type": kind, "bed": bed, "node": node}, fields, ts)])
        log.info("commons: %s", text)

    def _contribute(self, who: str, kind: str, ts: int, amount: float = 1.0, unit: str = "", *,
                    bed: str | None = None, node: str | None = None, note: str = "") -> None:  # fmt: skip
        self.store.run(
            "INSERT INTO contributions (ts, who, kind, amount, unit, bed, node, note) VALUES (?,?,?,?,?,?,?,?)",
            (ts, who, kind, amount, unit, bed, node, note),
        )
        fields: dict[str, FieldValue] = {"n": 1, "amount": float(amount), "who": who}
        self.store.mirror([self._point("contribution", {"kind": kind}, fields, ts)])

    # ------------------------------------------------------------ members

    def _member_add(self, body: dict[str, Any], who: str, now_ms: int) -> tuple[dict[str, Any], list[Any]]:
        name = _name(body, "name", "the member's name")
        record: dict[str, Any] = {"name": name}
        for key in ("email", "ntfy", "webhook", "quiet_hours", "timezone"):
            value = body.get(key)
            if value:
                record[key] = _text(body, key, 300)
        beds = body.get("beds") or []
        if not isinstance(beds, list) or not all(isinstance(b, str) and NAME_RE.fullmatch(b) for b in beds):
            raise CommonsError("beds: a list of bed names")
        record["beds"] = sorted(set(beds))
        record["notify_shares"] = bool(body.get("notify_shares", False))
        if record.get("email") or record.get("ntfy") or record.get("webhook"):
            try:
                parse_person(f"member {name}", _person_table(record), self.watch.timezone)
            except ConfigError as err:
                raise CommonsError(str(err)) from None
        elif record["notify_shares"]:
            raise CommonsError("--notify-shares needs a way to reach them: --email, --ntfy or --webhook")
        old = self.store.member(name)
        if old is not None and who != name:
            raise CommonsError(f"{name} is a member already; only {name} can change their details")
        record["joined_ms"] = old["joined_ms"] if old else now_ms
        self.store.run("INSERT OR REPLACE INTO members (name, body, joined_ms) VALUES (?, ?, ?)",
                       (name, json.dumps(record), record["joined_ms"]))  # fmt: skip
        if old is None:
            self._event("member", now_ms, f"{name} joined the garden", name)
        self._refresh()
        return {"member": record, "created": old is None}, []

    def _member_list(self, body: dict[str, Any], who: str, now_ms: int) -> tuple[dict[str, Any], list[Any]]:
        out = [{"name": m["name"], "beds": m.get("beds", []), "reachable": bool(m.get("email") or m.get("ntfy")
                or m.get("webhook")), "notify_shares": m.get("notify_shares", False), "joined_ms": m["joined_ms"],
                "source": "hub"} for m in self.store.members()]  # fmt: skip
        known = {m["name"] for m in out}
        for p in self.watch.people:
            if p.name not in known:
                out.append({"name": p.name, "beds": list(p.beds), "reachable": True, "notify_shares": False,
                            "joined_ms": None, "source": "config"})  # fmt: skip
        rota = self.rules.rota.names()
        for m in out:
            m["in_rota"] = m["name"] in rota
        return {"members": sorted(out, key=lambda m: m["name"])}, []

    def _member_show(self, body: dict[str, Any], who: str, now_ms: int) -> tuple[dict[str, Any], list[Any]]:
        name = _name(body, "name", "the member's name")
        record = self.store.member(name)
        if record is None:
            raise CommonsError(f"no member {name!r}; `garden member list` shows them")
        if who != name:  # contact details are the member's own business
            record = {k: v for k, v in record.items() if k in ("name", "beds", "joined_ms", "notify_shares")}
        counts = {r["kind"]: r["n"] for r in self.store.rows(
            "SELECT kind, COUNT(*) AS n FROM contributions WHERE who = ? GROUP BY kind", (name,))}  # fmt: skip
        return {"member": record, "contributions": counts, "in_rota": name in self.rules.rota.names()}, []

    def _member_remove(self, body: dict[str, Any], who: str, now_ms: int) -> tuple[dict[str, Any], list[Any]]:
        name = _name(body, "name", "the member's name")
        if self.store.member(name) is None:
            raise CommonsError(f"no member {name!r}; `garden member list` shows them")
        self.store.run("DELETE FROM members WHERE name = ?", (name,))
        publish = []
        for claim in self.store.rows("SELECT * FROM water_claims WHERE who = ? AND status = 'open'", (name,)):
            publish += self._end_claim(claim, "released", now_ms, f"{name} left: {claim['bed']} is free again")
        self._event("member", now_ms, f"{name} left the garden", who)
        self._refresh()
        return {"removed": name}, publish

    def _member_export(self, body: dict[str, Any], who: str, now_ms: int) -> tuple[dict[str, Any], list[Any]]:
        name = _name(body, "name", "the member's name")
        if who != name:
            raise CommonsError(f"only {name} can export {name}'s data (run it as GARDEN_USER={name})")
        data: dict[str, Any] = {"name": name, "exported_ms": now_ms, "member": self.store.member(name)}
        for table, _, names, _ in PERSONAL:
            wheres = " OR ".join(f"{c} = ?" for c in names)
            data[table] = self.store.rows(f"SELECT * FROM {table} WHERE {wheres} ORDER BY id",
                                          tuple(name for _ in names))  # fmt: skip
        for hook in self.export_hooks:
            data.update(hook(name))
        return {"export": data}, []

    def _member_erase(self, body: dict[str, Any], who: str, now_ms: int) -> tuple[dict[str, Any], list[Any]]:
        name = _name(body, "name", "the member's name")
        in_config = [w for w in ("people", "rota") if (name in {p.name for p in self.watch.people} if w == "people"
                                                       else name in self.rules.rota.names())]  # fmt: skip
        if in_config:
            where = " and ".join("[[people]]" if w == "people" else "[commons.rota]" for w in in_config)
            raise CommonsError(f"{name} is named in the hub's config ({where}): remove them there and restart the "
                               "hub, then erase")  # fmt: skip
        alias = f"erased-{secrets.token_hex(3)}"
        rows = self._erase_rows(name, alias)
        publish: list[Any] = []
        for claim in self.store.rows("SELECT * FROM water_claims WHERE who = ? AND status IN ('open', 'done')",
                                     (alias,)):  # fmt: skip
            publish.append((self.topics.commons("claim", claim["bed"]), self._claim_state(claim)))
        for share in self.store.rows("SELECT * FROM shares WHERE status = 'open'"):
            publish.append((self.topics.commons("share", f"s{share['id']}"), self._share_state(share)))
        asked = "at their own request" if who == name else f"by {who}"
        self._event(
            "erasure", now_ms, f"a member's data was erased {asked} (now {alias})", None if who == name else who
        )
        self._refresh()
        result: dict[str, Any] = {"alias": alias, "rows": rows}
        # The watch, InfluxDB and the retained messages are not in this transaction: they
        # are done once it is committed (so a failed commit leaves them as they were), and
        # InfluxDB and the broker once more a little later (while InfluxDB is down, every
        # erase_retry_s until it answers, then once more).
        self._after_commit.append(lambda: self._erase_elsewhere(name, alias, result))
        return result, publish

    def _erase_elsewhere(self, name: str, alias: str, result: dict[str, Any]) -> None:
        for hook in self.erase_hooks:  # the watch first, so it republishes nothing with the name
            done = hook(name, alias)
            if done is not None and not done.wait(5.0):
                log.warning("erasure: the watch did not confirm within 5 s")
        points = self._erase_influx(name, alias)
        wait = ERASE_AGAIN_S if points is not None else self.erase_retry_s
        self._erase_again.append((time.monotonic() + wait, name, alias, points is None))
        retained = self._erase_retained(name, alias)
        self.counters["erasures"] += 1
        log.info("erased a member: %d rows, %s InfluxDB points, %d retained messages", result["rows"], points, retained)
        result.update(influx_points=points or 0, influx_pending=points is None, retained=retained)

    def _erase_rows(self, name: str, alias: str) -> int:
        changed = 0
        self.store.run("DELETE FROM members WHERE name = ?", (name,))  # other members' records are theirs
        for table in ("outbox", "outbox_refused"):
            for row in self.store.rows(f"SELECT id, line FROM {table}"):
                new_line = scrub_line(row["line"], name, alias, PERSON_FIELDS)
                if new_line != row["line"]:
                    self.store.run(f"UPDATE {table} SET line = ? WHERE id = ?", (new_line, row["id"]))
                    changed += 1
        for table, keys, names, texts in PERSONAL:
            columns = names + texts
            for row in self.store.rows(f"SELECT * FROM {table}"):
                new = {}
                for c in columns:
                    value = row[c]
                    if isinstance(value, str) and mentions(value, name):
                        new[c] = scrub_text(value, name, alias)
                if new:
                    sets = ", ".join(f"{c} = ?" for c in new)
                    where = " AND ".join(f"{k} = ?" for k in keys)
                    self.store.run(f"UPDATE {table} SET {sets} WHERE {where}",
                                   (*new.values(), *(row[k] for k in keys)))  # fmt: skip
                    changed += 1
        return changed

    def _erase_influx(self, name: str, alias: str) -> int | None:
        """Rewrite every point that names ``name`` (same series and time: InfluxDB overwrites the fields).

        Returns how many, or None when InfluxDB could not be reached or refused."""
        rewritten = 0
        try:
            for measurement in NAMED_MEASUREMENTS:
                tag_keys = {
                    row[0] for s in self.influx.query(f'SHOW TAG KEYS FROM "{measurement}"') for row in s.values
                }
                lines = []
                for series in self.influx.query(f'SELECT * FROM "{measurement}"'):
                    for record in series.records():
                        changed = {
                            k: scrub_text(v, name, alias)
                            for k, v in record.items()
                            if k in PERSON_FIELDS and k not in tag_keys and isinstance(v, str) and mentions(v, name)
                        }
                        if changed:
                            tags = {k: record.get(k) for k in tag_keys}
                            lines.append(line(measurement, tags, changed, int(record["time"])))
                self.influx.write_lines(lines)
                rewritten += len(lines)
        except InfluxError as err:
            log.error("erasure: InfluxDB: %s (tried again in %gs)", err, self.erase_retry_s)
            return None
        return rewritten

    def _erase_retained(self, name: str, alias: str) -> int:
        try:
            retained = read_retained(self.settings.broker, (f"{self.topics.base}/#",), wait_s=1.0)
        except BridgeError as err:
            log.error("erasure: retained messages: %s", err)
            return 0
        count = 0
        for topic, payload in retained.items():
            text = payload.decode("utf-8", "replace")
            if not mentions(text, name):
                continue
            try:
                new = compact_json(scrub_value(json.loads(text), name, alias))
            except ValueError:
                new = scrub_text(text, name, alias).encode()
            self._client.publish(topic, new, qos=1, retain=True)
            count += 1
        return count

    # ------------------------------------------------------------ rota

    def _rota_show(self, body: dict[str, Any], who: str, now_ms: int) -> tuple[dict[str, Any], list[Any]]:
        first = self._day(now_ms)
        if body.get("from"):
            try:
                first = dt.date.fromisoformat(str(body["from"]))
            except ValueError:
                raise CommonsError(f"from: a date as YYYY-MM-DD, got {body['from']!r}"[:100]) from None
            if abs((first - self._day(now_ms)).days) > 3660:
                raise CommonsError("from: within ten years of today")
        days = int(_number(body, "days", 1, 62) or 7)
        return {"configured": not self.rules.rota.empty, "today": list(on_duty(self.rules.rota, self._swaps,
                self._day(now_ms))), "days": self._week(first, days)}, []  # fmt: skip

    def _week(self, first: dt.date, days: int = 7) -> list[dict[str, Any]]:
        with self._lock:
            swaps = list(self._swaps)
        return [{"date": d.isoformat(), "weekday": d.strftime("%A"), "on_duty": list(names)}
                for d, names in week(self.rules.rota, swaps, first, days)]  # fmt: skip

    def _rota_swap(self, body: dict[str, Any], who: str, now_ms: int) -> tuple[dict[str, Any], list[Any]]:
        if self.rules.rota.empty:
            raise CommonsError("this garden keeps no rota ([commons.rota] in the hub's config)")
        other = _name(body, "with", "who takes the duty")
        self._require_member(other)
        made = []
        for key, giver, taker in (("date", who, other), ("back", other, who)):
            if not body.get(key):
                continue
            try:
                day = dt.date.fromisoformat(str(body[key]))
            except ValueError:
                raise CommonsError(f"{key}: a date as YYYY-MM-DD, got {body[key]!r}"[:100]) from None
            if day < self._day(now_ms):
                raise CommonsError(f"{key}: {day} is in the past")
            swap = Swap(day, giver, taker)
            problem = check_swap(self.rules.rota, self._swaps, swap)
            if problem:
                raise CommonsError(problem)
            self.store.run("INSERT INTO swaps (day, giver, taker, ts, who) VALUES (?,?,?,?,?)",
                           (day.isoformat(), giver, taker, now_ms, who))  # fmt: skip
            self._refresh()
            made.append({"date": day.isoformat(), "from": giver, "to": taker})
            self._event("swap", now_ms, f"rota: {taker} takes {giver}'s watering duty on {day:%a %d %b}", who)
        if not made:
            raise CommonsError("date: the day you hand over, as YYYY-MM-DD")
        publish = self._mirror_rota(now_ms)
        return {"swaps": made, "days": self._week(self._day(now_ms))}, publish

    def _mirror_rota(self, now_ms: int) -> list[Any]:
        """The rota from yesterday to two weeks ahead as ``rota`` points (one per day, at local midnight)."""
        today = self._day(now_ms)
        if self.rules.rota.empty:
            return []
        lines = [self._point("rota", {}, {"who": ", ".join(d["on_duty"]) or "-", "weekday": d["weekday"]},
                             self._midnight_ms(dt.date.fromisoformat(d["date"])))
                 for d in self._week(today - dt.timedelta(days=1), 15)]  # fmt: skip
        self._last_ts = {k: v for k, v in self._last_ts.items() if not k.startswith("rota")}
        self.store.mirror(lines)
        self._rota_day = today
        return [(self.topics.commons("rota", "week"), {"ts": now_ms, "days": self._week(today)})]

    # ------------------------------------------------------------ watering

    def _claim_state(self, claim: dict[str, Any]) -> dict[str, Any]:
        return {k: claim[k] for k in ("id", "bed", "who", "status", "claimed_ms", "expires_ms", "done_ms", "litres")}

    def _claim_point(self, claim: dict[str, Any], ts: int) -> None:
        fields: dict[str, FieldValue] = {"claim": int(claim["id"]), "who": claim["who"], "status": claim["status"],
                                         "expires_ms": int(claim["expires_ms"])}  # fmt: skip
        if claim.get("litres") is not None:
            fields["litres"] = float(claim["litres"])
        self.store.mirror([self._point("water_claim", {"bed": claim["bed"]}, fields, ts)])

    def _active_claim(self, bed: str) -> dict[str, Any] | None:
        return self.store.one("SELECT * FROM water_claims WHERE bed = ? AND status IN ('open', 'done') "
                              "ORDER BY id DESC LIMIT 1", (bed,))  # fmt: skip

    def _check_bed(self, bed: str) -> None:
        if self.beds and bed not in self.beds:
            known = ", ".join(sorted(self.beds)[:12])
            raise CommonsError(f"no bed {bed!r} in this garden (beds: {known})")

    def _water_claim(self, body: dict[str, Any], who: str, now_ms: int) -> tuple[dict[str, Any], list[Any]]:
        bed = _name(body, "bed", "the bed")
        self._require_member(who)
        self._check_bed(bed)
        seconds = _number(body, "for_s", 60, MAX_CLAIM_S)
        expires = now_ms + (int(seconds * 1000) if seconds else self.rules.claim_expires_ms)
        held = self._active_claim(bed)
        if held is not None and held["who"] != who:
            what = "watered it, waiting for the moisture to rise" if held["status"] == "done" else "will water it"
            raise CommonsError(f"{bed} is taken: {held['who']} {what} (claimed {self._at(held['claimed_ms'])}, "
                               f"until {self._at(held['expires_ms'])})")  # fmt: skip
        if held is not None and held["status"] == "done":
            raise CommonsError(f"you watered {bed} already; waiting for its moisture to rise until "
                               f"{self._at(held['expires_ms'])}")  # fmt: skip
        if held is not None:
            self.store.run("UPDATE water_claims SET expires_ms = ? WHERE id = ?", (expires, held["id"]))
            claim = {**held, "expires_ms": expires}
            self._claim_point(claim, now_ms)
            return {"claim": self._claim_state(claim), "renewed": True}, [
                (self.topics.commons("claim", bed), self._claim_state(claim))
            ]
        claim_id = self.store.run("INSERT INTO water_claims (bed, who, status, claimed_ms, expires_ms) "
                                  "VALUES (?, ?, 'open', ?, ?)", (bed, who, now_ms, expires))  # fmt: skip
        claim = self.store.one("SELECT * FROM water_claims WHERE id = ?", (claim_id,)) or {}
        self._claim_point(claim, now_ms)
        self._event("claim", now_ms, f"{who} will water {bed} (until {self._at(expires)})", who, bed=bed)
        return {"claim": self._claim_state(claim), "renewed": False, "need": self.beds.get(bed)}, [
            (self.topics.commons("claim", bed), self._claim_state(claim))
        ]

    def _end_claim(self, claim: dict[str, Any], status: str, now_ms: int, text: str,
                   mm: float | None = None) -> list[Any]:  # fmt: skip
        self.store.run("UPDATE water_claims SET status = ?, confirmed_ms = ?, mm = ? WHERE id = ?",
                       (status, now_ms if status == "confirmed" else None, mm, claim["id"]))  # fmt: skip
        ended = {**claim, "status": status}
        self._claim_point(ended, now_ms)
        self._event(f"claim_{status}", now_ms, text, claim["who"], bed=claim["bed"])
        # The bed's retained claim: whoever holds it now (an older claim may have ended).
        current = self._active_claim(claim["bed"])
        return [(self.topics.commons("claim", claim["bed"]), self._claim_state(current) if current else None)]

    def _water_release(self, body: dict[str, Any], who: str, now_ms: int) -> tuple[dict[str, Any], list[Any]]:
        bed = _name(body, "bed", "the bed")
        held = self._active_claim(bed)
        if held is None or held["status"] != "open":
            raise CommonsError(f"{bed} has no open claim")
        if held["who"] != who:
            raise CommonsError(f"{bed} is {held['who']}'s claim, not yours")
        return {"released": bed}, self._end_claim(held, "released", now_ms, f"{who} cannot water {bed} after all")

    def _water_done(self, body: dict[str, Any], who: str, now_ms: int) -> tuple[dict[str, Any], list[Any]]:
        bed = _name(body, "bed", "the bed")
        self._require_member(who)
        self._check_bed(bed)
        litres = _number(body, "litres", 0.1, 10_000)
        held = self._active_claim(bed)
        publish: list[Any] = []
        note = ""
        if held is not None and held["who"] != who:
            note = f" ({held['who']} had claimed it)"
            publish += self._end_claim(held, "released", now_ms, f"{who} watered {bed}: {held['who']}'s claim ends")
            held = None
        probed = self.beds.get(bed, "unknown") != "unknown"
        expires = now_ms + self.rules.confirm_within_ms
        if held is None:
            claim_id = self.store.run("INSERT INTO water_claims (bed, who, status, claimed_ms, expires_ms) "
                                      "VALUES (?, ?, 'done', ?, ?)", (bed, who, now_ms, expires))  # fmt: skip
        else:
            claim_id = held["id"]
        self.store.run("UPDATE water_claims SET status = 'done', done_ms = ?, litres = ?, expires_ms = ? WHERE id = ?",
                       (now_ms, litres, expires, claim_id))  # fmt: skip
        claim = self.store.one("SELECT * FROM water_claims WHERE id = ?", (claim_id,)) or {}
        self._contribute(who, "watering", now_ms, litres or 1.0, "l" if litres else "", bed=bed)
        amount = f" ({litres:g} l)" if litres else ""
        self._event("watering_done", now_ms, f"{who} watered {bed}{amount}{note}", who, bed=bed,
                    numbers={"litres": litres} if litres else None)  # fmt: skip
        if not probed:  # nothing can confirm it: a bed without a probe takes the volunteer's word
            if held is not None:
                self._contribute(who, "claim_honoured", now_ms, bed=bed)
            publish += self._end_claim(claim, "confirmed", now_ms, f"{who} watered {bed} (no probe to confirm it)")
            return {"claim": {**self._claim_state(claim), "status": "confirmed"}, "confirm": "no probe"}, publish
        self._claim_point(claim, now_ms)
        publish.append((self.topics.commons("claim", bed), self._claim_state(claim)))
        return {"claim": self._claim_state(claim), "confirm": f"by {self._at(expires)}"}, publish

    def watering_seen(self, body: dict[str, Any], now_ms: int) -> None:
        """The watch detected a watering: it confirms the bed's claim, if there is one."""
        bed, ts = body.get("bed"), body.get("ts")
        if not isinstance(bed, str) or not isinstance(ts, int) or isinstance(ts, bool) or not 0 < ts < 2**62:
            raise ValueError("a watering event has bed and ts (ms)")
        with self.store.transaction():
            # A rise from a little before the claim (the detection dates it from the first
            # reading of the rise) to one more confirmation window after its deadline.
            claim = self.store.one(
                "SELECT * FROM water_claims WHERE bed = ? AND status IN ('open', 'done', 'unconfirmed') "
                "AND claimed_ms - ? <= ? AND ? <= expires_ms + ? "
                "ORDER BY claimed_ms <= ? DESC, id DESC LIMIT 1",  # made before the rise, else just after
                (bed, CLAIM_LEAD_MS, ts, ts, self.rules.confirm_within_ms, ts))  # fmt: skip
            if claim is None:
                return
            mm = body.get("mm") if isinstance(body.get("mm"), int | float) and math.isfinite(body["mm"]) else None
            who = claim["who"]
            if claim["status"] == "open":  # they went and did not say so: it counts
                self._contribute(who, "watering", now_ms, bed=bed)
            if claim["status"] == "open" or (claim["done_ms"] or 0) > claim["claimed_ms"]:  # claimed first
                self._contribute(who, "claim_honoured", now_ms, bed=bed)
            rise = f": +{mm:.0f} mm" if mm is not None else ""
            publish = self._end_claim(claim, "confirmed", now_ms, f"{who}'s watering of {bed} confirmed{rise}", mm)
        self.counters["claims_confirmed"] += 1
        for topic, state in publish:
            self._client.publish(topic, compact_json(state) if state else b"", qos=1, retain=True)

    def _water_claims(self, body: dict[str, Any], who: str, now_ms: int) -> tuple[dict[str, Any], list[Any]]:
        rows = self.store.rows("SELECT * FROM water_claims WHERE status IN ('open', 'done') OR claimed_ms > ? "
                               "ORDER BY id DESC LIMIT 100", (now_ms - DAY_MS,))  # fmt: skip
        return {"claims": [{**self._claim_state(r), "mm": r["mm"]} for r in rows],
                "on_duty": sorted(self.on_duty(now_ms) or [])}, []  # fmt: skip

    # ------------------------------------------------------------ harvests

    def _harvest_log(self, body: dict[str, Any], who: str, now_ms: int) -> tuple[dict[str, Any], list[Any]]:
        bed = _name(body, "bed", "the bed")
        crop = _name(body, "crop", "the crop").lower()
        self._require_member(who)
        qty = self._quantity(body, "quantity")
        share = self._quantity(body, "share") if body.get("share") else None
        if share is not None and share.unit != qty.unit:
            raise CommonsError(
                f"share: the harvest is in {'grams' if qty.unit == 'g' else 'pieces'}; share the same way"
            )
        if share is not None and share.amount > qty.amount:
            raise CommonsError(f"share: {share} is more than the harvest ({qty})")
        harvest_id = self.store.run("INSERT INTO harvests (ts, bed, crop, amount, unit, who) VALUES (?,?,?,?,?,?)",
                                    (now_ms, bed, crop, qty.amount, qty.unit, who))  # fmt: skip
        fields: dict[str, FieldValue] = {"who": who, "harvest": harvest_id}
        fields["kg" if qty.unit == "g" else "pieces"] = qty.amount / 1000 if qty.unit == "g" else float(qty.amount)
        self.store.mirror([self._point("harvest", {"bed": bed, "crop": crop}, fields, now_ms)])
        self._event("harvest", now_ms, f"{who} harvested {qty} of {crop} from {bed}", who, bed=bed,
                    numbers={"kg": qty.amount / 1000} if qty.unit == "g" else {"quantity": qty.amount})  # fmt: skip
        result: dict[str, Any] = {"harvest": {"id": harvest_id, "bed": bed, "crop": crop, **qty.to_json()}}
        publish: list[Any] = []
        if share is not None:
            pickup, place = _text(body, "pickup"), _text(body, "place")
            seconds = _number(body, "expires_s", 600, 30 * 86_400)
            expires = now_ms + (int(seconds * 1000) if seconds else self.rules.share_expires_ms)
            # By contribution: claims are gathered, then allocated; at the latest when the share closes.
            allocate = None
            if self.rules.share_rule == "by_contribution":
                allocate = min(now_ms + self.rules.allocate_after_ms, expires)
            share_id = self.store.run(
                "INSERT INTO shares (harvest_id, ts, bed, crop, unit, offered, who, pickup, place, expires_ms, "
                "allocate_ms, status) VALUES (?,?,?,?,?,?,?,?,?,?,?, 'open')",
                (harvest_id, now_ms, bed, crop, share.unit, share.amount, who, pickup, place, expires, allocate),
            )
            row = self.store.one("SELECT * FROM shares WHERE id = ?", (share_id,)) or {}
            self._contribute(who, "harvest_shared", now_ms, share.amount / 1000 if share.unit == "g" else share.amount,
                             "kg" if share.unit == "g" else "pcs", bed=bed)  # fmt: skip
            self._share_point(row, now_ms)
            self._event("share", now_ms, f"{who} shares {share} of {crop} from {bed}{_where(pickup, place)} "
                        f"(s{share_id})", who, bed=bed)  # fmt: skip
            self._announce(row, now_ms)
            result["share"] = self._share_state(row)
            publish.append((self.topics.commons("share", f"s{share_id}"), result["share"]))
        return result, publish

    def _quantity(self, body: dict[str, Any], key: str) -> Quantity:
        value = body.get(key)
        try:
            return parse_quantity(str(value) if isinstance(value, str | int | float) else "")
        except ValueError as err:
            raise CommonsError(f"{key}: {err}") from None

    def _claimed(self, share_id: int) -> tuple[int, int]:
        """(amount granted so far, number of claims) of a share."""
        row = self.store.one("SELECT COALESCE(SUM(granted), 0) AS g, COUNT(*) AS n FROM share_claims "
                             "WHERE share_id = ?", (share_id,))  # fmt: skip
        return (int(row["g"]), int(row["n"])) if row else (0, 0)

    def _granted(self, share_id: int) -> int:
        return self._claimed(share_id)[0]

    def _share_state(self, share: dict[str, Any], *, claims: bool = False) -> dict[str, Any]:
        """A share as the CLI and the retained message show it; with each claim only when asked
        (the retained message stays small however many claim, and names no claimant)."""
        granted, count = self._claimed(share["id"])
        state = {
            "id": f"s{share['id']}", "bed": share["bed"], "crop": share["crop"], "unit": share["unit"],
            "offered": share["offered"], "remaining": share["offered"] - granted, "who": share["who"],
            "offered_text": format_amount(share["offered"], share["unit"]),
            "remaining_text": format_amount(share["offered"] - granted, share["unit"]),
            "pickup": share["pickup"], "place": share["place"], "ts": share["ts"], "expires_ms": share["expires_ms"],
            "allocate_ms": share["allocate_ms"], "status": share["status"], "claim_count": count,
        }  # fmt: skip
        if claims:
            state["claims"] = self.store.rows("SELECT who, asked, granted, status FROM share_claims "
                                              "WHERE share_id = ? ORDER BY id", (share["id"],))  # fmt: skip
        return state

    def _share_point(self, share: dict[str, Any], ts: int) -> None:
        state = self._share_state(share)
        scale = 1000 if share["unit"] == "g" else 1
        fields: dict[str, FieldValue] = {
            "who": share["who"], "status": share["status"], "offered": share["offered"] / scale,
            "remaining": state["remaining"] / scale, "unit": "kg" if share["unit"] == "g" else "pcs",
            "text": f"{state['offered_text']} of {share['crop']} from {share['bed']}"
                    f"{_where(share['pickup'], share['place'])}",
            "expires_ms": int(share["expires_ms"]), "claims": state["claim_count"],
        }  # fmt: skip
        tags = {"bed": share["bed"], "crop": share["crop"], "share": f"s{share['id']}"}
        self.store.mirror([self._point("harvest_share", tags, fields, ts)])

    def _announce(self, share: dict[str, Any], now_ms: int) -> None:
        if self.dispatcher is None:
            return
        want = {m["name"] for m in self.store.members() if m.get("notify_shares")} - {share["who"]}
        recipients = [p.recipient for p in self.people() if p.name in want]
        if not recipients:
            return
        state = self._share_state(share)
        notice = Notice(
            key=f"share/s{share['id']}", transition="raised", severity="info",
            title=f"To share: {state['offered_text']} of {share['crop']}",
            body=f"{share['who']} shares {state['offered_text']} of {share['crop']} from {share['bed']}"
                 f"{_where(share['pickup'], share['place'])}. Claim some: garden harvest claim s{share['id']} 500g",
            data={"share": state["id"], "crop": share["crop"], "bed": share["bed"]}, created_ms=now_ms,
        )  # fmt: skip
        self.dispatcher.submit(notice, recipients)
        self.counters["share_notices"] += len(recipients)

    def _find_share(self, body: dict[str, Any]) -> dict[str, Any]:
        raw = str(body.get("share") or "")
        digits = raw[1:] if raw[:1] in ("s", "S") else raw
        known = re.fullmatch(r"[0-9]{1,12}", digits) is not None
        share = self.store.one("SELECT * FROM shares WHERE id = ?", (int(digits),)) if known else None
        if share is None:
            raise CommonsError(f"no share {raw!r}; `garden harvest shares` lists the open ones"[:120])
        return share

    def _share_claim(self, body: dict[str, Any], who: str, now_ms: int) -> tuple[dict[str, Any], list[Any]]:
        share = self._find_share(body)
        self._require_member(who)
        sid = f"s{share['id']}"
        if share["status"] == "expired":
            raise CommonsError(f"{sid} has closed (it expired {self._at(share['expires_ms'])})")
        if share["who"] == who:
            raise CommonsError(f"{sid} is your own share")
        ask = self._quantity(body, "quantity")
        if ask.unit != share["unit"]:
            raise CommonsError(
                f"{sid} is shared {'by weight: ask e.g. 500g' if share['unit'] == 'g' else 'in pieces: ask e.g. 3'}"
            )
        remaining = share["offered"] - self._granted(share["id"])
        if share["allocate_ms"] is not None:  # by contribution: gathered, then allocated
            if self.store.one("SELECT id FROM share_claims WHERE share_id = ? AND who = ? AND status = 'pending'",
                              (share["id"], who)):  # fmt: skip
                raise CommonsError(f"you have already asked for part of {sid}; it is allocated "
                                   f"{self._at(share['allocate_ms'])}")  # fmt: skip
            self.store.run("INSERT INTO share_claims (share_id, ts, who, asked, granted, status) "
                           "VALUES (?,?,?,?,0,'pending')", (share["id"], now_ms, who, ask.amount))  # fmt: skip
            self._event("share_claim", now_ms, f"{who} asks for {ask} of {sid}", who, bed=share["bed"])
            return {"share": sid, "asked": ask.to_json(), "granted": None, "status": "pending",
                    "allocate_ms": share["allocate_ms"],
                    "message": f"asked for {ask} of {sid}; shares are allocated {self._at(share['allocate_ms'])}, "
                               "by contribution (the garden's rule)"}, [
                (self.topics.commons("share", sid), self._share_state(share))]  # fmt: skip
        grant = first_come(remaining, ask.amount) if share["status"] == "open" else 0
        if grant == 0:
            takers = self.store.one("SELECT COUNT(DISTINCT who) AS n FROM share_claims WHERE share_id = ? "
                                    "AND granted > 0", (share["id"],))  # fmt: skip
            raise CommonsError(f"{sid} is all claimed: {format_amount(share['offered'], share['unit'])} "
                               f"by {_people(takers['n'] if takers else 0)}; nothing left for you")  # fmt: skip
        self.store.run("INSERT INTO share_claims (share_id, ts, who, asked, granted, status) "
                       "VALUES (?,?,?,?,?,'granted')", (share["id"], now_ms, who, ask.amount, grant))  # fmt: skip
        got = format_amount(grant, share["unit"])
        left = remaining - grant
        if left == 0:
            self.store.run("UPDATE shares SET status = 'taken' WHERE id = ?", (share["id"],))
            share = {**share, "status": "taken"}
        self._share_point(share, now_ms)
        self._event("share_claim", now_ms, f"{who} claimed {got} of {sid} ({share['crop']})", who, bed=share["bed"],
                    numbers={"kg": grant / 1000} if share["unit"] == "g" else {"quantity": grant})  # fmt: skip
        message = f"you have {got} of {sid}" + (f" (you asked {ask}: that was what was left)" if grant < ask.amount
                                                 else "")  # fmt: skip
        state = self._share_state(share)
        return {"share": sid, "asked": ask.to_json(), "granted": grant, "granted_text": got, "status": "granted",
                "remaining": left, "message": message, "pickup": share["pickup"], "place": share["place"]}, [
            (self.topics.commons("share", sid), state if share["status"] == "open" else None)]  # fmt: skip

    def _share_collected(self, body: dict[str, Any], who: str, now_ms: int) -> tuple[dict[str, Any], list[Any]]:
        share = self._find_share(body)
        sid = f"s{share['id']}"
        mine = self.store.rows("SELECT * FROM share_claims WHERE share_id = ? AND who = ? AND granted > 0 "
                               "AND collected_ms IS NULL", (share["id"], who))  # fmt: skip
        if not mine:
            raise CommonsError(f"you have nothing of {sid} waiting to be collected")
        total = sum(r["granted"] for r in mine)
        self.store.run("UPDATE share_claims SET collected_ms = ?, status = 'collected' WHERE share_id = ? AND who = ? "
                       "AND granted > 0 AND collected_ms IS NULL", (now_ms, share["id"], who))  # fmt: skip
        scale = 1000 if share["unit"] == "g" else 1
        self._contribute(who, "share_picked_up", now_ms, total / scale, "kg" if scale == 1000 else "pcs",
                         bed=share["bed"])  # fmt: skip
        self._event("share_collected", now_ms, f"{who} picked up {format_amount(total, share['unit'])} of {sid}",
                    who, bed=share["bed"])  # fmt: skip
        return {"share": sid, "collected": total, "collected_text": format_amount(total, share["unit"])}, []

    def _shares(self, body: dict[str, Any], who: str, now_ms: int) -> tuple[dict[str, Any], list[Any]]:
        if body.get("all"):
            rows = self.store.rows("SELECT * FROM shares ORDER BY id DESC LIMIT 100")
        else:
            rows = self.store.rows("SELECT * FROM shares WHERE status = 'open' ORDER BY id")
        return {"shares": [self._share_state(r, claims=True) for r in rows], "rule": self.rules.share_rule}, []

    def _harvest_list(self, body: dict[str, Any], who: str, now_ms: int) -> tuple[dict[str, Any], list[Any]]:
        days = _number(body, "days", 1, 3660) or 30
        rows = self.store.rows("SELECT * FROM harvests WHERE ts > ? ORDER BY ts DESC LIMIT 500",
                               (now_ms - int(days * DAY_MS),))  # fmt: skip
        totals: dict[str, dict[str, int]] = {}
        for r in rows:
            key = f"{r['crop']}/{r['bed']}"
            totals.setdefault(key, {"g": 0, "pcs": 0})[r["unit"]] += r["amount"]
        return {"harvests": [{**r, "text": format_amount(r["amount"], r["unit"])} for r in rows],
                "totals": [{"crop": k.split("/")[0], "bed": k.split("/")[1], "kg": v["g"] / 1000, "pieces": v["pcs"]}
                           for k, v in sorted(totals.items())], "days": days}, []  # fmt: skip

    # ------------------------------------------------------------ contributions

    def _me(self, body: dict[str, Any], who: str, now_ms: int) -> tuple[dict[str, Any], list[Any]]:
        month = self._midnight_ms(self._day(now_ms).replace(day=1))
        rows = self.store.rows("SELECT kind, COUNT(*) AS n, SUM(amount) AS amount, SUM(ts >= ?) AS this_month "
                               "FROM contributions WHERE who = ? GROUP BY kind", (month, who))  # fmt: skip
        recent = self.store.rows("SELECT ts, kind, amount, unit, bed, node, note FROM contributions WHERE who = ? "
                                 "ORDER BY ts DESC LIMIT 10", (who,))  # fmt: skip
        claims = self.store.rows("SELECT * FROM water_claims WHERE who = ? AND status IN ('open', 'done', "
                                 "'unconfirmed') ORDER BY id DESC LIMIT 20", (who,))  # fmt: skip
        shares = self.store.rows("SELECT c.share_id, c.asked, c.granted, c.status, s.crop, s.unit, s.pickup, s.place "
                                 "FROM share_claims c JOIN shares s ON s.id = c.share_id WHERE c.who = ? "
                                 "AND c.collected_ms IS NULL ORDER BY c.id DESC LIMIT 20", (who,))  # fmt: skip
        return {"who": who, "member": self._is_member(who), "on_duty_today": who in (self.on_duty(now_ms) or ()),
                "contributions": {r["kind"]: {"count": r["n"], "amount": r["amount"], "this_month": r["this_month"]}
                                  for r in rows},
                "recent": recent, "claims": [self._claim_state(c) for c in claims],
                "share_claims": shares}, []  # fmt: skip

    def _totals(self, body: dict[str, Any], who: str, now_ms: int) -> tuple[dict[str, Any], list[Any]]:
        months = int(_number(body, "months", 1, 120) or 6)
        by_member = bool(body.get("by_member"))
        if by_member and not self.rules.league_table:
            raise CommonsError("this garden shows no totals per person ([commons] league_table = false)")
        today = self._day(now_ms)
        first = today.replace(day=1)
        for _ in range(months - 1):
            first = (first - dt.timedelta(days=1)).replace(day=1)
        out: dict[str, dict[str, Any]] = {}
        people: dict[str, Counter[str]] = {}
        for r in self.store.rows("SELECT ts, who, kind, amount FROM contributions WHERE ts >= ?",
                                 (self._midnight_ms(first),)):  # fmt: skip
            month = self._day(r["ts"]).strftime("%Y-%m")
            slot = out.setdefault(month, {k: {"count": 0, "amount": 0.0} for k in CONTRIBUTION_KINDS})
            slot.setdefault(r["kind"], {"count": 0, "amount": 0.0})
            slot[r["kind"]]["count"] += 1
            slot[r["kind"]]["amount"] += r["amount"]
            people.setdefault(r["who"], Counter())[r["kind"]] += 1
        result: dict[str, Any] = {"months": dict(sorted(out.items())), "kinds": list(CONTRIBUTION_KINDS),
                                  "contributors": len(people)}  # fmt: skip
        if by_member:
            result["by_member"] = {w: dict(c) for w, c in sorted(people.items())}
        return result, []

    def _node_maintained(self, body: dict[str, Any], who: str, now_ms: int) -> tuple[dict[str, Any], list[Any]]:
        node = _name(body, "node", "the node")
        self._require_member(who)
        what = body.get("what")
        if what not in MAINTENANCE:
            raise CommonsError(f"what: one of {', '.join(MAINTENANCE)}")
        note = _text(body, "note")
        self._contribute(who, "node_maintained", now_ms, node=node, note=f"{what}: {note}" if note else str(what))
        self._event("maintenance", now_ms, f"{who} maintained {node}: {what}" + (f" ({note})" if note else ""), who,
                    node=node)  # fmt: skip
        return {"node": node, "what": what, "logged_ms": now_ms}, []

    def config_event(self, body: dict[str, Any]) -> None:
        """A volunteer's ``garden node calibrate`` counts as maintaining the node."""
        who, node, change = body.get("who"), body.get("node"), body.get("change")
        if not (isinstance(who, str) and NAME_RE.fullmatch(who) and isinstance(node, str) and NAME_RE.fullmatch(node)):
            return
        # node_admin names the sensors: {"calibration.sm0": {...}}
        if not isinstance(change, dict) or not any(str(k).split(".")[0] == "calibration" for k in change):
            return
        # The volunteer's own clock, within a day of the hub's; else the hub's.
        now_ms = self._clock_ms()
        ts = body.get("ts")
        if not isinstance(ts, int) or isinstance(ts, bool) or abs(ts - now_ms) > DAY_MS:
            ts = now_ms
        with self.store.transaction():
            self._contribute(who, "node_maintained", ts, node=node, note="calibration")

    # ------------------------------------------------------------ time passing

    def tick(self, now_ms: int) -> None:
        """Claims lapse, waterings go unconfirmed, shares are allocated and expire, the rota turns a day."""
        publish: list[Any] = []
        with self.store.transaction():
            for c in self.store.rows("SELECT * FROM water_claims WHERE status = 'open' AND expires_ms <= ?", (now_ms,)):
                publish += self._end_claim(
                    c, "expired", now_ms, f"{c['who']}'s claim on {c['bed']} lapsed: no watering seen; it is free again"
                )
            for c in self.store.rows("SELECT * FROM water_claims WHERE status = 'done' AND expires_ms <= ?", (now_ms,)):
                publish += self._end_claim(
                    c,
                    "unconfirmed",
                    now_ms,
                    f"no moisture rise in {c['bed']} after {c['who']}'s watering "
                    f"{self._at(c['done_ms'] or c['claimed_ms'])}: check the probe, or the bed",
                )
            for s in self.store.rows("SELECT * FROM shares WHERE status = 'open' AND allocate_ms IS NOT NULL "
                                     "AND allocate_ms <= ?", (now_ms,)):  # fmt: skip
                publish += self._allocate(s, now_ms)
            for s in self.store.rows("SELECT * FROM shares WHERE status = 'open' AND expires_ms <= ?", (now_ms,)):
                left = s["offered"] - self._granted(s["id"])
                self.store.run("UPDATE shares SET status = 'expired' WHERE id = ?", (s["id"],))
                s = {**s, "status": "expired"}
                self._share_point(s, now_ms)
                self._event("share_expired", now_ms, f"s{s['id']} ({s['crop']}) closed: "
                            f"{format_amount(left, s['unit'])} unclaimed", s["who"], bed=s["bed"])  # fmt: skip
                publish.append((self.topics.commons("share", f"s{s['id']}"), None))
            if self._rota_day != self._day(now_ms):
                publish += self._mirror_rota(now_ms)
        for topic, state in publish:
            self._client.publish(topic, compact_json(state) if state else b"", qos=1, retain=True)
        now = time.monotonic()
        due = [e for e in self._erase_again if e[0] <= now]
        self._erase_again = [e for e in self._erase_again if e[0] > now]
        for _, name, alias, failed in due:
            done = self._erase_influx(name, alias)
            if done is None:
                self._erase_again.append((now + self.erase_retry_s, name, alias, True))
                continue
            self._erase_retained(name, alias)  # an alert republished meanwhile
            if failed:  # InfluxDB is back: once more, for the ingest's spooled points
                self._erase_again.append((now + ERASE_AGAIN_S, name, alias, False))

    def _allocate(self, share: dict[str, Any], now_ms: int) -> list[Any]:
        since = now_ms - self.rules.contribution_days * DAY_MS
        pending = self.store.rows("SELECT * FROM share_claims WHERE share_id = ? AND status = 'pending' ORDER BY id",
                                  (share["id"],))  # fmt: skip
        weights = {r["who"]: 1.0 + r["n"] for r in self.store.rows(
            "SELECT who, COUNT(*) AS n FROM contributions WHERE ts >= ? AND kind != 'share_picked_up' GROUP BY who",
            (since,))}  # picking up a share is receiving, not giving: it earns no weight  # fmt: skip
        asks = [Ask(str(r["id"]), r["who"], r["asked"], weights.get(r["who"], 1.0)) for r in pending]
        granted = by_weight(share["offered"] - self._granted(share["id"]), asks)
        for r in pending:
            self.store.run("UPDATE share_claims SET granted = ?, status = ? WHERE id = ?",
                           (granted[str(r["id"])], "granted" if granted[str(r["id"])] else "none",
                            r["id"]))  # fmt: skip
        status = "taken" if share["offered"] - self._granted(share["id"]) <= 0 else "open"
        self.store.run("UPDATE shares SET allocate_ms = NULL, status = ? WHERE id = ?", (status, share["id"]))
        share = {**share, "allocate_ms": None, "status": status}
        self._share_point(share, now_ms)
        sid = f"s{share['id']}"
        parts = ", ".join(f"{r['who']} {format_amount(granted[str(r['id'])], share['unit'])}" for r in pending)
        self._event("share_allocated", now_ms, f"{sid} allocated by contribution: {parts or 'no claims'}",
                    share["who"], bed=share["bed"])  # fmt: skip
        return [(self.topics.commons("share", sid), self._share_state(share) if status == "open" else None)]

    # ------------------------------------------------------------ InfluxDB mirror

    def flush(self) -> None:
        """Send the outbox to InfluxDB; on failure, keep it and try again with backoff."""
        pending = self.store.pending()
        if not pending:
            self._next_flush = time.monotonic() + 1.0
            return
        try:
            self.influx.write_lines([text for _, text in pending])
        except InfluxRejected as err:  # a line InfluxDB will never take: set it aside, send the rest
            self._set_aside(pending, err)
            return
        except InfluxError as err:
            if not self._influx_down:
                log.warning("commons: InfluxDB unavailable, %d events wait in the outbox: %s", len(pending), err)
            self._influx_down = True
            self._flush_backoff = min(30.0, self._flush_backoff * 2)
            self._next_flush = time.monotonic() + self._flush_backoff
            return
        self.store.sent(pending[-1][0])
        if self._influx_down:
            log.info("commons: InfluxDB back; the outbox is sent")
        self._influx_down = False
        self._flush_backoff = 1.0
        self._next_flush = time.monotonic() + (0.0 if len(pending) >= 1000 else 1.0)

    def _set_aside(self, pending: list[tuple[int, str]], err: Exception) -> None:
        """Send the lines one by one; keep those InfluxDB refuses in ``outbox_refused``, with why."""
        for row_id, text in pending:
            try:
                self.influx.write_lines([text])
            except InfluxRejected as refused:
                self.store.run("INSERT INTO outbox_refused (line, error) VALUES (?, ?)", (text, str(refused)[:300]))
                self.counters["mirror_refused"] += 1
                log.warning("commons: InfluxDB refused an event line, kept in outbox_refused: %s", refused)
            except InfluxError:
                return  # down after all: the rest waits in the outbox
            self.store.sent(row_id)
        log.info("commons: a batch InfluxDB refused (%s) was sent line by line", err)


def _people(n: int) -> str:
    return "1 person" if n == 1 else f"{n} people"


def _where(pickup: str, place: str) -> str:
    return (f", pickup {pickup}" if pickup else "") + (f" at {place}" if place else "")


def _person_table(member: dict[str, Any]) -> dict[str, Any]:
    table = {k: member[k] for k in ("name", "email", "ntfy", "webhook", "quiet_hours", "timezone") if member.get(k)}
    table["beds"] = member.get("beds") or ["*"]
    return table
