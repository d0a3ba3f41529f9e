"""Session-wide real servers shared by every test folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import Influxd


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    server = Influxd(tmp_path_factory.mktemp("influxd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def running_influxd(influxd: Influxd) -> Influxd:
    """The session's InfluxDB, restarted if an earlier test left it stopped."""
    if influxd.proc is None:
        influxd.start()
    return influxd
