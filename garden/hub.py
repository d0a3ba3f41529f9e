"""The hub's ingester (``garden hub run``): MQTT in, InfluxDB out, nothing lost.

- **Durable before acked.** The hub subscribes with a persistent MQTT v5
  session (fixed client id, session expiry) at QoS 1 and acknowledges each
  message itself (paho's manual ack) only once its points are durable:
  written to InfluxDB, or committed to the hub's local spool while InfluxDB
  is away. A crash before that leaves the message with the broker, which
  sends it again.
- **In order.** While the spool holds anything, new batches go behind it,
  and a drainer writes the spool to InfluxDB oldest first when it answers.
- **Idempotent.** Points carry the source's timestamp, so a redelivered
  message overwrites its own points.
- **Batched** by size (``batch_size`` messages) and time (``batch_ms``).
- **Refused messages** are counted by reason, logged, acknowledged (they
  would never get better) and kept in the dead-letter store.
- **Health** is published as retained ``garden/<g>/hub/<id>/status`` (with a
  last will) and written to InfluxDB as ``hub_ingest``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from firmware_bridge.backoff import Backoff
from firmware_bridge.errors import SpoolError
from firmware_bridge.messages import compact_json
from firmware_bridge.mqtt_link import client_for
from firmware_bridge.spool import OverflowPolicy, Spool
from firmware_bridge.topics import ANY_GARDEN, Topics
from garden import __version__
from garden.dead_letters import DeadLetterStore
from garden.errors import GardenError
from garden.influx import Influx, InfluxError, InfluxRejected
from garden.ingest import (
    Points,
    Refused,
    alert_points,
    bridge_status_points,
    event_points,
    need_points,
    node_status_points,
    telemetry_points,
)
from garden.mqtt_reads import BatchReadClient
from garden.points import line
from garden.rollups import DAILY, HOURLY, roll_up
from garden.settings import HubSettings

log = logging.getLogger(__name__)


ROLLUP_EVERY_S = 300.0
MAX_ROLLUP_BACK_MS = 400 * 86_400_000  # the raw retention: nothing older is there to roll up


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Received(NamedTuple):
    """One message as paho's thread hands it over. A named tuple, not a frozen
    dataclass: it is made once per message on the hot path, and costs a tenth."""

    mid: int
    qos: int
    topic: str
    payload: bytes
    received_ms: int
    connection: int  # which connection it came on: a packet id means nothing on another


# Put into the inbox to wake the loop; never handled as a message.
_WAKE = Received(0, 0, "", b"", 0, -1)


@dataclass(slots=True)
class Parsed:
    """A batch as the parser leaves it for the main loop: its lines, the readings'
    own times, its refusals (counted by reason, and kept as dead letters)."""

    batch: list[Received]
    lines: list[str] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    dead: list[tuple[int, str, str, str, bytes]] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    counted: bool = False  # its counters are in (the first try)


# An MQTT PUBACK with reason "success" and no properties: the same 4 bytes in
# MQTT 3.1.1 and 5 (v5 lets the reason code be left out when it is success).
_PUBACK = struct.Struct("!BBH")
_PUBACK_TYPE = 0x40


class Hub:
    """Runs until :meth:`request_stop`."""

    def __init__(self, settings: HubSettings, *, clock_ms: Callable[[], int] = wall_ms) -> None:
        self.settings = settings
        self.topics = Topics(settings.garden)
        # What it subscribes to: this garden's topics, or every garden's on a regional hub.
        self.sources = Topics(ANY_GARDEN) if settings.all_gardens else self.topics
        self._clock_ms = clock_ms
        self._stop = threading.Event()
        self.influx = Influx(settings.influx)
        self.spool = Spool(settings.spool_path, max_rows=settings.spool_max_rows, overflow=OverflowPolicy.DROP_OLDEST)
        self.dead = DeadLetterStore(settings.data_dir / "hub-dead-letters.sqlite3")
        self.counters: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self._inbox: queue.SimpleQueue[Received] = queue.SimpleQueue()
        self._connected = threading.Event()
        self._drain_backoff = Backoff(base=0.5, cap=5.0)
        self._drain_next = 0.0
        self._influx_ok = True
        self._last_reading_ts: int | None = None
        self._status_sent = 0.0
        self._rate_mark = (time.monotonic(), 0)
        self._connection = 0
        self._unstored: Parsed | None = None
        # Batches parsed by the parser thread, waiting for the main loop to store and
        # acknowledge them: one waits while the next is parsed (see run()).
        self._parsed: queue.Queue[Parsed | None] = queue.Queue(maxsize=1)
        self._parser: threading.Thread | None = None
        # Why the last batch could not be made durable (a full disk, a broken
        # spool), and since when: in the status, where the watch raises the alert.
        self._storage_problem: tuple[str, int] | None = None
        # Spool rows up to this id are in InfluxDB; they are deleted from the spool
        # when the disk lets us (a full disk may refuse even a delete). Until then a
        # restart writes them again, which overwrites the same points.
        self._drained_upto = 0
        self._oldest_unrolled: int | None = None
        self._rollup_next = time.monotonic() + 30.0
        self._located: dict[str, tuple[str, str, str, str] | None] = {}
        self._client = self._make_client()

    # ------------------------------------------------------------------ MQTT

    @property
    def _status_topic(self) -> str:
        return self.topics.hub_status(self.settings.hub_id)

    def _subscriptions(self) -> list[str]:
        t = self.sources
        topics = [t.all_telemetry]
        if self.settings.shared_group:
            # Several hubs share one stream; each message goes to one of them.
            topics = [f"$share/{self.settings.shared_group}/{t}" for t in topics]
        return [*topics, t.all_node_status, t.all_bridge_status, t.all_events, t.all_alerts, t.all_bed_needs]

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client_id = f"garden-hub-{s.garden}-{s.hub_id}"
        client = client_for(s.broker, client_id, manual_ack=True, client_class=BatchReadClient)
        client.reconnect_delay_set(min_delay=1, max_delay=8)
        client.will_set(self._status_topic, compact_json({"state": "offline", "hub": s.hub_id}), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, reason: ReasonCode, props: object
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the hub: %s", reason)
            return
        log.info("connected to %r (session present: %s)", self.settings.broker, flags.session_present)
        # Packet ids belong to a connection. Acking, on this one, an id from the
        # last could acknowledge a different message the broker sent under that
        # id: messages from the old connection are stored but not acked, and the
        # broker sends them again (their second write overwrites the first).
        self._connection += 1
        client.subscribe([(t, 1) for t in self._subscriptions()])
        self._status_sent = 0.0  # say "online" now, after the SUBSCRIBE on the same connection
        self._connected.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: ReasonCode, props: object
    ) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            log.warning("broker connection lost: %s", reason)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        self._inbox.put(
            Received(
                message.mid, message.qos, message.topic, bytes(message.payload), self._clock_ms(), self._connection
            )
        )

    # --------------------------------------------------------------- running

    def request_stop(self) -> None:
        self._stop.set()
        # Wake the loops: CPython 3.11's SimpleQueue.get(timeout) can wait forever when
        # a signal interrupts it just before its deadline (firmware_bridge/service.py).
        self._inbox.put(_WAKE)
        with contextlib.suppress(queue.Full):
            self._parsed.put_nowait(None)

    def run(self) -> None:
        s = self.settings
        log.info(
            "hub %s for %s: broker %r, %r, spool %s (%d batches waiting)",
            s.hub_id,
            "every garden on the broker (regional)" if s.all_gardens else f"garden {s.garden}",
            s.broker,
            s.influx,
            s.spool_path,
            self.spool.depth,
        )
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = s.session_expiry_s
        # Messages stay unacknowledged until their batch is durable, so let
        # the broker have several batches in flight (MQTT v5 Receive Maximum).
        props.ReceiveMaximum = min(65535, 4 * s.batch_size)
        self._client.connect_async(s.broker.host, s.broker.port, keepalive=30, clean_start=False, properties=props)
        self._client.loop_start()
        # Parsing a batch takes the GIL; writing one to InfluxDB mostly waits on the
        # server. So a thread parses the next batch while this one stores the last:
        # the same batches, in the same order, each acknowledged only once durable.
        self._parser = threading.Thread(target=self._parse_loop, name="parse", daemon=True)
        self._parser.start()
        try:
            while not self._stop.is_set():
                self.step()
        finally:
            self._shutdown()

    def step(self) -> None:
        if self._unstored is not None:
            # The last batch could not be made durable (disk full?): try it again
            # before taking more, so what waits unacknowledged stays bounded.
            # Drain first: writing the spool to InfluxDB frees the space the
            # batch needs, and with the spool empty the batch goes straight there.
            self._drain()
            parsed, self._unstored = self._unstored, None
            self._commit(parsed)
            if self._unstored is not None:
                self._maybe_status()
                self._stop.wait(1.0)
                return
        if self._parser is not None:
            try:
                ready = self._parsed.get(timeout=0.1)
            except queue.Empty:
                ready = None
            if ready is not None:
                self._commit(ready)
        else:  # driven step by step (tests): parse here
            batch = self._collect()
            if batch:
                self._commit(self._parse(batch))
        self._drain()
        self._maybe_status()
        self._maybe_rollup()

    def _parse_loop(self) -> None:
        """The parser thread: batches from the inbox, parsed, handed to the main loop in order."""
        while not self._stop.is_set():
            batch = self._collect()
            if not batch:
                continue
            parsed = self._parse(batch)
            while not self._stop.is_set():
                try:
                    self._parsed.put(parsed, timeout=0.2)
                    break
                except queue.Full:
                    continue

    def _collect(self) -> list[Received]:
        """Up to batch_size messages, waiting at most until batch_ms after the first arrived."""
        try:
            first = self._inbox.get(timeout=0.1)
        except queue.Empty:
            return []
        if first is _WAKE:
            return []
        batch = [first]
        size, inbox = self.settings.batch_size, self._inbox
        # batch_ms counts from when the first message arrived, not from now: what
        # queued up while the last batch was being stored has waited long enough.
        deadline_ms = first.received_ms + self.settings.batch_ms
        while len(batch) < size:
            try:  # what is there already, without a clock read per message
                item = inbox.get_nowait()
            except queue.Empty:
                remaining = (deadline_ms - self._clock_ms()) / 1000
                if remaining <= 0:
                    break
                try:
                    item = inbox.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is _WAKE:
                break
            batch.append(item)
        return batch

    # -------------------------------------------------------------- handling

    def _locate(self, topic: str) -> tuple[str, str, str, str] | None:
        """:meth:`Topics.locate`, remembered: the same few topics come with every batch."""
        try:
            return self._located[topic]
        except KeyError:
            pass
        if len(self._located) >= 10_000:  # topics from anything that can publish: bounded
            self._located.clear()
        where = self._located[topic] = self.sources.locate(topic)
        return where

    def _points(self, message: Received) -> Points:
        where = self._locate(message.topic)
        if where is None:
            raise Refused("unknown_topic", message.topic[:80])
        garden, kind, name, leaf = where
        if kind == "node" and leaf == "telemetry":
            return telemetry_points(garden, name, message.payload, message.received_ms)
        if kind == "node" and leaf == "status":
            return node_status_points(garden, name, message.payload, message.received_ms)
        if kind == "bridge" and leaf == "status":
            return bridge_status_points(garden, name, message.payload, message.received_ms)
        if kind == "event":
            return event_points(garden, name, message.payload, message.received_ms)
        if kind == "alert" and leaf:
            return alert_points(garden, name, leaf, message.payload, message.received_ms)
        if kind == "bed" and leaf == "need":
            return need_points(garden, name, message.payload, message.received_ms)
        raise Refused("unknown_topic", message.topic[:80])

    def _handle(self, batch: list[Received]) -> None:
        """Parse, store and acknowledge one batch, here and now."""
        self._commit(self._parse(batch))

    def _parse(self, batch: list[Received]) -> Parsed:
        """The batch's points and refusals. Touches nothing the main loop uses."""
        parsed = Parsed(batch)
        lines, times, dead, refused = parsed.lines, parsed.times, parsed.dead, parsed.refused
        for message in batch:
            try:
                points = self._points(message)
            except Refused as err:
                refused[err.reason] += 1
                log.warning("refused a message on %s: %s", message.topic, err)
                dead.append((message.received_ms, message.topic, err.reason, err.detail, message.payload))
                continue
            except (ValueError, ArithmeticError, RecursionError, TypeError) as err:
                # What the checks did not foresee (a 400-digit number, JSON nested
                # ten thousand deep): refused all the same, never the end of the loop.
                refused["invalid"] += 1
                log.warning("refused a message on %s: %s: %s", message.topic, type(err).__name__, err)
                dead.append(
                    (message.received_ms, message.topic, "invalid", f"{type(err).__name__}: {err}", message.payload)
                )
                continue
            lines += points.lines
            if points.ts_ms is not None:
                times.append(points.ts_ms)
        return parsed

    def _commit(self, parsed: Parsed) -> None:
        """Make a parsed batch durable, then acknowledge it; if it cannot be, keep it to retry."""
        batch, times = parsed.batch, parsed.times
        if not parsed.counted:  # once, however many tries it takes
            parsed.counted = True
            if times:
                self._last_reading_ts = max(self._last_reading_ts or 0, max(times))
                self._oldest_unrolled = min(self._oldest_unrolled or times[0], min(times))
                self.counters["readings"] += len(times)
            self.counters["received"] += len(batch)
            self.refused.update(parsed.refused)
        try:
            if parsed.dead:
                self.dead.add(parsed.dead)
                parsed.dead = []  # kept: a retry must not keep them twice
            self._store(parsed.lines)
        except (SpoolError, GardenError) as err:
            # Nothing durable: leave the messages unacknowledged; the broker
            # sends them again after a reconnect or restart.
            if self._storage_problem is None:
                self._storage_problem = (str(err), self._clock_ms())
                log.error("batch of %d messages not stored, not acknowledged; will retry: %s", len(batch), err)
            self.counters["unstored_batches"] += 1
            self._unstored = parsed
            return
        if self._storage_problem is not None:
            log.warning("storing again after %.0f s", (self._clock_ms() - self._storage_problem[1]) / 1000)
            self._storage_problem = None
            self._status_sent = 0.0  # tell the watch now
        connection = self._connection
        mids = [m.mid for m in batch if m.qos == 1 and m.connection == connection]
        others = sum(1 for m in batch if m.qos and m.connection != connection)
        self._ack(mids)
        self.counters["acked"] += len(mids)
        if others:
            self.counters["left_for_redelivery"] += others

    def _ack(self, mids: list[int]) -> None:
        """Acknowledge a durable batch's QoS 1 messages, all in one write.

        ``Client.ack`` queues one packet per message, and each wakes paho's
        network thread through its socket pair: a system call and a trip round
        its loop per message, on the core the hub is bound by. The PUBACKs go
        instead as one buffer through the queue ``ack`` itself uses (the same
        bytes on the wire). paho keeps no state for a received QoS 1 message
        once it is handed over, so there is nothing else to update.
        """
        queue_packet = getattr(self._client, "_packet_queue", None)
        if queue_packet is None or len(mids) < 2:  # a paho without it: one at a time
            for mid in mids:
                self._client.ack(mid, 1)
            return
        pack = _PUBACK.pack
        queue_packet(_PUBACK_TYPE, b"".join([pack(_PUBACK_TYPE, 2, mid) for mid in mids]), 0, 0)

    def _store(self, lines: list[str]) -> None:
        """Make ``lines`` durable: in InfluxDB, or in the spool behind what waits there."""
        if not lines:
            return
        if self._influx_ok and not self._backlog():
            try:
                self._write(lines)
                return
            except InfluxError as err:
                self._influx_down(err)
        self.spool.append([("", "\n".join(lines).encode())])
        self.counters["spooled_points"] += len(lines)

    def _write(self, lines: list[str]) -> None:
        """Write to InfluxDB; points it refuses as data are dead-lettered one by one."""
        try:
            self.influx.write_lines(lines)
            self.counters["written_points"] += len(lines)
        except InfluxRejected:
            good = 0
            for one in lines:
                try:
                    self.influx.write_lines([one])
                    good += 1
                except InfluxRejected as err:
                    self.refused["influx_rejected"] += 1
                    log.warning("InfluxDB refused a point: %s", err)
                    self.dead.add([(self._clock_ms(), "influx", "influx_rejected", err.problem, one.encode())])
            self.counters["written_points"] += good

    def _influx_down(self, err: InfluxError) -> None:
        if self._influx_ok:
            log.error("InfluxDB unavailable, spooling: %s", err)
        self._influx_ok = False
        self._drain_next = time.monotonic() + self._drain_backoff.next_delay()

    def _backlog(self) -> bool:
        """Are there spooled batches not yet written to InfluxDB?"""
        return self.spool.depth > 0 and bool(self.spool.pending(self._drained_upto, 1))

    def _drain(self) -> None:
        """Write spooled batches, oldest first, while InfluxDB answers."""
        if self.spool.depth == 0 or time.monotonic() < self._drain_next:
            return
        for _ in range(50):
            rows = self.spool.pending(self._drained_upto, 20)
            if not rows:
                break
            try:
                for row_id, _topic, payload in rows:
                    self._write(payload.decode().split("\n"))
                    self._drained_upto = row_id
            except InfluxError as err:
                self._influx_down(err)
                return
            except GardenError as err:  # the dead letters' store (a full disk): next round
                log.error("%s", err)
                return
            finally:
                self._forget_drained()
            if self._stop.is_set():
                return
        self._forget_drained()
        if not self._influx_ok:
            log.info("InfluxDB is back; %d spooled batches written", self._drained_upto)
        self._influx_ok = True
        self._drain_backoff.reset()

    def _forget_drained(self) -> None:
        """Delete the spooled batches InfluxDB has; a refusal (a full disk) waits for the next round."""
        done = [row_id for row_id, _, _ in self.spool.pending(0, 1000) if row_id <= self._drained_upto]
        try:
            self.spool.ack(done)
        except SpoolError as err:
            self.counters["spool_delete_failed"] += 1
            level = logging.WARNING if self.counters["spool_delete_failed"] == 1 else logging.DEBUG
            log.log(level, "%s; the rows stay until the disk has room (they are in InfluxDB)", err)
            self._drain_next = time.monotonic() + 5.0

    # --------------------------------------------------------------- rollups

    def _maybe_rollup(self) -> None:
        """Every few minutes, recompute the last hours and days (idempotent)."""
        now = time.monotonic()
        if now < self._rollup_next or not self._influx_ok or self._backlog():
            return
        self._rollup_next = now + ROLLUP_EVERY_S
        end = self._clock_ms()
        # Readings that came late (out of a spool, after an outage) reopen their
        # hours and days: start from the oldest reading written since last time.
        oldest = max(self._oldest_unrolled or end, end - MAX_ROLLUP_BACK_MS)
        try:
            hourly = roll_up(self.influx, HOURLY, min(end - 3 * HOURLY.ms, oldest), end)
            daily = roll_up(self.influx, DAILY, min(end - 2 * DAILY.ms, oldest), end)
        except InfluxError as err:
            log.warning("rollups not computed this time: %s", err)
            return
        self._oldest_unrolled = None
        self.counters["rollup_points"] += hourly + daily

    # ---------------------------------------------------------------- health

    def status(self, state: str = "online") -> dict[str, object]:
        now_mono, count = time.monotonic(), self.counters["received"]
        mark_time, mark_count = self._rate_mark
        rate = (count - mark_count) / (now_mono - mark_time) if now_mono > mark_time else 0.0
        return {
            "state": state,
            "hub": self.settings.hub_id,
            "version": __version__,
            "influx": "ok" if self._influx_ok else "unavailable",
            "backlog_batches": self.spool.depth,
            "spool_dropped": self.spool.dropped,
            "storage": self._storage_status(),
            "rate_msgs_s": round(rate, 1),
            "lag_ms": self._clock_ms() - self._last_reading_ts if self._last_reading_ts else None,
            "counters": dict(self.counters),
            "refused": dict(self.refused),
            "dead_letters": self.dead.count(),
        }

    def _storage_status(self) -> dict[str, object]:
        if self._storage_problem is None:
            return {"ok": True}
        problem, since_ms = self._storage_problem
        return {"ok": False, "problem": problem, "since_ms": since_ms, "data_dir": str(self.settings.data_dir)}

    def _maybe_status(self) -> None:
        now = time.monotonic()
        if now - self._status_sent < self.settings.status_interval_s or not self._connected.is_set():
            return
        try:
            status = self.status()
        except GardenError as err:
            log.warning("hub status not published: %s", err)
            self._status_sent = now
            return
        self._status_sent = now
        self._rate_mark = (now, self.counters["received"])
        self._client.publish(self._status_topic, compact_json(status), qos=1, retain=True)
        fields: dict[str, float | int | bool | str] = {
            "received": self.counters["received"],
            "written": self.counters["written_points"],
            "spooled": self.counters["spooled_points"],
            "backlog": self.spool.depth,
            "dead_letters": int(status["dead_letters"]),  # type: ignore[call-overload]
        }
        if status["lag_ms"] is not None:
            fields["lag_ms"] = int(status["lag_ms"])  # type: ignore[call-overload]
        point = line(
            "hub_ingest", {"garden": self.settings.garden, "hub": self.settings.hub_id}, fields, self._clock_ms()
        )
        try:
            self._store([point])
        except (SpoolError, GardenError) as err:
            self.counters["health_points_not_stored"] += 1
            if self._storage_problem is None:  # else the storage alert says it already
                log.warning("hub health point not stored: %s", err)

    def _shutdown(self) -> None:
        # Whatever is still queued or parsed was not acknowledged: the broker
        # keeps it in our session and sends it again next time.
        if self._parser is not None:
            self._parser.join(2.0)
        if self._connected.is_set():
            try:
                payload = compact_json(self.status("offline"))
            except GardenError:
                payload = compact_json({"state": "offline", "hub": self.settings.hub_id})
            info = self._client.publish(self._status_topic, payload, qos=1, retain=True)
            with contextlib.suppress(RuntimeError):  # the connection went while waiting
                info.wait_for_publish(2.0)
        self._client.disconnect()
        self._client.loop_stop()
        log.info(
            "hub stopped: %d messages received, %d acknowledged, %d batches spooled",
            self.counters["received"],
            self.counters["acked"],
            self.spool.depth,
        )
        self.spool.close()
        self.dead.close()
        self.influx.close()
