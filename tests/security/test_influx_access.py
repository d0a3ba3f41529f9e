"""Scoped InfluxDB credentials against the real influxd 1.6 with ``auth-enabled = true``.

The write credential (user ``<db>-ingest``, WRITE only) writes and cannot read; the
read credential (``<db>-reader``, READ only) reads and cannot write; anonymous
requests get nothing; ``garden hub run`` with the two (and the real Mosquitto)
stores readings, warms its watch up and computes rollups. Everything the server
allows or refuses here is its own answer: no stand-in for InfluxDB, except the
path-translating proxy of the v2 write test (see its docstring).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from firmware_bridge.errors import ConfigError
from garden.cli.app import app
from garden.errors import GardenError
from garden.influx import Influx, InfluxAuthError, InfluxSettings
from garden.influx_access import (
    InfluxUserError,
    apply_users,
    check_scopes,
    grant_statements,
    user_statements,
)
from garden.points import line
from garden.settings import influx_admin_settings, load_hub_settings
from tests.integration.conftest import Broker, HubProcess, wait_for
from tests.servers import Influxd, V2WriteProxy

from .conftest import ADMIN_PASSWORD, ADMIN_USER, Garden, Locked

pytestmark = pytest.mark.integration

runner = CliRunner()
NOW_MS = int(time.time() * 1000)


def count(garden: Garden, measurement: str, rp: str = "") -> int:
    source = f'"{rp}"."{measurement}"' if rp else f'"{measurement}"'
    rows = garden.admin_query(f"SELECT count(*) FROM {source}")
    return max((int(v) for row in rows for v in row[1:] if isinstance(v, int)), default=0)


def grants(garden: Garden, user: str) -> dict[str, str]:
    rows = garden.admin_query(f'SHOW GRANTS FOR "{user}"')
    return {str(db): str(privilege) for db, privilege in rows}


def admins(garden: Garden) -> dict[str, bool]:
    return {str(name): bool(is_admin) for name, is_admin in garden.admin_query("SHOW USERS")}


def reading(node: str, ts: int, seq: int, vwc: float = 24.0) -> str:
    tags = {"garden": "g", "bed": "bed-1", "node": node, "sensor": "sm0"}
    return line("soil_moisture", tags, {"raw": 400.0, "vwc_pct": vwc, "seq": seq, "boot": 1}, ts)


@pytest.fixture
def users(scoped_garden: Garden) -> Garden:
    apply_users(scoped_garden.admin, scoped_garden.database, scoped_garden.writer, scoped_garden.reader)
    return scoped_garden


# ------------------------------------------------------------------ anonymous


def test_anonymous_queries_and_writes_are_refused(users: Garden) -> None:
    anonymous = Influx(InfluxSettings(url=users.locked.url, database=users.database))
    with pytest.raises(InfluxAuthError) as queried:
        anonymous.query("SHOW MEASUREMENTS")
    assert "unable to parse authentication credentials" in str(queried.value)
    with pytest.raises(InfluxAuthError) as wrote:
        anonymous.write_lines([reading("anon", NOW_MS, 1)])
    assert not wrote.value.forbidden  # 401: no credentials, not a missing privilege
    anonymous.close()
    assert count(users, "soil_moisture") == 0


# -------------------------------------------------------------- the two users


def test_the_write_credential_writes_but_cannot_query(users: Garden) -> None:
    writer = Influx(users.settings(write=users.writer))
    writer.write_lines([reading("n1", NOW_MS - 60_000, 1), reading("n1", NOW_MS, 2)])
    assert count(users, "soil_moisture") == 2, "the writer's points are in the database"
    with pytest.raises(InfluxAuthError) as caught:
        writer.query('SELECT "vwc_pct" FROM "soil_moisture"')
    err = caught.value
    assert isinstance(err, GardenError) and err.forbidden
    message = str(err)
    # It names the credential, why it was used, the server's reason and what to set.
    assert f"the write credential (user {users.writer[0]}), used for queries as no read credential is set" in message
    assert "may not query" in message and f"requires READ on {users.database}" in message
    assert "GARDEN_INFLUX_READ_USERNAME" in message
    assert users.writer[1] not in message
    writer.close()


def test_the_read_credential_queries_but_cannot_write(users: Garden) -> None:
    Influx(users.settings(write=users.writer)).write_lines([reading("n1", NOW_MS, 1, vwc=31.5)])
    reader = Influx(users.settings(read=users.reader))
    rows = reader.query('SELECT "vwc_pct" FROM "soil_moisture" WHERE "node" = $node', {"node": "n1"})
    assert [r["vwc_pct"] for s in rows for r in s.records()] == [31.5]
    # The reader set as the (only) write credential: InfluxDB refuses the write.
    as_writer = Influx(users.settings(write=users.reader))
    with pytest.raises(InfluxAuthError) as caught:
        as_writer.write_lines([reading("n2", NOW_MS, 1), reading("n1", NOW_MS + 1, 2)])
    assert caught.value.forbidden
    assert f"the write credential (user {users.reader[0]}) may not write" in str(caught.value)
    assert "not authorized to write to database" in str(caught.value)
    assert count(users, "soil_moisture") == 1, "nothing the reader sent was stored"
    assert users.admin_query('SHOW TAG VALUES FROM "soil_moisture" WITH KEY = "node"') == [["node", "n1"]]
    reader.close()
    as_writer.close()


def test_one_influx_writes_as_the_writer_and_queries_as_the_reader(users: Garden) -> None:
    """The hub's case: one Influx, two credentials, each used for its own job only."""
    both = Influx(users.settings(write=users.writer, read=users.reader))
    both.write_lines([reading("n3", NOW_MS, 7)])
    assert [r["seq"] for s in both.query('SELECT "seq" FROM "soil_moisture"') for r in s.records()] == [7]
    text = repr(both.settings)
    assert f"write: user {users.writer[0]}" in text and f"read: user {users.reader[0]}" in text
    assert users.writer[1] not in text and users.reader[1] not in text
    both.close()


@pytest.fixture
def token_proxy(locked_influxd: Locked) -> Iterator[V2WriteProxy]:
    proxy = V2WriteProxy(locked_influxd.url)
    yield proxy
    proxy.close()


def test_the_v2_write_path_logs_in_as_the_writer(users: Garden, token_proxy: V2WriteProxy) -> None:
    settings = replace(users.settings(write=users.writer, read=users.reader), url=token_proxy.url)
    influx = Influx(settings)
    assert influx.ping().has_v2_write
    influx.write_lines([reading("v2", NOW_MS, 3)])
    assert token_proxy.users == [users.writer[0]], "influxdb-client sent the write credential, and only it"
    assert count(users, "soil_moisture") == 1
    # The reader's credential on the same path: the engine refuses it, and says who.
    as_reader = Influx(replace(users.settings(write=users.reader), url=token_proxy.url))
    with pytest.raises(InfluxAuthError, match=f"user {users.reader[0]}\\) may not write"):
        as_reader.write_lines([reading("v2", NOW_MS + 1, 4)])
    assert count(users, "soil_moisture") == 1
    influx.close()
    as_reader.close()


# --------------------------------------------------------------- the statements


def test_statements_quote_names_and_passwords_as_influxql_wants(scoped_garden: Garden) -> None:
    """A name with a double quote and a backslash, a password with both kinds of quote and a
    backslash: the statements make exactly that user on the real server, who then logs in."""
    writer, reader = ('w"ei\\rd ü', "p'q\\r\"s"), ("r'eader", 'x"y\\z')
    assert user_statements(writer, reader) == [
        'CREATE USER "w\\"ei\\\\rd ü" WITH PASSWORD \'p\\\'q\\\\r"s\'',
        "CREATE USER \"r'eader\" WITH PASSWORD 'x\"y\\\\z'",
    ]
    assert grant_statements("garden", "ingest", "reader") == [
        'REVOKE ALL PRIVILEGES FROM "ingest"',
        'GRANT WRITE ON "garden" TO "ingest"',
        'REVOKE ALL PRIVILEGES FROM "reader"',
        'GRANT READ ON "garden" TO "reader"',
    ]
    apply_users(scoped_garden.admin, scoped_garden.database, writer, reader)
    assert {writer[0], reader[0]} <= set(admins(scoped_garden))
    Influx(scoped_garden.settings(write=writer)).write_lines([reading("q", NOW_MS, 1)])
    rows = Influx(scoped_garden.settings(read=reader)).query('SELECT "seq" FROM "soil_moisture"')
    assert [r["seq"] for s in rows for r in s.records()] == [1]


@pytest.mark.parametrize(
    ("writer", "reader", "says"),
    [
        (("", "pw"), ("reader", "pw"), "username required"),
        (("in:gest", "pw"), ("reader", "pw"), "could never log in"),
        (("ingest", "pw"), ("ingest", "pw2"), "both the writer and the reader"),
        (("ingest", ""), ("reader", "pw"), "empty: it would protect nothing"),
        (("ingest", "pw"), ("reader", "line\nbreak"), "control character"),
        (("ingest\n", "pw"), ("reader", "pw"), "control character"),
        ((" ingest", "pw"), ("reader", "pw"), "starts or ends with a space"),
    ],
)
def test_names_and_passwords_that_cannot_be_users_are_refused_clearly(
    writer: tuple[str, str], reader: tuple[str, str], says: str
) -> None:
    with pytest.raises(InfluxUserError, match=says):
        user_statements(writer, reader)


def test_apply_users_refuses_to_touch_its_own_admin(scoped_garden: Garden) -> None:
    with pytest.raises(InfluxUserError, match="is the admin we log in as"):
        apply_users(scoped_garden.admin, scoped_garden.database, (ADMIN_USER, "x"), scoped_garden.reader)
    assert admins(scoped_garden)[ADMIN_USER] is True


def test_apply_users_needs_the_database(scoped_garden: Garden) -> None:
    with pytest.raises(GardenError, match="garden hub init"):
        apply_users(scoped_garden.admin, "no_such_db", scoped_garden.writer, scoped_garden.reader)
    assert scoped_garden.writer[0] not in admins(scoped_garden), "no user made for a database that is not there"


# ------------------------------------------------------------------ check_scopes


def statuses(rows: list[tuple[str, str, str]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for status, subject, _ in rows:
        found.setdefault(subject, []).append(status)
    return found


def test_check_scopes_passes_the_right_setup(users: Garden) -> None:
    rows = check_scopes(users.settings(write=users.writer, read=users.reader))
    assert statuses(rows) == {
        "anonymous": ["ok"],
        "write credential": ["ok", "ok", "ok"],
        "read credential": ["ok", "ok", "ok"],
    }, rows
    messages = [m for _, _, m in rows]
    assert f"user {users.writer[0]} may write to {users.database}" in messages
    assert f"user {users.writer[0]} may not read {users.database}" in messages
    assert f"user {users.reader[0]} may not write to {users.database}" in messages
    assert not any(users.writer[1] in m or users.reader[1] in m or ADMIN_PASSWORD in m for m in messages)
    assert count(users, "soil_moisture") == 0, "the probes store nothing"
    # Only what `garden hub init` itself writes: the dashboards' rp_choice (garden/schema.py).
    assert users.admin_query("SHOW MEASUREMENTS") == [["rp_choice"]]


def test_check_scopes_fails_an_admin_as_the_write_credential(users: Garden) -> None:
    rows = check_scopes(users.settings(write=(ADMIN_USER, ADMIN_PASSWORD), read=users.reader))
    failed = [m for status, subject, m in rows if status == "fail" and subject == "write credential"]
    assert any("may also read" in m and "too much scope" in m for m in failed), rows
    assert any("is an InfluxDB admin" in m for m in failed), rows
    assert statuses(rows)["read credential"] == ["ok", "ok", "ok"]


def test_check_scopes_fails_a_reader_that_may_write(users: Garden) -> None:
    users.admin_query(f'GRANT ALL ON "{users.database}" TO "{users.reader[0]}"')
    rows = check_scopes(users.settings(write=users.writer, read=users.reader))
    assert ("fail", "read credential") in {(s, subj) for s, subj, _ in rows}
    assert any("may also write" in m for s, subj, m in rows if subj == "read credential" and s == "fail"), rows


def test_check_scopes_without_a_read_credential(users: Garden) -> None:
    # A write-only user, and nothing to query with: the queries would fail.
    rows = check_scopes(users.settings(write=users.writer))
    assert any(s == "fail" and "queries use it" in m for s, _, m in rows), rows
    # One user that may do both: it works, but one stolen credential gives both: a warning.
    users.admin_query(f'GRANT ALL ON "{users.database}" TO "{users.writer[0]}"')
    rows = check_scopes(users.settings(write=users.writer))
    assert [s for s, subj, _ in rows if subj == "write credential"] == ["ok", "warn", "ok"], rows


def test_check_scopes_fails_a_wrong_password(users: Garden) -> None:
    rows = check_scopes(users.settings(write=(users.writer[0], "wrong"), read=users.reader))
    assert [(s, m) for s, subj, m in rows if subj == "write credential"] == [
        ("fail", f"user {users.writer[0]} is refused (authorization failed): check GARDEN_INFLUX_TOKEN (2.x/3.x) "
                 "or GARDEN_INFLUX_USERNAME/GARDEN_INFLUX_PASSWORD (1.x)")
    ]  # fmt: skip


def test_check_scopes_fails_an_influxdb_that_takes_anyone(influxd: Influxd) -> None:
    """The session's usual influxd has auth off: anyone may read and write."""
    open_db = InfluxSettings(url=influxd.url, database="security_open")
    Influx(open_db).execute('CREATE DATABASE "security_open"')
    rows = check_scopes(replace(open_db, username="w", password="x", read_username="r", read_password="y"))
    assert [(s, subj) for s, subj, _ in rows] == [
        ("fail", "anonymous"),
        ("warn", "write credential"),  # InfluxDB checks no credential then: nothing to probe
        ("warn", "read credential"),
    ]
    assert "InfluxDB accepts anonymous requests" in rows[0][2] and "may read and write" in rows[0][2]
    assert "not checked" in rows[1][2] and "user r" in rows[2][2]


def test_check_scopes_fails_auth_on_without_an_admin(tmp_path: Path) -> None:
    server = Influxd(tmp_path, auth=True)
    server.start()
    try:
        rows = check_scopes(InfluxSettings(url=server.url))
    finally:
        server.stop()
    assert rows[0][:2] == ("fail", "anonymous") and "no admin user yet" in rows[0][2]


# --------------------------------------------------------------------- settings


def test_secrets_come_from_env_or_files_never_the_config(tmp_path: Path) -> None:
    config = tmp_path / "garden.toml"
    for key in ("token", "password", "read_token", "read_password"):
        config.write_text(f'[influx]\n{key} = "s3cret"\n')
        with pytest.raises(ConfigError) as caught:
            load_hub_settings(config, env={})
        var = f"GARDEN_INFLUX_{key.upper()}"
        assert caught.value.path == f"influx.{key}" and f"set {var} or {var}_FILE" in str(caught.value)
        assert "s3cret" not in str(caught.value)
    secret = tmp_path / "read_password"
    secret.write_text("from-a-file\n")
    config.write_text('[influx]\nusername = "ingest"\nread_username = "reader"\n')
    s = load_hub_settings(config, env={"GARDEN_INFLUX_PASSWORD": "w", "GARDEN_INFLUX_READ_PASSWORD_FILE": str(secret)})
    assert s.influx.credential(read=False).username == "ingest" and s.influx.password == "w"
    assert (s.influx.read_username, s.influx.read_password) == ("reader", "from-a-file")
    token = load_hub_settings(
        Path("/dev/null"), env={"GARDEN_INFLUX_READ_TOKEN": "tok-r", "GARDEN_INFLUX_TOKEN": "tok-w"}
    )
    assert token.influx.credential(read=True).token == "tok-r" and token.influx.credential(read=False).token == "tok-w"
    assert "tok-" not in repr(token.influx) and "from-a-file" not in repr(s.influx)
    with pytest.raises(ConfigError, match="set GARDEN_INFLUX_READ_USERNAME too"):
        load_hub_settings(Path("/dev/null"), env={"GARDEN_INFLUX_READ_PASSWORD": "lonely"})
    assert influx_admin_settings(s.influx, env={}) is None
    with pytest.raises(ConfigError, match="GARDEN_INFLUX_ADMIN_PASSWORD"):
        influx_admin_settings(s.influx, env={"GARDEN_INFLUX_ADMIN_USERNAME": "admin"})


# -------------------------------------------------------------------- the CLI


def test_garden_influx_users_run_twice(scoped_garden: Garden, tmp_path: Path) -> None:
    """The native 1.x setup: `garden hub init` and `garden influx users` as the admin."""
    g = scoped_garden
    files = {name: tmp_path / name for name in ("admin", "writer", "reader")}
    for name, secret in (("admin", ADMIN_PASSWORD), ("writer", "first-w"), ("reader", "first-r")):
        files[name].write_text(secret + "\n")
    env = {
        "GARDEN_INFLUX_DATABASE": g.database,
        "GARDEN_INFLUX_ADMIN_USERNAME": ADMIN_USER,
        "GARDEN_INFLUX_ADMIN_PASSWORD_FILE": str(files["admin"]),
        "GARDEN_INFLUX_USERNAME": g.writer[0],
        "GARDEN_INFLUX_PASSWORD_FILE": str(files["writer"]),
        "GARDEN_INFLUX_READ_USERNAME": g.reader[0],
        "GARDEN_INFLUX_READ_PASSWORD_FILE": str(files["reader"]),
    }
    args = ["influx", "users", "--influx", g.locked.url, "--config", "/dev/null", "--json"]
    init = runner.invoke(app, ["hub", "init", "--influx", g.locked.url, "--config", "/dev/null"], env=env)
    assert init.exit_code == 0, init.output
    for round_, (writer_pw, reader_pw) in enumerate((("first-w", "first-r"), ("second-w", "second-r"))):
        files["writer"].write_text(writer_pw + "\n")
        files["reader"].write_text(reader_pw + "\n")
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 0, result.output
        body = json.loads(result.stdout)
        assert body["ok"] and (body["writer"], body["reader"]) == (g.writer[0], g.reader[0])
        assert {c["status"] for c in body["checks"]} == {"ok"}, body["checks"]
        assert writer_pw not in result.output and ADMIN_PASSWORD not in result.output
        assert grants(g, g.writer[0]) == {g.database: "WRITE"}
        assert grants(g, g.reader[0]) == {g.database: "READ"}
        assert not admins(g)[g.writer[0]] and not admins(g)[g.reader[0]]
        if round_ == 0:  # someone widens both by hand; the second run narrows them again
            g.admin_query(f'GRANT ALL PRIVILEGES TO "{g.writer[0]}"')
            g.admin_query(f'GRANT ALL ON "{g.database}" TO "{g.reader[0]}"')
            assert admins(g)[g.writer[0]] and grants(g, g.reader[0]) == {g.database: "ALL PRIVILEGES"}
    # The second run's passwords are the ones that work now.
    with pytest.raises(InfluxAuthError, match="authorization failed"):
        Influx(g.settings(write=(g.writer[0], "first-w"))).write_lines([reading("cli", NOW_MS, 1)])
    Influx(g.settings(write=(g.writer[0], "second-w"))).write_lines([reading("cli", NOW_MS, 1)])
    assert count(g, "soil_moisture") == 1


def test_garden_influx_users_needs_an_admin(scoped_garden: Garden) -> None:
    env = {"GARDEN_INFLUX_USERNAME": "w", "GARDEN_INFLUX_PASSWORD": "x", "GARDEN_INFLUX_ADMIN_USERNAME": ""}
    result = runner.invoke(app, ["influx", "users", "--influx", scoped_garden.locked.url, "--config", "/dev/null"],
                           env=env)  # fmt: skip
    assert result.exit_code == 2
    assert "GARDEN_INFLUX_ADMIN_USERNAME" in result.output
    # A wrong admin password: the message names the admin's variables, not the hub's.
    env |= {"GARDEN_INFLUX_ADMIN_USERNAME": ADMIN_USER, "GARDEN_INFLUX_ADMIN_PASSWORD": "wrong",
            "GARDEN_INFLUX_READ_USERNAME": "r", "GARDEN_INFLUX_READ_PASSWORD": "y"}  # fmt: skip
    for command in (["influx", "users"], ["hub", "init"]):
        result = runner.invoke(app, [*command, "--influx", scoped_garden.locked.url, "--config", "/dev/null"], env=env)
        assert result.exit_code == 1, result.output
        text = " ".join(result.output.split())
        assert "the admin credential (user admin)" in text and "authorization failed" in text
        assert "GARDEN_INFLUX_ADMIN_USERNAME/GARDEN_INFLUX_ADMIN_PASSWORD" in text


def test_the_cli_reads_with_only_the_read_credential(users: Garden) -> None:
    Influx(users.settings(write=users.writer)).write_lines([reading("bed-1a", NOW_MS - 1000, 5, vwc=22.0)])
    env = {
        "GARDEN_INFLUX_DATABASE": users.database,
        "GARDEN_INFLUX_READ_USERNAME": users.reader[0],
        "GARDEN_INFLUX_READ_PASSWORD": users.reader[1],
        "GARDEN_INFLUX_USERNAME": "",
        "GARDEN_INFLUX_PASSWORD": "",
    }
    args = ["readings", "bed-1a", "--influx", users.locked.url, "--garden", "g", "--since", "1h", "--json"]
    result = runner.invoke(app, [*args, "--config", "/dev/null"], env=env)
    assert result.exit_code == 0, result.output
    assert [r["seq"] for r in json.loads(result.stdout)["readings"]] == [5]


# ---------------------------------------------------------------- the hub, whole


def test_hub_run_with_a_write_only_and_a_read_only_credential(
    users: Garden, security_broker: Broker, tmp_path: Path
) -> None:
    """`garden hub run` against the real Mosquitto and the locked InfluxDB: readings land (as the
    writer), the watch warms up from InfluxDB and the rollups run (as the reader), and the hub's
    log has no refusal in it."""
    g = users
    hour = 3_600_000
    # History for the watch's warm-up, written as the writer: an hour of one node.
    Influx(g.settings(write=g.writer)).write_lines(
        [reading("warm-node", NOW_MS - hour + i * 300_000, i + 1) for i in range(6)]
    )
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "writer").write_text(g.writer[1] + "\n")
    (secrets / "reader").write_text(g.reader[1] + "\n")
    garden_id = g.database
    hub = HubProcess(security_broker, g.locked.server, tmp_path, garden_id, g.database)
    hub.env.update(
        {
            "GARDEN_INFLUX_USERNAME": g.writer[0],
            "GARDEN_INFLUX_PASSWORD_FILE": str(secrets / "writer"),
            "GARDEN_INFLUX_READ_USERNAME": g.reader[0],
            "GARDEN_INFLUX_READ_PASSWORD_FILE": str(secrets / "reader"),
        }
    )
    for key in ("GARDEN_INFLUX_TOKEN", "GARDEN_INFLUX_PASSWORD", "GARDEN_INFLUX_READ_TOKEN"):
        hub.env.pop(key, None)
    hub.start()
    try:
        hub.wait_online(security_broker)
        publisher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        publisher.connect("127.0.0.1", security_broker.port)
        publisher.loop_start()
        # Readings from two hours ago (whole hours before now: the rollups take them) and now.
        two_hours_ago = NOW_MS - 2 * hour - NOW_MS % hour + 60_000  # hh:01, ten minutes in one hour
        sent = []
        for i in range(20):
            ts = two_hours_ago + i * 60_000 if i < 10 else NOW_MS - (20 - i) * 1000
            body = {"ts": ts, "node": "pub-node", "boot": 1, "seq": i + 1, "raw": {"sm0": 400},
                    "values": {"sm0": {"vwc_pct": 20.0 + i / 10}}}  # fmt: skip
            info = publisher.publish(f"garden/{garden_id}/node/pub-node/telemetry", json.dumps(body), qos=1)
            info.wait_for_publish(5)
            sent.append(i + 1)
        publisher.loop_stop()
        publisher.disconnect()
        wait_for(lambda: count(g, "soil_moisture") == 6 + len(sent), 30, "every reading in InfluxDB")
        wait_for(lambda: "watch warmed up from InfluxDB" in hub.log.read_text(errors="replace"), 30, "the warm-up")
        # The hub's first rollups run 30 s after its start; they read as the reader, write as the writer.
        wait_for(lambda: count(g, "soil_moisture", rp="hourly") > 0, 60, "hourly rollups")
    finally:
        hub.stop()
    log = hub.log.read_text(errors="replace")
    assert "watch warmed up from InfluxDB: " in log and "no history from InfluxDB yet" not in log
    for refusal in ("refused our credentials", "not authorized", "rollups not computed"):
        assert refusal not in log, f"{refusal!r} in the hub's log:\n{log[-3000:]}"
    assert g.writer[1] not in log and g.reader[1] not in log
    hourly = g.admin_query('SELECT "vwc_pct" FROM "hourly"."soil_moisture" WHERE "node" = \'pub-node\'')
    assert hourly and abs(float(hourly[0][1]) - 20.45) < 1e-6  # the mean of 20.0 .. 20.9
