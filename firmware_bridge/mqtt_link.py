"""The MQTT adapter: one paho-mqtt 2.x client, MQTT v5, run in paho's own thread.

The service talks to it through three queues, drained from its own thread:
acknowledged message ids with the broker's refusal, if any (``acks``), incoming messages (``inbox``) and
connection changes (``changes``). paho's callbacks only put into queues, so
nothing the service does can stall the network thread or be run in it.

paho re-sends unacknowledged QoS1 messages on reconnect, in order; the
service keeps the number handed to paho bounded, so its RAM queue stays
small and the rest waits in the spool.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from firmware_bridge.errors import BrokerUnreachable, ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never show the password
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_broker_url(url: str, path: str = "mqtt.url") -> BrokerAddress:
    """``mqtt://[user[:password]@]host[:port]`` or ``mqtts://...`` (TLS).

    Its errors never echo the URL: it may hold a password (even in the "port" or the
    "scheme", when the URL is malformed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ConfigError(path, "must start with mqtt:// or mqtts://, e.g. mqtt://localhost:1883")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise ConfigError(path, "bad port: it must be a number from 1 to 65535, after the host") from None
    if not parts.hostname:
        raise ConfigError(path, "no host, e.g. mqtt://localhost:1883")
    return BrokerAddress(
        parts.hostname,
        port,
        tls,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
    )


def client_for(
    broker: BrokerAddress,
    client_id: str = "",
    *,
    manual_ack: bool = False,
    nodelay: bool = False,
    client_class: type[mqtt.Client] = mqtt.Client,
) -> mqtt.Client:
    """A paho 2.x MQTT v5 client with the broker's credentials and TLS set: the one place they are.

    ``nodelay`` turns Nagle's algorithm off, for clients that ask and answer one small
    message at a time (a request to the hub, its answer): otherwise each waits about
    40 ms for the peer's delayed ACK. Streams of readings keep it on. ``client_class``:
    a subclass of paho's client (the hub's reads in batches, garden/mqtt_reads.py).
    """
    client = client_class(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    if nodelay:
        client.on_socket_open = _no_delay
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    return client


def _no_delay(client: mqtt.Client, userdata: object, sock: Any) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not TCP (a websocket wrapper): leave it
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    payload: bytes
    retain: bool


@dataclass(frozen=True, slots=True)
class ConnectionChange:
    connected: bool
    reason: str


class MqttLink:
    """A publishing client with a last will and a few subscriptions."""

    def __init__(
        self,
        broker: BrokerAddress,
        *,
        client_id: str,
        will: tuple[str, bytes] | None = None,
        subscriptions: tuple[str, ...] = (),
        keepalive: int = 30,
        max_inflight: int = 20,
    ) -> None:
        self.broker = broker
        self.acks: queue.SimpleQueue[tuple[int, str | None]] = queue.SimpleQueue()
        self.inbox: queue.SimpleQueue[Incoming] = queue.SimpleQueue()
        self.changes: queue.SimpleQueue[ConnectionChange] = queue.SimpleQueue()
        self.connected = False
        self._subscriptions = subscriptions
        self._keepalive = keepalive
        client = client_for(broker, client_id)
        # Near 20 is fastest; far more in flight made paho slower.
        client.max_inflight_messages_set(max_inflight)
        client.reconnect_delay_set(min_delay=1, max_delay=8)
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._client = client

    def start(self) -> None:
        """Connect in the background; paho retries until the broker answers."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0
        # paho pings after a keepalive without traffic and gives up when the next
        # keepalive passes without an answer: 2 x its keepalive. Half ours, so a
        # dead link is noticed within keepalive_s (the broker, 1.5 x paho's
        # keepalive, notices first and publishes our last will).
        self._client.connect_async(
            self.broker.host,
            self.broker.port,
            keepalive=max(2, self._keepalive // 2),
            clean_start=True,
            properties=props,
        )
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int | None:
        """Hand a message to paho; its mid, or None if paho refused it."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        # rc is MQTT_ERR_NO_CONN while disconnected: paho still queued the
        # QoS1 message and sends it on reconnect. Anything else is a refusal.
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("paho refused a publish to %s: %s", topic, mqtt.error_string(info.rc))
            return None
        return info.mid

    # ------------------------------------------------- paho thread callbacks

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self.changes.put(ConnectionChange(False, f"refused: {reason}"))
            return
        for topic in self._subscriptions:
            client.subscribe(topic, qos=1)
        self.connected = True
        self.changes.put(ConnectionChange(True, str(reason)))

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected = False
        self.changes.put(ConnectionChange(False, str(reason)))

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        # A v5 PUBACK can refuse a message (say, not authorised by the ACL).
        # It will never be accepted; the service counts and drops it.
        self.acks.put((mid, str(reason) if reason.is_failure else None))

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        self.inbox.put(Incoming(message.topic, bytes(message.payload), bool(message.retain)))


@contextlib.contextmanager
def connected_client(
    broker: BrokerAddress,
    *,
    subscribe: tuple[str, ...] = (),
    setup: Callable[[mqtt.Client], None] | None = None,
    timeout_s: float = 5.0,
    client_id: str = "",
) -> Iterator[mqtt.Client]:
    """A short-lived client for a command: connected (and subscribed) on entry,
    disconnected on exit. ``setup`` sets callbacks before connecting.

    Raises BrokerUnreachable when the broker refuses or does not answer.
    """
    client = client_for(broker, client_id, nodelay=True)
    connected = threading.Event()
    failure: list[str] = []

    def on_connect(c: mqtt.Client, u: object, f: object, reason: ReasonCode, p: object) -> None:
        if reason.is_failure:
            failure.append(str(reason))
        else:
            for topic in subscribe:
                c.subscribe(topic, qos=1)
        connected.set()

    client.on_connect = on_connect
    if setup is not None:
        setup(client)
    try:
        client.connect(broker.host, broker.port, keepalive=10)
    except OSError as err:
        raise BrokerUnreachable(repr(broker), str(err)) from err
    client.loop_start()
    try:
        if not connected.wait(timeout_s) or failure:
            raise BrokerUnreachable(repr(broker), failure[0] if failure else "no answer to CONNECT")
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def read_retained(broker: BrokerAddress, topics: tuple[str, ...], *, wait_s: float = 1.5) -> dict[str, bytes]:
    """Collect the retained messages on ``topics``: what a status command shows.

    Raises BrokerUnreachable when the broker does not accept a connection.
    """
    found: dict[str, bytes] = {}

    def on_message(c: mqtt.Client, u: object, message: mqtt.MQTTMessage) -> None:
        if message.retain:
            found[message.topic] = bytes(message.payload)

    def setup(client: mqtt.Client) -> None:
        client.on_message = on_message

    with connected_client(broker, subscribe=topics, setup=setup):
        threading.Event().wait(wait_s)
    return found
