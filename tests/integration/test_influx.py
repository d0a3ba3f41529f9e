"""The InfluxDB adapter against the real server (Debian's influxd 1.6).

Both write paths run against the real engine: v1 ``/write`` directly (1.6 has
no ``/api/v2/write``), and influxdb-client's v2 write API through a small
path-translating proxy that does what InfluxDB 1.8 does inside: it maps
``/api/v2/write?bucket=<db>/<rp>&precision=ms`` to ``/write?db=<db>&rp=<rp>&precision=ms``
and reports version 1.8.10 on ``/ping`` so the adapter picks the v2 path. The
proxy is the one stand-in here; the data lands in the real engine.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from garden.influx import (
    Influx,
    InfluxAuthError,
    InfluxMissingDatabase,
    InfluxRejected,
    InfluxSettings,
    InfluxUnreachable,
)
from garden.points import line
from tests.servers import Influxd, V2WriteProxy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def influx(influxd: Influxd) -> Iterator[Influx]:
    client = Influx(InfluxSettings(url=influxd.url, database="adapter_test"))
    client.execute("CREATE DATABASE adapter_test")
    yield client
    client.close()


@pytest.fixture(scope="module")
def proxy(influxd: Influxd) -> Iterator[V2WriteProxy]:
    p = V2WriteProxy(influxd.url)
    yield p
    p.close()


def test_v1_write_and_bound_query(influx: Influx) -> None:
    assert not influx.ping().has_v2_write
    influx.write_lines([line("m1", {"bed": "b'1"}, {"v": 1.5}, 1_000), line("m1", {"bed": "b2"}, {"v": 2.5}, 2_000)])
    # A quote in user input is data, never query text.
    rows = influx.query('SELECT "v" FROM "m1" WHERE "bed" = $bed', {"bed": "b'1"})
    assert [s.records() for s in rows] == [[{"time": 1_000, "v": 1.5}]]


def test_v2_write_path_lands_in_the_real_engine(proxy: V2WriteProxy, influxd: Influxd) -> None:
    client = Influx(InfluxSettings(url=proxy.url, database="adapter_test", username="u", password="p"))
    assert client.ping().has_v2_write
    client.write_lines([line("m2", {"node": "n1"}, {"seq": 7}, 3_000)])
    assert proxy.seen and proxy.seen[-1].startswith("/api/v2/write?")
    direct = Influx(InfluxSettings(url=influxd.url, database="adapter_test"))
    assert direct.query('SELECT "seq" FROM "m2"')[0].records() == [{"time": 3_000, "seq": 7}]
    client.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30))
def test_user_text_round_trips(influx: Influx, text: str) -> None:
    """Any text survives as a string field; as a tag, anything but a backslash."""
    ts = abs(hash(text)) % 10**9 + 10**12
    tag = text.replace("\\", "/")
    influx.write_lines([line("roundtrip", {"bed": tag}, {"note": text}, ts)])
    rows = influx.query(
        'SELECT "note", "bed" FROM "roundtrip" WHERE "bed" = $bed AND time = $t',
        {"bed": tag, "t": ts * 1_000_000},  # InfluxQL times are ns
    )
    assert rows and rows[0].records()[0]["note"] == text
    assert rows[0].records()[0]["bed"] == tag


def test_clear_errors(influxd: Influxd) -> None:
    with pytest.raises(InfluxUnreachable, match="cannot reach InfluxDB"):
        Influx(InfluxSettings(url="http://127.0.0.1:9")).ping()
    with pytest.raises(InfluxMissingDatabase, match="garden hub init"):
        Influx(InfluxSettings(url=influxd.url, database="no_such_db")).write_lines(["m v=1 1"])
    with pytest.raises(InfluxMissingDatabase):
        Influx(InfluxSettings(url=influxd.url, database="no_such_db")).query("SELECT * FROM m")
    with pytest.raises(InfluxRejected):
        Influx(InfluxSettings(url=influxd.url, database="adapter_test")).write_lines(["bad line protocol"])


def test_auth_errors_name_the_fix(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = Influxd(tmp_path_factory.mktemp("influxd-auth"))
    server.conf.write_text(
        server.conf.read_text().replace("log-enabled = false", "log-enabled = false\n  auth-enabled = true")
    )
    server.start()
    try:
        admin = Influx(InfluxSettings(url=server.url))
        admin.execute("CREATE USER admin WITH PASSWORD 'right' WITH ALL PRIVILEGES")
        wrong = Influx(InfluxSettings(url=server.url, username="admin", password="wrong"))
        with pytest.raises(InfluxAuthError, match="GARDEN_INFLUX_PASSWORD"):
            wrong.query("SHOW DATABASES")
        right = Influx(InfluxSettings(url=server.url, username="admin", password="right"))
        assert right.query("SHOW DATABASES", database="")
    finally:
        server.stop()
