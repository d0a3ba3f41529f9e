"""Mosquitto's two auth files for a garden: the ACL and the password file. Pure: no I/O.

**The ACL** (:func:`render_acl`). Node ids are not prefixed by the bridge that
owns them, and the topic tree (``garden/<g>/node/<node>/telemetry|status|config``)
is a wire contract, so a rule like ``garden/+/node/+/telemetry`` would let any
bridge publish as any node. Instead each bridge user gets explicit lines for the
nodes it owns, listed per bridge (``[bridges.<id>] nodes = [...]`` in
garden.toml, or ``--bridge ID=node,...``), plus its own status through the
``%u`` pattern. A node that is in no list is refused by the broker (PUBACK 0x87).

The garden level of the node rules is ``+`` (a broker serves one garden;
gardens federate by bridging into a regional broker with an ACL of its own);
Home Assistant's discovery topic names the garden inside a level
(``homeassistant/device/<garden>_<node>/config``), which no wildcard can match,
so that line names the garden. deploy/mosquitto/acl in the repository is this
module's output for the example garden ``demo`` (:data:`EXAMPLE_BRIDGES`).

**The password file** (:func:`password_file_text`): Mosquitto 2.0's own format,
``user:$7$<iterations>$<salt>$<hash>``, PBKDF2-HMAC-SHA512 with a 12-byte salt,
base64 (what ``mosquitto_passwd`` writes; checked against a real broker in
tests/security). 101 iterations is ``mosquitto_passwd``'s default: our passwords
are 32 random characters (about 190 bits), which no iteration count protects
better. The file may hold no comments: Mosquitto 2.0.11 then refuses the user on
the next line.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from firmware_bridge.errors import ConfigError
from firmware_bridge.topics import HA_DISCOVERY_PREFIX, NAME_RE, ROOT, Topics

# The users of the shipped ACL besides the bridges. A bridge of one of these names
# would be given that user's rights, and that user the bridge's status (the %u pattern).
RESERVED_USERS = frozenset({"hub", "volunteer", "health", "homeassistant"})
SALT_BYTES = 12
ITERATIONS = 101


@dataclass(frozen=True, slots=True)
class BridgeNodes:
    """A bridge (its id is its MQTT user name) and the node ids it owns."""

    bridge: str
    nodes: tuple[str, ...] = ()


EXAMPLE_GARDEN = "demo"
EXAMPLE_BRIDGES = (BridgeNodes("shed", ("bed-1", "bed-2", "bed-3")),)


def check_bridges(bridges: Sequence[BridgeNodes], path: str = "bridges") -> None:
    """Raise :class:`ConfigError` naming the key of the first problem: a bad or reserved
    bridge id, a bridge given twice, a bad node id, a node owned by two bridges."""
    owner: dict[str, str] = {}
    seen: set[str] = set()
    for b in bridges:
        where = f"{path}.{b.bridge}"
        if not NAME_RE.fullmatch(b.bridge):
            raise ConfigError(where, "a bridge id is 1-32 letters, digits, '-' or '_'")
        if b.bridge in RESERVED_USERS:
            raise ConfigError(
                where,
                f"{b.bridge!r} is an MQTT user of its own: name the bridge otherwise "
                f"(reserved: {', '.join(sorted(RESERVED_USERS))})",
            )
        if b.bridge in seen:
            raise ConfigError(where, "given twice")
        seen.add(b.bridge)
        for node in b.nodes:
            if not NAME_RE.fullmatch(node):
                raise ConfigError(f"{where}.nodes", f"node id {node!r} must be 1-32 letters, digits, '-' or '_'")
            if node in owner:
                where_else = "it" if owner[node] == b.bridge else f"bridge {owner[node]!r}"
                raise ConfigError(f"{where}.nodes", f"node {node!r} is already {where_else}'s: a node has one bridge")
            owner[node] = b.bridge


def parse_bridge_option(text: str) -> BridgeNodes:
    """``shed=bed-1,bed-2`` (or ``shed=``, or ``shed``: a bridge with no nodes yet)."""
    bridge, _, nodes = text.partition("=")
    return BridgeNodes(bridge.strip(), tuple(n.strip() for n in nodes.split(",") if n.strip()))


def bridges_from_config(data: Mapping[str, object]) -> tuple[BridgeNodes, ...]:
    """The ``[bridges.<id>]`` tables of a parsed garden.toml, validated."""
    table = data.get("bridges", {})
    if not isinstance(table, Mapping):
        raise ConfigError("bridges", "must be a table of bridges: [bridges.<id>] nodes = [...]")
    found = []
    for bridge, spec in table.items():
        where = f"bridges.{bridge}"
        if not isinstance(spec, Mapping):
            raise ConfigError(where, 'must be a table: [bridges.<id>] nodes = ["bed-1", ...]')
        for key in set(spec) - {"nodes"}:
            raise ConfigError(f"{where}.{key}", "unknown key; expected one of ['nodes']")
        nodes = spec.get("nodes", [])
        if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
            raise ConfigError(f"{where}.nodes", f'must be a list of node ids, e.g. ["bed-1", "tank"], got {nodes!r}')
        found.append(BridgeNodes(str(bridge), tuple(nodes)))
    result = tuple(found)
    check_bridges(result)
    return result


# ------------------------------------------------------------------------ the ACL

_HEADER = """\
# Mosquitto ACL for Garden Commons: who may publish (write) and subscribe (read) what.
# Made by `garden secure init` for garden {garden}; bridges: {summary}.
# deploy/mosquitto/acl in Garden Commons' repository is this file for the example
# garden `demo`: the template to edit by hand.
#
# Topic tree: docs/mqtt.md. Who may do what, and why: docs/security.md.
#
# Rules:
# - Anything not allowed here is denied. A denied PUBLISH is dropped; MQTT v5
#   clients (the bridge and the hub) get PUBACK "not authorized" (0x87). The bridge
#   then logs an error ("broker refused a reading ...: Not authorized; dropped"),
#   counts it (counters.refused in its status; the "refused" column of `garden
#   bridge status`) and deletes the reading from its spool: it would never be
#   accepted. MQTT 3.1.1 clients get a plain PUBACK and never know.
# - `read` is checked on every message the broker delivers: a client may
#   SUBSCRIBE to any filter (Mosquitto 2 grants it), but receives only the
#   messages, retained ones included, whose topics it may read.
# - `+` in a rule matches one topic level, `#` the rest.
# - `pattern` rules apply to every user; %u is the MQTT username, %c the client id.
#   Mosquitto denies anything a `pattern` rule would grant to a client whose client
#   id or username holds `+` or `#` (it still accepts the connection), so a crafted
#   client id can't widen a pattern. Our own client ids are built from names
#   restricted to [A-Za-z0-9_-] (firmware_bridge/topics.py), so they never hit that.
# - The MQTT username of a bridge IS its bridge id (GARDEN_BRIDGE_ID): the pattern
#   below lets each bridge write only its own status and last will. It applies to
#   every user, so never name a bridge `hub`, `volunteer`, `health` or
#   `homeassistant`: that user could then write the bridge's status.
# - A bridge writes the telemetry and status (and Home Assistant discovery) of its
#   OWN nodes only, and reads only their configs: four lines per node. Node ids
#   carry no bridge prefix, so each bridge's nodes are listed; a node that is in no
#   list is refused. To add a node: add it to `[bridges.<id>] nodes` in garden.toml,
#   run `garden secure init` again (it keeps every password and rewrites this
#   file), install the file, then reload the broker: natively `sudo systemctl reload
#   mosquitto` (SIGHUP: Mosquitto rereads this file and applies it to clients that
#   are already connected); in compose `docker-compose up -d --force-recreate
#   mosquitto`. Or copy a node's four lines here by hand.

# --- every bridge: its own status (retained, and its last will) ------------------
pattern readwrite {root}/+/bridge/%u/status

# --- every CLI: the hub's answers to it alone --------------------------------------
# A CLI's client id is its reply topic's last level (cli-<random>), so each client
# reads only its own answers, which may hold the member's own contact details
# (garden member show, garden member export).
pattern read {root}/+/reply/%c
"""

_OTHERS = """
# --- the hub (garden hub run): reads what bridges publish, writes its own topics --
user hub
topic read {root}/+/node/+/telemetry
topic read {root}/+/node/+/status
topic read {root}/+/bridge/+/status
topic readwrite {root}/+/hub/#
topic readwrite {root}/+/alert/#
topic readwrite {root}/+/event/#
# the watch inside the hub: bed profiles and node configs in, needs out,
# requests from volunteers in and its answers out
topic read {root}/+/node/+/config
topic read {root}/+/bed/+/config
topic readwrite {root}/+/bed/+/need
topic read {root}/+/cmd/#
topic write {root}/+/reply/#
# the commons inside the hub: claims, shares and the rota out (retained)
topic readwrite {root}/+/commons/#

# --- volunteers (garden bridge status, garden hub status, node config) ----------
user volunteer
topic readwrite {root}/+/node/+/config
topic read {root}/+/node/+/status
topic read {root}/+/bridge/+/status
topic read {root}/+/hub/+/status
topic read {root}/+/hub/+/commons
topic read {root}/+/alert/#
topic read {root}/+/event/#
topic write {root}/+/event/config
topic readwrite {root}/+/bed/+/config
topic read {root}/+/bed/+/need
# requests to the hub (garden alerts ..., garden member/water/harvest ...); the
# answers come on each CLI's own reply topic (the pattern at the top)
topic write {root}/+/cmd/#
# the commons' state: who claimed which bed, open harvest shares, the rota
topic read {root}/+/commons/#

# --- the broker's own healthcheck (compose only; its password is made at start) --
user health
topic read $SYS/broker/uptime

# --- Home Assistant (optional): uncomment, and add a password for it -------------
#user homeassistant
#topic read {ha}/#
#topic read {root}/+/node/+/telemetry
#topic read {root}/+/node/+/status
#topic read {root}/+/bridge/+/status
"""


def node_rules(garden: str, node: str) -> tuple[str, ...]:
    """A bridge's four lines for one of its nodes."""
    return (
        f"topic write {ROOT}/+/node/{node}/telemetry",
        f"topic write {ROOT}/+/node/{node}/status",
        f"topic read {ROOT}/+/node/{node}/config",
        f"topic write {Topics(garden).ha_discovery(node)}",
    )


def _bridge_block(garden: str, b: BridgeNodes) -> str:
    nodes = ", ".join(b.nodes) if b.nodes else "none yet"
    title = f"# --- bridge {b.bridge}: its nodes {nodes} "
    lines = [title + "-" * max(3, 84 - len(title)), f"user {b.bridge}"]
    if not b.nodes:
        lines.append("# no nodes yet: only its own status (the pattern at the top)")
    for node in b.nodes:
        lines.extend(node_rules(garden, node))
    return "\n".join(lines) + "\n"


def render_acl(garden: str, bridges: Sequence[BridgeNodes]) -> str:
    """The garden's ACL file: the patterns, one block per bridge, the hub, volunteers, health."""
    Topics(garden)  # checks the garden id
    check_bridges(bridges)
    summary = "; ".join(f"{b.bridge} ({', '.join(b.nodes) or 'no nodes yet'})" for b in bridges) or "none"
    text = _HEADER.format(garden=garden, summary=summary, root=ROOT)
    text += "".join("\n" + _bridge_block(garden, b) for b in bridges)
    return text + _OTHERS.format(root=ROOT, ha=HA_DISCOVERY_PREFIX)


# --------------------------------------------------------------- the password file


def hash_password(password: str, salt: bytes, iterations: int = ITERATIONS) -> str:
    """Mosquitto 2.0's ``$7$`` hash of ``password`` (PBKDF2-HMAC-SHA512, 64 bytes)."""
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_user_line(user: str, password: str) -> None:
    if not user or ":" in user or any(c.isspace() for c in user):
        raise ConfigError(f"user {user!r}", "an MQTT user name has no ':' and no blanks")
    if not password or "\n" in password or "\r" in password:
        raise ConfigError(f"the password of {user!r}", "must be one non-empty line")


def password_file_text(users: Mapping[str, str], random_bytes: Callable[[int], bytes]) -> str:
    """The password file for ``users`` (name -> plaintext), each with a fresh salt."""
    lines = []
    for user, password in users.items():
        check_user_line(user, password)
        lines.append(f"{user}:{hash_password(password, random_bytes(SALT_BYTES))}")
    return "".join(line + "\n" for line in lines)
