"""Requests to the hub over MQTT, and their answers (MQTT v5 request/response).

Volunteers' commands that change the hub's state (acknowledging or muting an
alert) are not written by the CLI itself: the CLI publishes a request on
``garden/<g>/cmd/<service>`` with a response topic of its own and correlation
data; the hub, the single writer, validates it, applies it and answers. When
nothing answers within the timeout the command fails with
:class:`HubUnreachable`: it is never queued to happen later without the user
knowing (the request is published without retention, and a hub that comes
back later ignores requests older than ``MAX_REQUEST_AGE_MS``).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware_bridge.messages import compact_json
from firmware_bridge.mqtt_link import BrokerAddress, connected_client
from firmware_bridge.topics import Topics
from garden.errors import GardenError

REQUEST_TIMEOUT_S = 3.0  # an answer takes milliseconds; with the start-up, a dead hub is reported within 5 s
MAX_REQUEST_AGE_MS = 600_000  # the hub ignores older requests
STATUS_WAIT_S = 0.5  # for the hub's retained status, which follows the SUBACK at once


class HubUnreachable(GardenError):
    def __init__(self, service: str, detail: str) -> None:
        super().__init__(f"the hub is unreachable: {detail}; is `garden hub run` running? ({service})")
        self.service = service
        self.detail = detail


class CommandRefused(GardenError):
    """The hub answered, and said no: ``message`` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def request(
    broker: BrokerAddress,
    topics: Topics,
    service: str,
    body: Mapping[str, Any],
    *,
    timeout_s: float = REQUEST_TIMEOUT_S,
    status_topic: str | None = None,
) -> dict[str, Any]:
    """Send ``body`` to the hub's ``service`` and return its answer's ``result``.

    The retained status of what answers (``status_topic``; the hub's own status by
    default) comes with the reply subscription: when none of this garden is online,
    this fails at once instead of waiting out the timeout. The client id is the reply
    topic's last level, so a broker ACL can let each client read only its own answers.
    ``timeout_s`` is how long an online hub may take to answer.
    Raises BrokerUnreachable (no broker), HubUnreachable (no hub online, or no
    answer within ``timeout_s``) or CommandRefused (the hub said no).
    """
    client_tag = f"cli-{secrets.token_hex(6)}"
    reply_topic = topics.reply(client_tag)
    status_topic = status_topic or topics.hub_status("+")
    correlation = secrets.token_bytes(8)
    subscribed = threading.Event()
    answered = threading.Event()
    heard_status = threading.Event()
    answer: list[bytes] = []
    hubs: dict[str, str] = {}

    def on_subscribe(c: mqtt.Client, u: object, mid: int, codes: list[Any], p: object) -> None:
        subscribed.set()

    def on_message(c: mqtt.Client, u: object, message: mqtt.MQTTMessage) -> None:
        if mqtt.topic_matches_sub(status_topic, message.topic):
            try:
                state = json.loads(message.payload).get("state")
            except (ValueError, AttributeError):
                state = None
            hubs[message.topic] = state if isinstance(state, str) else "unknown"
            heard_status.set()
            return
        props = getattr(message, "properties", None)
        if getattr(props, "CorrelationData", None) == correlation:
            answer.append(bytes(message.payload))
            answered.set()

    def setup(client: mqtt.Client) -> None:
        client.on_subscribe = on_subscribe
        client.on_message = on_message

    connect_s = min(timeout_s, REQUEST_TIMEOUT_S)
    deadline = time.monotonic() + connect_s
    with connected_client(
        broker, subscribe=(reply_topic, status_topic), setup=setup, timeout_s=connect_s, client_id=client_tag
    ) as client:
        if not subscribed.wait(max(0.1, deadline - time.monotonic())):
            raise HubUnreachable(service, "the broker did not confirm the reply subscription")
        # The broker sends retained messages right after the SUBACK.
        heard_status.wait(STATUS_WAIT_S)
        if "online" not in hubs.values():
            time.sleep(0.05)  # another hub's status, which might say online
        if not hubs:
            raise HubUnreachable(service, f"no hub has ever run it for garden {topics.garden!r}")
        if "online" not in hubs.values():
            raise HubUnreachable(service, "its status says offline")
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = reply_topic
        props.CorrelationData = correlation
        # timeout_ms: the hub refuses a request that waited longer in its queue, since by then
        # this command has said it failed.
        payload = compact_json({**body, "sent_ms": time.time_ns() // 1_000_000, "timeout_ms": int(timeout_s * 1000)})
        client.publish(topics.command(service), payload, qos=1, properties=props)
        if not answered.wait(timeout_s):
            raise HubUnreachable(service, f"no answer within {timeout_s:g} s")
    try:
        reply = json.loads(answer[0])
    except ValueError as err:
        raise CommandRefused(f"the hub's answer is not JSON: {err}") from None
    if not isinstance(reply, dict):
        raise CommandRefused("the hub's answer is not a JSON object")
    if not reply.get("ok"):
        raise CommandRefused(str(reply.get("error") or "refused"))
    result = reply.get("result")
    return result if isinstance(result, dict) else {}


def too_old(body: Mapping[str, Any], now_ms: int) -> bool:
    """A request the CLI gave up on long ago: applying it now would surprise its sender."""
    sent = body.get("sent_ms")
    return isinstance(sent, int) and not isinstance(sent, bool) and now_ms - sent > MAX_REQUEST_AGE_MS


def serve(
    client: mqtt.Client,
    topics: Topics,
    payload: bytes,
    props: Any,
    apply: Callable[[Any], dict[str, Any]],
    refusals: tuple[type[Exception], ...],
) -> bool:
    """The hub's side of one request: ``apply`` its JSON body and answer; True when applied.

    An exception in ``refusals`` (and bad JSON) is a refusal, answered with its message.
    """
    caught: tuple[type[Exception], ...] = (ValueError, *refusals)
    try:
        reply: dict[str, Any] = {"ok": True, "result": apply(json.loads(payload))}
    except caught as err:
        reply = {"ok": False, "error": str(err)[:300]}
    try:
        answer(client, topics, props, reply)
    except ValueError as err:  # a result JSON cannot hold (NaN): it was applied, so say so
        answer(client, topics, props, {"ok": True, "result": {"note": f"done; the answer could not be sent: {err}"}})
    return bool(reply["ok"])


def answer(client: mqtt.Client, topics: Topics, props: Any, body: Mapping[str, Any]) -> bool:
    """Publish the hub's answer to a request on its response topic; False when it named none we accept."""
    reply_to = getattr(props, "ResponseTopic", None)
    if not isinstance(reply_to, str) or topics.kind_and_name(reply_to) is None:
        return False
    out = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    correlation = getattr(props, "CorrelationData", None)
    if correlation is not None:
        out.CorrelationData = correlation
    client.publish(reply_to, compact_json(dict(body)), qos=1, properties=out)
    return True
