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
from collections.abc import Mapping
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware_bridge.messages import compact_json
from firmware_bridge.mqtt_link import BrokerAddress, connected_client
from firmware_bridge.topics import Topics
from garden.errors import GardenError

REQUEST_TIMEOUT_S = 4.0
MAX_REQUEST_AGE_MS = 600_000  # the hub ignores older requests


class HubUnreachable(GardenError):
    def __init__(self, service: str, detail: str) -> None:
        super().__init__(f"the hub did not answer ({detail}); is `garden hub run` running? ({service})")
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
) -> dict[str, Any]:
    """Send ``body`` to the hub's ``service`` and return its answer's ``result``.

    Raises BrokerUnreachable (no broker), HubUnreachable (no answer within
    ``timeout_s``) or CommandRefused (the hub said no).
    """
    client_tag = f"cli-{secrets.token_hex(6)}"
    reply_topic = topics.reply(client_tag)
    correlation = secrets.token_bytes(8)
    subscribed = threading.Event()
    answered = threading.Event()
    answer: list[bytes] = []

    def on_subscribe(c: mqtt.Client, u: object, mid: int, codes: list[Any], p: object) -> None:
        subscribed.set()

    def on_message(c: mqtt.Client, u: object, message: mqtt.MQTTMessage) -> None:
        props = getattr(message, "properties", None)
        if getattr(props, "CorrelationData", None) == correlation:
            answer.append(bytes(message.payload))
            answered.set()

    def setup(client: mqtt.Client) -> None:
        client.on_subscribe = on_subscribe
        client.on_message = on_message

    deadline = time.monotonic() + timeout_s
    with connected_client(broker, subscribe=(reply_topic,), setup=setup, timeout_s=timeout_s) as client:
        if not subscribed.wait(max(0.1, deadline - time.monotonic())):
            raise HubUnreachable(service, "the broker did not confirm the reply subscription")
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = reply_topic
        props.CorrelationData = correlation
        payload = compact_json({**body, "sent_ms": time.time_ns() // 1_000_000})
        client.publish(topics.command(service), payload, qos=1, properties=props)
        if not answered.wait(max(0.1, deadline - time.monotonic())):
            raise HubUnreachable(service, f"nothing within {timeout_s:g} s")
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
