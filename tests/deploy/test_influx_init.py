"""deploy/influxdb/init-influxdb.sh against a stand-in ``influx`` CLI.

No InfluxDB 2.x can run here (Debian ships 1.6, and nothing may be downloaded),
so a small fake ``influx`` keeps buckets, DBRP mappings and authorizations in a
JSON file and answers the few subcommands the script uses, in the output
formats of influx CLI 2.7 (tab-separated tables with --hide-headers, JSON with
tab indents). It refuses anything else, so a typo in a flag fails the test. What
this checks is the script's logic: what it creates, the scopes of the tokens,
the files and their modes, and that a second run changes nothing.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "influxdb" / "init-influxdb.sh"
ADMIN_TOKEN = "admin-token-for-tests"

FAKE_INFLUX = r"""
import json, os, sys

state_path = os.environ["FAKE_INFLUX_STATE"]
with open(os.environ["FAKE_INFLUX_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\n")
state = json.load(open(state_path))


def fail(message):
    print("Error: " + message, file=sys.stderr)
    sys.exit(1)


if os.environ.get("INFLUX_TOKEN") != os.environ["FAKE_INFLUX_ADMIN_TOKEN"]:
    fail("unauthorized: wrong token")
if os.environ.get("INFLUX_HOST") != "http://influxdb:8086":
    fail("unexpected host " + str(os.environ.get("INFLUX_HOST")))


def parse(args, flags, bools=(), multi=()):
    values, i = {m: [] for m in multi}, 0
    while i < len(args):
        name = args[i]
        if name in bools:
            values[name] = True
            i += 1
        elif name in flags or name in multi:
            if i + 1 >= len(args):
                fail("flag needs an argument: " + name)
            if name in multi:
                values[name].append(args[i + 1])
            else:
                values[name] = args[i + 1]
            i += 2
        else:
            fail("unknown flag " + name)
    return values


def new_id():
    state["next"] += 1
    return "%016x" % state["next"]


def save():
    json.dump(state, open(state_path, "w"))


def print_json(value):
    print(json.dumps(value, indent="\t"))


def auth_json(a):
    keys = ("id", "description", "token", "status", "userName", "userID", "permissions")
    return {k: a[k] for k in keys}


args = sys.argv[1:]
cmd, rest = args[:2], args[2:]
if args == ["ping"]:
    print("OK")
elif cmd == ["bucket", "list"]:
    v = parse(rest, ("--org", "--name"), ("--hide-headers",))
    for b in state["buckets"]:
        if b["name"] == v["--name"]:
            print("\t".join([b["id"], b["name"], b["retention"], "168h0m0s", "org-id", "implicit"]))
elif cmd == ["bucket", "create"]:
    v = parse(rest, ("--org", "--name", "--retention", "--description"), ("--hide-headers",))
    if any(b["name"] == v["--name"] for b in state["buckets"]):
        fail("bucket with name %s already exists" % v["--name"])
    state["buckets"].append({"id": new_id(), "name": v["--name"], "retention": v["--retention"]})
    save()
elif args[:3] == ["v1", "dbrp", "list"]:
    v = parse(args[3:], ("--org", "--bucket-id"), ("--hide-headers",))
    for d in state["dbrps"]:
        if d["bucket_id"] == v["--bucket-id"]:
            print("\t".join([d["id"], d["db"], d["bucket_id"], d["rp"], str(d["default"]).lower(), "org-id"]))
elif args[:3] == ["v1", "dbrp", "create"]:
    v = parse(args[3:], ("--org", "--db", "--rp", "--bucket-id"), ("--default", "--hide-headers"))
    if not any(b["id"] == v["--bucket-id"] for b in state["buckets"]):
        fail("bucket not found")
    state["dbrps"].append({"id": new_id(), "db": v["--db"], "rp": v["--rp"],
                           "bucket_id": v["--bucket-id"], "default": v.get("--default", False)})
    save()
elif cmd == ["auth", "list"]:
    parse(rest, ("--org",), ("--json",))
    print_json([auth_json(a) for a in state["auths"]])
elif cmd == ["auth", "create"]:
    v = parse(rest, ("--org", "--user", "--description"), ("--json",), ("--read-bucket", "--write-bucket"))
    if v.get("--user") != "admin":
        fail("could not find user")
    perms = ["read:orgs/o/buckets/" + b for b in v["--read-bucket"]]
    perms += ["write:orgs/o/buckets/" + b for b in v["--write-bucket"]]
    a = {"id": new_id(), "description": v.get("--description", ""), "token": "tok-%d==" % state["next"],
         "status": "active", "userName": "admin", "userID": "u1", "permissions": perms}
    state["auths"].append(a)
    save()
    print_json(auth_json(a))
elif cmd == ["auth", "delete"]:
    v = parse(rest, ("--id",), ("--hide-headers",))
    before = len(state["auths"])
    state["auths"] = [a for a in state["auths"] if a["id"] != v["--id"]]
    if len(state["auths"]) == before:
        fail("could not find auth")
    save()
else:
    fail("unexpected command: " + " ".join(args))
"""


class Fake:
    """The fake server's state and the commands the script ran."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.bin = tmp / "bin"
        self.bin.mkdir()
        influx = self.bin / "influx"
        influx.write_text(f"#!{sys.executable} -IS\n{FAKE_INFLUX}")  # -S: starts faster
        influx.chmod(0o755)
        self.state_path = tmp / "state.json"
        self.log_path = tmp / "commands.log"
        # What the image's own `influx setup` leaves: org, admin, the raw bucket.
        self.state_path.write_text(json.dumps({
            "next": 100, "buckets": [{"id": "000000000000000a", "name": "garden", "retention": "400d"}],
            "dbrps": [], "auths": [{"id": "0000000000000001", "description": "admin's Token",
                                    "token": ADMIN_TOKEN, "status": "active", "userName": "admin",
                                    "userID": "u1", "permissions": ["read:*", "write:*"]}],
        }))  # fmt: skip
        self.admin_token = tmp / "influxdb_admin_token"
        self.admin_token.write_text(ADMIN_TOKEN + "\n")
        self.tokens = tmp / "tokens"

    @property
    def state(self) -> dict[str, Any]:
        return json.loads(self.state_path.read_text())  # type: ignore[no-any-return]

    def commands(self) -> list[list[str]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]

    def run(self, **env: str) -> subprocess.CompletedProcess[str]:
        self.log_path.unlink(missing_ok=True)
        run_env = {
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "FAKE_INFLUX_STATE": str(self.state_path),
            "FAKE_INFLUX_LOG": str(self.log_path),
            "FAKE_INFLUX_ADMIN_TOKEN": ADMIN_TOKEN,
            "INFLUX_HOST": "http://influxdb:8086",
            "INFLUX_CONFIGS_PATH_OVERRIDE": str(self.tmp / "configs"),
            "GARDEN_INFLUX_ADMIN_TOKEN_FILE": str(self.admin_token),
            "GARDEN_TOKENS_DIR": str(self.tokens),
            "GARDEN_INFLUX_WAIT_S": "2",
            # Whoever runs the tests can chown to themselves.
            "GARDEN_HUB_UID": str(os.getuid()),
            "GARDEN_GRAFANA_UID": str(os.getuid()),
            **env,
        }
        return subprocess.run(["bash", str(SCRIPT)], env=run_env, capture_output=True, text=True, timeout=60)

    def auth(self, description: str) -> dict[str, Any]:
        found = [a for a in self.state["auths"] if a["description"] == description]
        assert len(found) == 1, f"{len(found)} authorizations named {description}"
        return found[0]

    def bucket_ids(self) -> dict[str, str]:
        return {b["name"]: b["id"] for b in self.state["buckets"]}


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    return Fake(tmp_path)


def writes_of(auth: dict[str, Any]) -> set[str]:
    return {p.split("/")[-1] for p in auth["permissions"] if p.startswith("write:")}


def reads_of(auth: dict[str, Any]) -> set[str]:
    return {p.split("/")[-1] for p in auth["permissions"] if p.startswith("read:")}


def test_first_run_creates_buckets_mappings_and_scoped_tokens(fake: Fake) -> None:
    result = fake.run()
    assert result.returncode == 0, result.stderr
    buckets = fake.bucket_ids()
    assert set(buckets) == {"garden", "garden/hourly", "garden/daily"}
    retention = {b["name"]: b["retention"] for b in fake.state["buckets"]}
    assert retention == {"garden": "400d", "garden/hourly": "1826d", "garden/daily": "0"}  # as garden/schema.py
    mappings = {(d["db"], d["rp"], d["bucket_id"], d["default"]) for d in fake.state["dbrps"]}
    assert mappings == {
        ("garden", "raw", buckets["garden"], True),
        ("garden", "hourly", buckets["garden/hourly"], False),
        ("garden", "daily", buckets["garden/daily"], False),
    }
    hub, hub_read, grafana = fake.auth("garden-hub"), fake.auth("garden-hub-read"), fake.auth("garden-grafana")
    # The hub has two tokens, one per job (docs/deploy.md): it writes with one and queries with the other.
    assert writes_of(hub) == set(buckets.values()) and reads_of(hub) == set(), "the hub's write token only writes"
    assert reads_of(hub_read) == set(buckets.values()) and writes_of(hub_read) == set(), "its read token only reads"
    assert reads_of(grafana) == set(buckets.values()) and writes_of(grafana) == set(), "Grafana only reads"
    assert len({hub["token"], hub_read["token"], grafana["token"]}) == 3
    for name, auth in (("hub", hub), ("hub-read", hub_read), ("grafana", grafana)):
        file = fake.tokens / f"{name}.token"
        assert file.read_text().strip() == auth["token"]
        assert stat.S_IMODE(file.stat().st_mode) == 0o400
        assert file.stat().st_uid == os.getuid()
    # No Flux anywhere, and the admin token never reaches a command line.
    for command in fake.commands():
        assert command[0] in ("ping", "bucket", "v1", "auth")
        assert ADMIN_TOKEN not in " ".join(command)


def token_files(fake: Fake) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(fake.tokens.glob("*.token"))}


def test_second_run_changes_nothing(fake: Fake) -> None:
    assert fake.run().returncode == 0
    before = (fake.state, token_files(fake))
    assert set(before[1]) == {"hub.token", "hub-read.token", "grafana.token"}
    again = fake.run()
    assert again.returncode == 0, again.stderr
    assert not [c for c in fake.commands() if "create" in c or "delete" in c]
    assert (fake.state, token_files(fake)) == before


def test_a_lost_token_file_gets_a_new_token_and_the_old_one_is_revoked(fake: Fake) -> None:
    assert fake.run().returncode == 0
    old_grafana, hub, hub_read = fake.auth("garden-grafana"), fake.auth("garden-hub"), fake.auth("garden-hub-read")
    (fake.tokens / "grafana.token").unlink()
    assert fake.run().returncode == 0
    new_grafana = fake.auth("garden-grafana")
    assert new_grafana["id"] != old_grafana["id"]
    assert (fake.tokens / "grafana.token").read_text().strip() == new_grafana["token"]
    assert fake.auth("garden-hub") == hub and fake.auth("garden-hub-read") == hub_read


def test_an_earlier_read_write_hub_token_is_replaced_by_a_write_only_one(fake: Fake) -> None:
    """Before the hub had two tokens, hub.token could read as well (GARDEN_HUB_INFLUX_READ=true)."""
    assert fake.run().returncode == 0
    state = fake.state
    old = next(a for a in state["auths"] if a["description"] == "garden-hub")
    old["permissions"] += [p.replace("write:", "read:") for p in old["permissions"]]
    fake.state_path.write_text(json.dumps(state))
    spec = fake.tokens / "hub.token.spec"
    spec.write_text(spec.read_text().strip() + " " + " ".join(f"--read-bucket {b}" for b in reads_of(old)) + "\n")
    result = fake.run(GARDEN_HUB_INFLUX_READ="true")
    assert result.returncode == 0, result.stderr
    assert "GARDEN_HUB_INFLUX_READ is no longer used" in result.stdout
    hub = fake.auth("garden-hub")
    assert hub["id"] != old["id"], "the token that could read is revoked"
    assert writes_of(hub) == set(fake.bucket_ids().values()) and reads_of(hub) == set()
    assert (fake.tokens / "hub.token").read_text().strip() == hub["token"]
    assert reads_of(fake.auth("garden-hub-read")) == set(fake.bucket_ids().values())


def test_missing_admin_token_fails_clearly(fake: Fake) -> None:
    result = fake.run(GARDEN_INFLUX_ADMIN_TOKEN_FILE=str(fake.tmp / "nope"))
    assert result.returncode != 0
    assert "cannot read" in result.stderr
    assert fake.commands() == []
