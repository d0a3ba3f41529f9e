"""The bridge service: serial ports in, spool, MQTT out (``garden bridge run``).

One thread per port reads and decodes; paho runs its network thread; this
module's loop, in the caller's thread, does everything else, so the spool
and the per-node state have a single owner:

1. take decoded frames from the ports; sequence, calibrate and timestamp
   each reading, and store the batch in the spool in one transaction;
2. delete the rows the broker acknowledged;
3. hand the oldest unsent rows to paho, at most ``publish_window`` at once;
4. apply node configs from their retained topics, send ``SET interval_s``
   commands to nodes and track their acks;
5. publish retained node and bridge status and Home Assistant discovery.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from firmware_bridge import __version__
from firmware_bridge.calibration import calibrate
from firmware_bridge.errors import ConfigError, PortError, SpoolError
from firmware_bridge.line_protocol import (
    AckFrame,
    CommandFrame,
    DataFrame,
    Frame,
    HelloFrame,
    Reject,
    StoredFrame,
    encode_command,
    encode_stored,
)
from firmware_bridge.messages import (
    NodeConfig,
    compact_json,
    ha_discovery,
    parse_node_config,
    status_payload,
    telemetry_payload,
)
from firmware_bridge.mqtt_link import MqttLink
from firmware_bridge.sequencing import NodeSeq, Step, advance
from firmware_bridge.serial_port import PortChunk, PortEvent, PortReader, PortState
from firmware_bridge.settings import BridgeSettings
from firmware_bridge.spool import Spool
from firmware_bridge.topics import Topics

log = logging.getLogger(__name__)


# PUBACK reason codes that will never turn into an acceptance (MQTT v5 3.4.2.1):
# the reading is dropped and counted. Any other refusal is sent again.
FINAL_REFUSALS = frozenset({"Not authorized", "Topic name invalid", "Payload format invalid"})

# GK frames go out at most this often per node: often enough that a node's
# buffer of unstored readings stays short, rare enough to cost nothing.
STORED_EVERY_MS = 100


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class PendingCommand:
    seq: int
    interval_s: int
    sent_ms: int = 0
    tries: int = 0


# Put into the event queue to wake the loop; never handled as an event.
_WAKE = PortChunk("", (), 0)


@dataclass(slots=True)
class NodeRuntime:
    """What the bridge knows of one node while it runs."""

    node: str
    seq: NodeSeq | None = None
    port: str | None = None
    fw: str | None = None
    sensors: tuple[str, ...] = ()
    interval_s: int | None = None
    last_seen_ms: int | None = None
    last_ts_ms: int = 0
    readings: int = 0
    battery_v: float | None = None
    config: NodeConfig = field(default_factory=NodeConfig)
    command: PendingCommand | None = None
    command_result: dict[str, object] | None = None
    next_command_seq: int = 1
    stored: tuple[int, int] | None = None  # (boot, seq) committed to the spool
    stored_told: tuple[int, int] | None = None  # the last GK sent to the node
    stored_told_ms: int = 0
    status_dirty: bool = True
    status_sent_ms: int = 0
    discovery_sent: tuple[str, ...] | None = None


@dataclass(slots=True)
class PortRuntime:
    reader: PortReader
    open: bool = False
    device: str = ""
    problem: str = ""
    rejects: Counter[str] = field(default_factory=Counter)
    frames: int = 0
    down_since_ms: int | None = None  # lost, not yet back
    gaps: int = 0  # times it was lost and came back
    last_gap_s: float | None = None  # how long it was away the last time


class Bridge:
    """Runs until :meth:`request_stop`. Build it in the composition root."""

    def __init__(
        self,
        settings: BridgeSettings,
        *,
        clock_ms: Callable[[], int] = wall_ms,
        link: MqttLink | None = None,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.garden)
        self._clock_ms = clock_ms
        self._events: queue.SimpleQueue[PortEvent] = queue.SimpleQueue()
        self._stop = threading.Event()
        self.spool = Spool(
            settings.spool_path,
            max_rows=settings.spool_max_rows,
            overflow=settings.spool_overflow,
            synchronous=settings.spool_synchronous,
        )
        self.nodes: dict[str, NodeRuntime] = {
            node: NodeRuntime(node, seq=state, stored=(state.boot, state.last_seq))
            for node, state in self.spool.node_states().items()
        }
        self.ports: dict[str, PortRuntime] = {
            port: PortRuntime(PortReader(port, self._events.put, baudrate=settings.baudrate))
            for port in settings.resolved_ports()
        }
        self.link = link or MqttLink(
            settings.broker,
            client_id=f"garden-bridge-{settings.garden}-{settings.bridge_id}",
            will=(self._bridge_status_topic, status_payload("offline", bridge=settings.bridge_id)),
            subscriptions=(self.topics.all_node_configs,),
            keepalive=settings.keepalive_s,
        )
        self._inflight: dict[int, int] = {}  # paho mid -> spool row id
        self._last_handed = 0
        self.counters: Counter[str] = Counter()
        self._bridge_status_sent_ms = 0
        self._bridge_status_dirty = True

    @property
    def _bridge_status_topic(self) -> str:
        return self.topics.bridge_status(self.settings.bridge_id)

    # --------------------------------------------------------------- running

    def request_stop(self) -> None:
        self._stop.set()
        # Wake the loop, which may be waiting for a port event: CPython 3.11's
        # SimpleQueue.get(timeout) can wait forever when a signal (our SIGTERM)
        # interrupts it just before its deadline, and with the ports gone no
        # event would ever come (seen in CI: a bridge that never stopped).
        self._events.put(_WAKE)

    def run(self) -> None:
        if not self.ports:
            log.warning("no serial ports configured and none under /dev/serial/by-id")
        log.info(
            "bridge %s for garden %s: %d port(s), broker %r, spool %s (%d waiting)",
            self.settings.bridge_id,
            self.settings.garden,
            len(self.ports),
            self.settings.broker,
            self.settings.spool_path,
            self.spool.depth,
        )
        self.link.start()
        for port in self.ports.values():
            port.reader.start()
        try:
            while not self._stop.is_set():
                # Idle, wait for the ports; with messages in flight, come back
                # soon for their acks (acks do not wake the loop).
                self.step(timeout=0.005 if self._inflight else 0.05)
        finally:
            self._shutdown()

    def step(self, timeout: float) -> None:
        """One turn of the loop: intake, spool, acks, configs, publishing, timers."""
        events = self._drain_events(timeout)
        if events:
            self._intake(events)
        self._take_acks()
        self._take_changes()
        self._take_configs()
        self._pump()
        self._timers()

    def _drain_events(self, timeout: float) -> list[PortEvent]:
        try:
            events = [self._events.get(timeout=timeout)]
        except queue.Empty:
            return []
        for _ in range(2000):
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                break
        return [e for e in events if e is not _WAKE]

    # ---------------------------------------------------------------- intake

    def _intake(self, events: list[PortEvent]) -> None:
        rows: list[tuple[str, bytes]] = []
        changed: dict[str, NodeSeq] = {}
        before = {node_id: node.seq for node_id, node in self.nodes.items()}
        for event in events:
            if isinstance(event, PortState):
                self._port_state(event)
                continue
            port = self.ports[event.port]
            for item in event.items:
                if isinstance(item, Reject):
                    port.rejects[item.reason.value] += 1
                    self.counters["rejected"] += 1
                    self._bridge_status_dirty = True
                    log.debug("%s: rejected line (%s): %r", event.port, item.reason.value, item.line)
                    continue
                port.frames += 1
                try:
                    self._frame(event, item, rows, changed)
                except (ValueError, ArithmeticError, TypeError) as err:
                    # A frame that passed its checks but still cannot be handled
                    # (a calibration gone wrong): counted, never the end of the loop.
                    self.counters["frame_errors"] += 1
                    log.error("%s: frame from %s not handled: %s", event.port, item.node_id, err)
        if rows or changed:
            try:
                dropped = self.spool.append(rows, changed, in_flight_upto=self._last_handed)
            except SpoolError as err:
                # Nothing was stored: forget that we saw these seqs, so the nodes'
                # replays (GR) of them are taken, not dropped as already stored.
                for node_id in changed:
                    self.nodes[node_id].seq = before.get(node_id)
                self.counters["spool_failed"] += len(rows)
                log.error("%s; %d readings not stored", err, len(rows))
                return
            self.counters["readings"] += len(rows)
            for node_id, state in changed.items():
                self.nodes[node_id].stored = (state.boot, state.last_seq)
            if dropped:
                self._bridge_status_dirty = True

    def _node(self, node_id: str) -> NodeRuntime:
        node = self.nodes.get(node_id)
        if node is None:
            node = self.nodes[node_id] = NodeRuntime(node_id)
        return node

    def _frame(
        self,
        event: PortChunk,
        frame: Frame,
        rows: list[tuple[str, bytes]],
        changed: dict[str, NodeSeq],
    ) -> None:
        if isinstance(frame, CommandFrame | StoredFrame):
            # Only the host sends commands; a node echoing one is miswired.
            self.ports[event.port].rejects["unexpected_command"] += 1
            return
        node = self._node(frame.node_id)
        if node.port != event.port:
            if node.port is not None:
                log.warning("node %s moved from %s to %s", node.node, node.port, event.port)
            node.port = event.port
            node.status_dirty = True
        node.last_seen_ms = event.received_ms
        if isinstance(frame, AckFrame):
            self._ack_frame(node, frame)
            return
        replay = isinstance(frame, DataFrame) and frame.replay
        sequenced = advance(node.seq, frame.seq, hello=isinstance(frame, HelloFrame), replay=replay)
        if sequenced.step is Step.REPLAYED:
            self.counters["replays_already_stored"] += 1
            return
        node.seq = sequenced.state
        changed[node.node] = sequenced.state
        if sequenced.step is Step.GAP:
            log.info("node %s: %d reading(s) lost before seq %d", node.node, sequenced.missed, frame.seq)
        elif sequenced.step is Step.FILLED:
            self.counters["gaps_filled_by_replay"] += 1
            log.info("node %s: seq %d, lost in a gap, came back in a replay", node.node, frame.seq)
        elif sequenced.step is Step.REBOOT:
            log.info("node %s rebooted (boot %d)", node.node, sequenced.state.boot)
            node.status_dirty = True
        if isinstance(frame, HelloFrame):
            self._hello(node, frame)
            return
        if sequenced.step is Step.DUPLICATE:
            self.counters["duplicates"] += 1
            log.debug("node %s: duplicate seq %d dropped", node.node, frame.seq)
            return
        assert isinstance(frame, DataFrame)
        reading = calibrate(frame.values, node.config.calibration)
        for key, reason in reading.errors.items():
            self.counters[f"sensor_{reason}"] += 1
            log.debug("node %s: %s not used (%s)", node.node, key, reason)
        # Timestamps name readings in InfluxDB, so they must never repeat for
        # a node, even for two lines that arrived in the same read.
        ts = max(event.received_ms, node.last_ts_ms + 1)
        node.last_ts_ms = ts
        node.readings += 1
        node.status_dirty = True  # last_seen and seq moved; sent at most once a second
        if not node.sensors:
            node.sensors = tuple(frame.values)
        battery = reading.values.get("bt0")
        if battery:
            node.battery_v = battery["battery_v"]
        payload = telemetry_payload(
            node=node.node,
            boot=sequenced.state.boot,
            seq=frame.seq,
            ts_ms=ts,
            reading=reading,
            bridge=self.settings.bridge_id,
            bed=node.config.bed,
        )
        rows.append((self.topics.telemetry(node.node), payload))
        if node.discovery_sent is None:
            self._publish_discovery(node)

    def _hello(self, node: NodeRuntime, hello: HelloFrame) -> None:
        log.info(
            "node %s hello: fw %s, sensors %s, interval %ds",
            node.node,
            hello.fw,
            ",".join(hello.sensors),
            hello.interval_s,
        )
        node.fw, node.sensors, node.interval_s = hello.fw, hello.sensors, hello.interval_s
        node.status_dirty = True
        node.command = None  # a reboot forgets any command in flight
        if node.discovery_sent != node.sensors:
            self._publish_discovery(node)
        self._maybe_command(node)

    def _port_state(self, event: PortState) -> None:
        port = self.ports[event.port]
        port.open, port.device, port.problem = event.open, event.device, event.problem
        self._bridge_status_dirty = True
        now = self._clock_ms()
        if not event.open:
            self.counters["port_lost"] += 1
            if port.down_since_ms is None:
                port.down_since_ms = now
        elif port.down_since_ms is not None:
            # The gap in this port's readings: the nodes' own seqs say what was lost.
            port.gaps += 1
            port.last_gap_s = round((now - port.down_since_ms) / 1000, 1)
            port.down_since_ms = None
            log.warning("port %s back after %.1f s, now %s", event.port, port.last_gap_s, event.device)
        for node in self.nodes.values():
            if node.port == event.port:
                node.status_dirty = True
                node.stored_told = None  # tell the node again what is stored

    # --------------------------------------------------------------- configs

    def _take_configs(self) -> None:
        while True:
            try:
                message = self.link.inbox.get_nowait()
            except queue.Empty:
                return
            node_id = self.topics.node_of(message.topic)
            if node_id is None or not message.topic.endswith("/config"):
                continue
            try:
                config = parse_node_config(message.payload, f"{message.topic}")
            except (ConfigError, ValueError, ArithmeticError, RecursionError) as err:
                self.counters["bad_config"] += 1
                log.warning("ignored node config: %s", err)
                continue
            node = self._node(node_id)
            if config != node.config:
                log.info("node %s config: bed %s, interval %s", node_id, config.bed, config.interval_s)
            node.config = config
            node.status_dirty = True
            self._maybe_command(node)

    def _maybe_command(self, node: NodeRuntime) -> None:
        wanted = node.config.interval_s
        if wanted is None or node.interval_s is None or wanted == node.interval_s:
            return
        if node.command is not None and node.command.interval_s == wanted:
            return
        node.command = PendingCommand(node.next_command_seq, wanted)
        node.next_command_seq += 1
        self._send_command(node)

    def _send_command(self, node: NodeRuntime) -> None:
        command = node.command
        if command is None or node.port is None:
            return
        line = encode_command(node.node, command.seq, "SET", {"interval_s": str(command.interval_s)})
        command.tries += 1
        command.sent_ms = self._clock_ms()
        try:
            self.ports[node.port].reader.write(line)
            log.info("node %s: sent SET interval_s=%d (try %d)", node.node, command.interval_s, command.tries)
        except PortError as err:
            log.warning("node %s: command not sent: %s", node.node, err)

    def _tell_stored(self, node: NodeRuntime, now: int) -> None:
        """Tell the node which of its readings are safe in the spool (GK), so it
        can forget them; it sends the rest again if the bridge goes away."""
        assert node.stored is not None
        port = self.ports.get(node.port or "")
        if port is None or not port.open:
            return
        node.stored_told_ms = now
        try:
            port.reader.write(encode_stored(node.node, node.stored[1]))
        except PortError as err:
            log.debug("node %s: GK not sent: %s", node.node, err)
            return
        node.stored_told = node.stored

    def _ack_frame(self, node: NodeRuntime, ack: AckFrame) -> None:
        command = node.command
        if command is None or ack.seq != command.seq:
            log.debug("node %s: ack for seq %d matches no command", node.node, ack.seq)
            return
        node.command = None
        node.status_dirty = True
        if ack.ok:
            node.interval_s = command.interval_s
            node.command_result = {"interval_s": command.interval_s, "state": "acked"}
            log.info("node %s: interval now %ds", node.node, command.interval_s)
        else:
            node.command_result = {"interval_s": command.interval_s, "state": "refused", "reason": ack.reason}
            log.warning("node %s refused SET interval_s=%d: %s", node.node, command.interval_s, ack.reason)

    # ------------------------------------------------------------ publishing

    def _take_acks(self) -> None:
        done: list[int] = []
        while True:
            try:
                mid, refusal = self.link.acks.get_nowait()
            except queue.Empty:
                break
            row = self._inflight.pop(mid, None)
            if row is None:
                continue  # a status or discovery message
            if refusal is not None and refusal not in FINAL_REFUSALS:
                # A limit that may pass (quota, server busy): send it again later.
                self.counters["refused_retry"] += 1
                log.warning("broker refused a reading for now (row %d): %s; will send it again", row, refusal)
                self._last_handed = min(self._last_handed, row - 1)
                continue
            if refusal is not None:
                self.counters["refused"] += 1
                log.error("broker refused a reading (row %d): %s; dropped", row, refusal)
            else:
                self.counters["published"] += 1
            done.append(row)
            self._bridge_status_dirty = True
        if done:
            try:
                self.spool.ack(done)
            except SpoolError as err:
                log.error("%s", err)

    def _pump(self) -> None:
        room = self.settings.publish_window - len(self._inflight)
        if room <= 0:
            return
        try:
            rows = self.spool.pending(self._last_handed, room)
        except SpoolError as err:
            log.error("%s", err)
            return
        for row_id, topic, payload in rows:
            mid = self.link.publish(topic, payload, qos=1)
            if mid is None:
                return
            self._inflight[mid] = row_id
            self._last_handed = row_id

    def _take_changes(self) -> None:
        while True:
            try:
                change = self.link.changes.get_nowait()
            except queue.Empty:
                return
            if change.connected:
                log.info("connected to %r", self.settings.broker)
                self._bridge_status_dirty = True
                for node in self.nodes.values():
                    node.status_dirty = True
                    if node.discovery_sent is not None:
                        self._publish_discovery(node)
            else:
                log.warning("broker connection lost or refused: %s", change.reason)

    def _publish_discovery(self, node: NodeRuntime) -> None:
        sensors = node.sensors
        if not sensors:
            return
        topic, payload = ha_discovery(
            self.topics, node=node.node, bridge=self.settings.bridge_id, sensors=sensors, fw=node.fw
        )
        self.link.publish(topic, payload, qos=1, retain=True)
        node.discovery_sent = sensors

    def _node_status(self, node: NodeRuntime, state: str | None = None) -> bytes:
        port = self.ports.get(node.port or "")
        if state is None:
            state = "online" if port is not None and port.open and node.last_seen_ms else "offline"
        seq = node.seq
        return status_payload(
            state,
            node=node.node,
            bridge=self.settings.bridge_id,
            port=node.port,
            fw=node.fw,
            sensors=list(node.sensors) or None,
            interval_s=node.interval_s,
            last_seen=node.last_seen_ms,
            boot=seq.boot if seq else None,
            seq=seq.last_seq if seq else None,
            lost=seq.lost if seq else None,
            reboots=seq.reboots if seq else None,
            readings=node.readings,
            battery_v=node.battery_v,
            bed=node.config.bed,
            command=(
                {"interval_s": node.command.interval_s, "state": "pending", "tries": node.command.tries}
                if node.command
                else node.command_result
            ),
        )

    def bridge_status(self, state: str = "online") -> dict[str, object]:
        return {
            "state": state,
            "bridge": self.settings.bridge_id,
            "version": __version__,
            "ports": {
                path: {
                    "open": p.open,
                    "device": p.device or None,
                    "problem": p.problem or None,
                    "frames": p.frames,
                    "rejects": dict(p.rejects),
                    "opens": p.reader.opens,
                    "gaps": p.gaps,
                    "last_gap_s": p.last_gap_s,
                    "down_since": p.down_since_ms,
                }
                for path, p in self.ports.items()
            },
            "spool": {
                "depth": self.spool.depth,
                "dropped": self.spool.dropped,
                "max_rows": self.settings.spool_max_rows,
                "overflow": self.settings.spool_overflow.value,
            },
            "inflight": len(self._inflight),
            "counters": dict(self.counters),
        }

    def _timers(self) -> None:
        now = self._clock_ms()
        interval_ms = int(self.settings.status_interval_s * 1000)
        if self.link.connected:
            if (self._bridge_status_dirty and now - self._bridge_status_sent_ms >= 2000) or (
                now - self._bridge_status_sent_ms >= interval_ms
            ):
                payload = compact_json(self.bridge_status())
                self.link.publish(self._bridge_status_topic, payload, qos=1, retain=True)
                self._bridge_status_sent_ms = now
                self._bridge_status_dirty = False
            for node in self.nodes.values():
                if node.last_seen_ms is None and node.port is None:
                    continue  # known from the spool or a config only
                due = now - node.status_sent_ms
                if (node.status_dirty and due >= 1000) or due >= interval_ms:
                    self.link.publish(self.topics.node_status(node.node), self._node_status(node), qos=1, retain=True)
                    node.status_sent_ms = now
                    node.status_dirty = False
        for node in self.nodes.values():
            if (
                node.stored is not None
                and node.stored != node.stored_told
                and now - node.stored_told_ms >= STORED_EVERY_MS
            ):
                self._tell_stored(node, now)
        for node in self.nodes.values():
            command = node.command
            if command is None or now - command.sent_ms < self.settings.command_timeout_s * 1000:
                continue
            if command.tries >= self.settings.command_retries:
                log.warning(
                    "node %s: SET interval_s=%d not acked after %d tries",
                    node.node,
                    command.interval_s,
                    command.tries,
                )
                node.command_result = {"interval_s": command.interval_s, "state": "failed"}
                node.command = None
                node.status_dirty = True
            else:
                self._send_command(node)

    # -------------------------------------------------------------- shutdown

    def _shutdown(self) -> None:
        for port in self.ports.values():
            port.reader.stop()
        self._intake(self._drain_events(0.0) + self._drain_rest())
        deadline = time.monotonic() + 3.0
        while (self._inflight or self.spool.pending(self._last_handed, 1)) and time.monotonic() < deadline:
            if not self.link.connected:
                break
            self._take_acks()
            self._pump()
            time.sleep(0.02)
        self._take_acks()
        if self.link.connected:
            for node in self.nodes.values():
                if node.last_seen_ms is not None:
                    self.link.publish(
                        self.topics.node_status(node.node),
                        self._node_status(node, "offline"),
                        qos=1,
                        retain=True,
                    )
            payload = compact_json(self.bridge_status("offline"))
            info_mid = self.link.publish(self._bridge_status_topic, payload, qos=1, retain=True)
            end = time.monotonic() + 2.0
            pending = {info_mid}
            while pending and time.monotonic() < end:
                try:
                    mid, _ = self.link.acks.get(timeout=0.1)
                    pending.discard(mid)
                except queue.Empty:
                    pass
        self.link.stop()
        log.info(
            "bridge stopped: %d readings, %d published, %d left in the spool",
            self.counters["readings"],
            self.counters["published"],
            self.spool.depth,
        )
        self.spool.close()

    def _drain_rest(self) -> list[PortEvent]:
        rest: list[PortEvent] = []
        while True:
            try:
                rest.append(self._events.get_nowait())
            except queue.Empty:
                return [e for e in rest if e is not _WAKE]
