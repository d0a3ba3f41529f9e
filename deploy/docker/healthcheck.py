"""Container healthcheck of the bridge and the hub: does our retained status say online?

    python /opt/garden/healthcheck.py bridge|hub [--wait SECONDS]

Reads the service's own retained status topic (``garden/<g>/bridge/<id>/status``
or ``garden/<g>/hub/<id>/status``, docs/mqtt.md) from the broker, with the
service's own settings and credentials (the same ``GARDEN_*`` environment and
secret files), and exits 0 when it holds ``{"state": "online"}``, else 1 with a
one-line reason that ``docker inspect`` shows. Both services publish their
status when they connect and keep a last will of ``offline``, so this is healthy
while the service is connected to the broker, and unhealthy when it is not (or
died without saying so). Copied into the image by the Dockerfile; exercised by
tests/deploy/test_compose.py.
"""

from __future__ import annotations

import argparse
import json
import sys

from firmware_bridge.errors import BridgeError
from firmware_bridge.mqtt_link import BrokerAddress, read_retained
from firmware_bridge.topics import Topics


def status_topic(kind: str) -> tuple[BrokerAddress, str]:
    """The broker and the status topic of this container's bridge or hub."""
    if kind == "bridge":
        from firmware_bridge.settings import load_bridge_settings

        bridge = load_bridge_settings()
        return bridge.broker, Topics(bridge.garden).bridge_status(bridge.bridge_id)
    from garden.settings import load_hub_settings  # the hub's image has its dependencies

    hub = load_hub_settings()
    return hub.broker, Topics(hub.garden).hub_status(hub.hub_id)


def check(kind: str, wait_s: float) -> tuple[bool, str]:
    try:
        broker, topic = status_topic(kind)
        retained = read_retained(broker, (topic,), wait_s=wait_s)
    except BridgeError as err:  # a bad setting, or a broker that refused us
        return False, str(err)
    payload = retained.get(topic)
    if payload is None:
        return False, f"no retained status on {topic}"
    try:
        state = json.loads(payload).get("state")
    except (ValueError, AttributeError):
        return False, f"{topic} holds no JSON object"
    if state != "online":
        return False, f"{topic} says state={state!r}"
    return True, f"{topic} says online"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("bridge", "hub"))
    parser.add_argument("--wait", type=float, default=1.0, help="seconds to wait for the retained status")
    args = parser.parse_args(argv)
    healthy, reason = check(args.kind, args.wait)
    print(("healthy: " if healthy else "unhealthy: ") + reason)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
