"""``garden dashboards push`` against a fake Grafana.

Grafana itself cannot run where these tests run, so ``tests/fake_grafana.py``
serves the few endpoints of Grafana's HTTP API that grafana-client calls for a
push (folders, dashboards/db, datasources/uid, health), with Grafana's shapes,
status codes and auth. The client side is the real grafana-client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from garden.cli.app import app
from tests.fake_grafana import FakeGrafana, running
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "dashboards" / "json").glob("*.json"))
runner = CliRunner()
NO_ENV: dict[str, str | None] = {k: None for k in ("GARDEN_GRAFANA_URL", "GARDEN_GRAFANA_TOKEN", "GARDEN_GRAFANA_USER",
                                                   "GARDEN_GRAFANA_PASSWORD")}  # fmt: skip


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    with running(FakeGrafana()) as fake:
        yield fake


def push(*args: str, **env: str | None) -> Result:
    return runner.invoke(app, ["dashboards", "push", *args], env={**NO_ENV, "COLUMNS": "200", **env})


def test_push_creates_the_folder_and_every_dashboard_then_updates_them(grafana: FakeGrafana) -> None:
    result = push("--grafana-url", grafana.url, "--json", GARDEN_GRAFANA_TOKEN=grafana.token)
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["folder"] == {"title": "Garden", "uid": "garden", "created": True}
    assert body["datasource"] is True
    uids = {json.loads(f.read_text())["uid"] for f in FILES}
    assert {d["uid"] for d in body["dashboards"]} == uids
    assert {d["version"] for d in body["dashboards"]} == {1}
    assert set(grafana.dashboards) == uids
    for uid, stored in grafana.dashboards.items():
        assert stored["folderUid"] == "garden"
        assert stored["model"]["id"] is None
        assert stored["model"]["title"]
        assert stored["model"]["panels"] == next(
            json.loads(f.read_text())["panels"] for f in FILES if json.loads(f.read_text())["uid"] == uid
        )
    saves = [b for m, p, b in grafana.requests if p == "/api/dashboards/db"]
    assert all(b["overwrite"] is True for b in saves)

    result = push("--grafana-url", grafana.url + "/", "--json", GARDEN_GRAFANA_TOKEN=grafana.token)
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["folder"]["created"] is False
    assert {d["version"] for d in body["dashboards"]} == {2}
    assert len(grafana.folders) == 1 and len(grafana.dashboards) == len(FILES)


def test_push_with_user_and_password_into_another_folder(grafana: FakeGrafana) -> None:
    result = push("--grafana-url", grafana.url, "--user", grafana.user, "--folder", "Allotment 7",
                  GARDEN_GRAFANA_PASSWORD=grafana.password)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Allotment 7 (new)" in result.output
    assert "Garden overview" in result.output and "/d/garden-overview/" in result.output
    assert {d["folderUid"] for d in grafana.dashboards.values()} == {"allotment-7"}


def test_push_warns_when_the_datasource_is_missing(grafana: FakeGrafana) -> None:
    grafana.datasources.clear()
    result = push("--grafana-url", grafana.url, GARDEN_GRAFANA_URL=None, GARDEN_GRAFANA_TOKEN=grafana.token)
    assert result.exit_code == 0, result.output
    assert "no datasource with uid 'garden-influx'" in result.output


def test_push_failures(grafana: FakeGrafana, tmp_path: Path) -> None:
    result = push("--grafana-url", grafana.url, "--token", "wrong")
    assert result.exit_code == 1
    assert "refused our credentials" in result.output and "GARDEN_GRAFANA_TOKEN" in result.output
    assert not grafana.dashboards

    result = push("--grafana-url", f"http://127.0.0.1:{free_port()}", "--token", "t")
    assert result.exit_code == 1
    assert "cannot reach Grafana" in result.output

    (tmp_path / "one.json").write_text('{"uid": "x", "title": "X", "panels": []}')
    result = push("--dir", str(tmp_path), "--json", GARDEN_GRAFANA_URL=grafana.url, GARDEN_GRAFANA_TOKEN=grafana.token)
    assert result.exit_code == 0, result.output
    assert [d["uid"] for d in json.loads(result.output)["dashboards"]] == ["x"]

    (tmp_path / "two.json").write_text("{not json")
    result = push("--dir", str(tmp_path), GARDEN_GRAFANA_URL=grafana.url, GARDEN_GRAFANA_TOKEN=grafana.token)
    assert result.exit_code == 2
    assert "two.json" in result.output
    result = push("--dir", str(tmp_path / "nowhere"), GARDEN_GRAFANA_URL=grafana.url)
    assert result.exit_code == 2
    assert "no such directory" in result.output
