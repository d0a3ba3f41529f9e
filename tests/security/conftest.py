"""An InfluxDB 1.6 with ``[http] auth-enabled = true``, started once per session, and its admin.

Debian's real influxd (tests/servers.py), not a stand-in: what it allows and refuses
to each credential is what these tests are about.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from garden.influx import Influx, InfluxSettings
from garden.schema import ensure_schema
from tests.integration.conftest import Broker
from tests.servers import Influxd

ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin-pass-for-tests"


@dataclass(frozen=True)
class Locked:
    """The auth-enabled server and settings that log in as its admin."""

    server: Influxd
    admin: InfluxSettings

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="session")
def locked_influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Locked]:
    server = Influxd(tmp_path_factory.mktemp("influxd-auth"), auth=True)
    server.start()
    try:
        # With auth on and no admin yet, the one thing 1.x accepts from anyone is the first admin.
        Influx(InfluxSettings(url=server.url)).execute(
            f"CREATE USER {ADMIN_USER} WITH PASSWORD '{ADMIN_PASSWORD}' WITH ALL PRIVILEGES"
        )
        yield Locked(server, InfluxSettings(url=server.url, username=ADMIN_USER, password=ADMIN_PASSWORD))
    finally:
        server.stop()


@dataclass(frozen=True)
class Garden:
    """A database of the test's own on the locked server, and names for its two users."""

    locked: Locked
    database: str
    writer: tuple[str, str]
    reader: tuple[str, str]

    @property
    def admin(self) -> InfluxSettings:
        return replace(self.locked.admin, database=self.database)

    def settings(self, *, write: tuple[str, str] | None = None, read: tuple[str, str] | None = None) -> InfluxSettings:
        """Settings as the hub gets them from its environment: a write and a read credential."""
        return InfluxSettings(
            url=self.locked.url,
            database=self.database,
            username=write[0] if write else None,
            password=write[1] if write else None,
            read_username=read[0] if read else None,
            read_password=read[1] if read else None,
        )

    def admin_query(self, q: str) -> list[list[object]]:
        influx = Influx(self.admin)
        try:
            return [list(row) for s in influx.query(q) for row in s.values]
        finally:
            influx.close()


@pytest.fixture
def scoped_garden(locked_influxd: Locked, request: pytest.FixtureRequest) -> Garden:
    """A fresh database (with the raw, hourly and daily policies) and two user names; no users yet."""
    name = f"g{abs(hash(request.node.nodeid)) % 10**8}"
    admin = Influx(replace(locked_influxd.admin, database=name))
    try:
        ensure_schema(admin)
    finally:
        admin.close()
    return Garden(locked_influxd, name, (f"{name}-ingest", "w-pass'\\1"), (f"{name}-reader", 'r-pass"2'))


@pytest.fixture(scope="session")
def security_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The real Mosquitto, as the integration tests start it."""
    broker = Broker(tmp_path_factory.mktemp("mosquitto-security"))
    broker.start()
    yield broker
    broker.stop()
