"""The MQTT topic tree. Every topic string in the project is built or parsed here.

```
garden/<garden>/node/<node>/telemetry    QoS1, not retained: one reading (JSON)
garden/<garden>/node/<node>/status       retained: {state, fw, interval_s, last_seen, ...}
garden/<garden>/node/<node>/config       retained, written by volunteers: {bed, calibration, interval_s}
garden/<garden>/bridge/<bridge>/status   retained, last will {"state": "offline"}
garden/<garden>/hub/<hub>/status         retained, last will {"state": "offline"}
garden/<garden>/hub/<hub>/watch          retained: the watch's counters and notification stats
garden/<garden>/hub/<hub>/commons        retained, last will {"state": "offline"}: the commons answers
garden/<garden>/bed/<bed>/config         retained, written by volunteers: the bed's soil and crops
garden/<garden>/bed/<bed>/need           retained, from the hub: the bed's watering need
garden/<garden>/alert/<kind>/<subject>   QoS1, retained: an alert's latest change
garden/<garden>/event/<type>             QoS1: the commons' journal
garden/<garden>/cmd/<service>            QoS1: a request to the hub (MQTT v5 response topic)
garden/<garden>/reply/<client>           QoS1: the hub's answers to one client
garden/<garden>/commons/claim/<bed>      retained, from the hub: who will water the bed (empty: nobody)
garden/<garden>/commons/share/<id>       retained, from the hub: an open harvest share
garden/<garden>/commons/rota/week        retained, from the hub: who is on watering duty this week
homeassistant/device/<garden>_<node>/config   retained: Home Assistant discovery
```

Names are ``[A-Za-z0-9_-]{1,32}``, so they can never hold the MQTT
wildcards ``+`` and ``#`` or a ``/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
ROOT = "garden"
ANY_GARDEN = "+"  # Topics(ANY_GARDEN).all_telemetry is every garden's telemetry
HA_DISCOVERY_PREFIX = "homeassistant"


def check_name(what: str, name: str) -> str:
    """Return ``name`` if it is a valid topic segment, else raise ValueError."""
    if not NAME_RE.fullmatch(name):
        raise ValueError(f"{what} {name!r} must be 1-32 letters, digits, '-' or '_'")
    return name


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of one garden."""

    garden: str  # or ANY_GARDEN: the subscriptions of a regional hub (never a topic to publish)

    def __post_init__(self) -> None:
        if self.garden != ANY_GARDEN:
            check_name("garden id", self.garden)

    @property
    def base(self) -> str:
        return f"{ROOT}/{self.garden}"

    def telemetry(self, node: str) -> str:
        return f"{self.base}/node/{node}/telemetry"

    def node_status(self, node: str) -> str:
        return f"{self.base}/node/{node}/status"

    def node_config(self, node: str) -> str:
        return f"{self.base}/node/{node}/config"

    def bridge_status(self, bridge: str) -> str:
        return f"{self.base}/bridge/{bridge}/status"

    def hub_status(self, hub: str) -> str:
        return f"{self.base}/hub/{hub}/status"

    def hub_watch(self, hub: str) -> str:
        return f"{self.base}/hub/{hub}/watch"

    def hub_commons(self, hub: str) -> str:
        return f"{self.base}/hub/{hub}/commons"

    def alert(self, kind: str, subject: str) -> str:
        return f"{self.base}/alert/{kind}/{subject}"

    def event(self, kind: str) -> str:
        return f"{self.base}/event/{kind}"

    def bed_config(self, bed: str) -> str:
        return f"{self.base}/bed/{bed}/config"

    def bed_need(self, bed: str) -> str:
        return f"{self.base}/bed/{bed}/need"

    def command(self, service: str) -> str:
        return f"{self.base}/cmd/{service}"

    def reply(self, client: str) -> str:
        return f"{self.base}/reply/{client}"

    def commons(self, kind: str, name: str) -> str:
        """The hub's retained commons state: ``claim/<bed>``, ``share/<id>``, ``rota/week``."""
        return f"{self.base}/commons/{kind}/{name}"

    @property
    def all_commons(self) -> str:
        return f"{self.base}/commons/+/+"

    @property
    def all_alerts(self) -> str:
        return f"{self.base}/alert/+/+"

    @property
    def all_bed_configs(self) -> str:
        return f"{self.base}/bed/+/config"

    @property
    def all_bed_needs(self) -> str:
        return f"{self.base}/bed/+/need"

    @property
    def all_telemetry(self) -> str:
        return f"{self.base}/node/+/telemetry"

    @property
    def all_node_status(self) -> str:
        return f"{self.base}/node/+/status"

    @property
    def all_events(self) -> str:
        return f"{self.base}/event/+"

    @property
    def all_bridge_status(self) -> str:
        return f"{self.base}/bridge/+/status"

    @property
    def all_hub_status(self) -> str:
        return f"{self.base}/hub/+/status"

    def kind_and_name(self, topic: str) -> tuple[str, str, str] | None:
        """``(kind, name, leaf)`` of ``garden/<g>/<kind>/<name>[/<leaf>]`` in this garden, else None.

        ``garden/g/node/bed-1/telemetry`` gives ``("node", "bed-1", "telemetry")``;
        ``garden/g/event/watering`` gives ``("event", "watering", "")``.
        """
        where = self.locate(topic)
        return None if where is None else where[1:]

    def locate(self, topic: str) -> tuple[str, str, str, str] | None:
        """``(garden, kind, name, leaf)`` of a topic of this garden (of any, for ANY_GARDEN), else None."""
        parts = topic.split("/")
        if len(parts) not in (4, 5) or parts[0] != ROOT or not NAME_RE.fullmatch(parts[3]):
            return None
        if not (NAME_RE.fullmatch(parts[1]) if self.garden == ANY_GARDEN else parts[1] == self.garden):
            return None
        return parts[1], parts[2], parts[3], parts[4] if len(parts) == 5 else ""

    @property
    def all_node_configs(self) -> str:
        return f"{self.base}/node/+/config"

    def ha_discovery(self, node: str) -> str:
        return f"{HA_DISCOVERY_PREFIX}/device/{self.garden}_{node}/config"

    def node_of(self, topic: str) -> str | None:
        """The node named in a ``.../node/<node>/...`` topic of this garden, else None."""
        parts = topic.split("/")
        if len(parts) == 5 and parts[0] == ROOT and parts[1] == self.garden and parts[2] == "node":
            return parts[3] if NAME_RE.fullmatch(parts[3]) else None
        return None
