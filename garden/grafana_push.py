"""Pushing the garden's dashboards to a running Grafana through its HTTP API (grafana-client).

For a Grafana that does not load them from files (docs/dashboards.md): every
``*.json`` under ``dashboards/json/`` is saved into one folder with
``overwrite: true``, so pushing again updates in place (same uid). A Grafana
that provisions the same dashboards from files refuses the save, as it
should: change the files instead.

Auth: a service-account token (``Authorization: Bearer``), or a user and
password (basic auth), or none. grafana-client is imported only here, and
only when a command needs it.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from garden.errors import GardenError

if TYPE_CHECKING:
    from grafana_client.api import GrafanaApi

DATASOURCE_UID = "garden-influx"  # every panel refers to the datasource by this uid
TIMEOUT_S = 10.0


class GrafanaError(GardenError):
    """Grafana could not be reached, refused us, or refused a dashboard; ``status``: its HTTP status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Dashboard:
    path: Path
    uid: str
    title: str
    model: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Pushed:
    uid: str
    title: str
    url: str
    version: int | None
    status: str

    def to_json(self) -> dict[str, Any]:
        return {"uid": self.uid, "title": self.title, "url": self.url, "version": self.version, "status": self.status}


# ---------------------------------------------------------------- files


def find_dashboard_dir(explicit: Path | None = None) -> Path:
    """``explicit``, else the repository's ``dashboards/json`` (next to the package), else ./dashboards/json."""
    if explicit is not None:
        if not explicit.is_dir():
            raise GrafanaError(f"--dir {explicit}: no such directory")
        return explicit
    candidates = (
        Path(__file__).resolve().parents[1] / "dashboards" / "json",
        Path.cwd() / "dashboards" / "json",
        Path(sys.prefix) / "share" / "garden-commons" / "dashboards" / "json",
    )
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("*.json")):
            return candidate
    raise GrafanaError(
        "cannot find the dashboards (dashboards/json/*.json next to the package or here): pass --dir PATH"
    )


def load_dashboards(directory: Path) -> list[Dashboard]:
    """Every ``*.json`` dashboard model in ``directory``; GrafanaError names a bad file."""
    found = []
    for path in sorted(directory.glob("*.json")):
        try:
            model = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise GrafanaError(f"{path}: not a readable JSON file: {err}") from None
        if not isinstance(model, dict):
            raise GrafanaError(f"{path}: a dashboard must be a JSON object")
        uid, title = model.get("uid"), model.get("title")
        if not (isinstance(uid, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid)):
            raise GrafanaError(f"{path}: needs a uid of 1-40 letters, digits, '-' or '_' (got {uid!r})")
        if not (isinstance(title, str) and title.strip()):
            raise GrafanaError(f"{path}: needs a title")
        found.append(Dashboard(path, uid, title, model))
    if not found:
        raise GrafanaError(f"no dashboard JSON files in {directory}")
    return found


def folder_uid_for(title: str) -> str:
    """The uid a new folder gets: ``Garden`` -> ``garden``, as the file provisioning names it."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", title.lower()).strip("-")[:40]
    return slug or "garden"


# -------------------------------------------------------------- the API


def connect(
    url: str,
    *,
    token: str | None = None,
    user: str | None = None,
    password: str | None = None,
    timeout_s: float = TIMEOUT_S,
) -> GrafanaApi:
    """A client for the Grafana at ``url`` (``http://host:3000``, or with a sub-path)."""
    try:
        from grafana_client.api import GrafanaApi
    except ImportError:  # pragma: no cover - depends on the machine
        raise GrafanaError("grafana-client is not installed: pip install grafana-client") from None
    # Never echo the URL, and refuse one with a user or password in it (grafana-client would
    # log in with them): every message and report that names the Grafana would show them.
    if "@" in url:
        raise GrafanaError("the Grafana URL holds a user or password: set GARDEN_GRAFANA_TOKEN, or "
                           "GARDEN_GRAFANA_USER and GARDEN_GRAFANA_PASSWORD, instead")  # fmt: skip
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GrafanaError("the Grafana URL must look like http://host:3000")
    path = parts.path if parts.path.endswith("/") else parts.path + "/"  # grafana-client appends "api"
    url = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
    credential: str | tuple[str, str] | None = None
    if token:
        credential = token
    elif user:
        credential = (user, password or "")
    return GrafanaApi.from_url(url, credential=credential, timeout=timeout_s)  # type: ignore[no-any-return]


def _call(api: GrafanaApi, what: str, method: str, path: str, body: Any = None) -> Any:
    """One API call, with grafana-client's and the network's errors made into GrafanaError."""
    from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaUnauthorizedError

    where = api.url or "Grafana"
    try:
        request = getattr(api.client, method)
        return request(path, json=body) if body is not None else request(path)
    except GrafanaUnauthorizedError:
        raise GrafanaError(
            f"Grafana at {where} refused our credentials ({what}): set GARDEN_GRAFANA_TOKEN (a service "
            "account token with the Editor role) or GARDEN_GRAFANA_USER and GARDEN_GRAFANA_PASSWORD",
            401,
        ) from None
    except GrafanaClientError as err:
        if err.status_code == 403:
            raise GrafanaError(
                f"Grafana at {where} does not allow {what}: the account needs the Editor role", 403
            ) from None
        raise GrafanaError(f"Grafana at {where} refused {what}: {err.message}", err.status_code) from None
    except GrafanaException as err:
        raise GrafanaError(f"Grafana at {where} failed {what}: {err.message}") from None
    except OSError as err:  # niquests' ConnectionError and Timeout are OSErrors
        raise GrafanaError(
            f"cannot reach Grafana at {where}: {err}. Is it running? (docker compose up -d grafana)"
        ) from None


def health(api: GrafanaApi) -> dict[str, Any]:
    """``/api/health``: ``{"database": "ok", "version": ...}``; needs no credentials."""
    answer = _call(api, "the health check", "GET", "/health")
    if not isinstance(answer, dict):
        raise GrafanaError(f"Grafana at {api.url}: /api/health answered {answer!r}: is this Grafana?")
    return answer


def datasource_exists(api: GrafanaApi, uid: str = DATASOURCE_UID) -> bool:
    try:
        _call(api, "reading the datasource", "GET", f"/datasources/uid/{uid}")
    except GrafanaError as err:
        if err.status == 404:
            return False
        raise
    return True


def ensure_folder(api: GrafanaApi, title: str) -> tuple[str, bool]:
    """The uid of the folder called ``title``, created if missing; and whether it was created."""
    folders = _call(api, "listing folders", "GET", "/folders")
    for folder in folders if isinstance(folders, list) else []:
        if isinstance(folder, dict) and folder.get("title") == title and isinstance(folder.get("uid"), str):
            return str(folder["uid"]), False
    created = _call(api, f"creating the folder {title!r}", "POST", "/folders",
                    {"title": title, "uid": folder_uid_for(title)})  # fmt: skip
    if not isinstance(created, dict) or not isinstance(created.get("uid"), str):
        raise GrafanaError(f"Grafana did not say which uid the folder {title!r} got: {created!r}")
    return str(created["uid"]), True


def push_dashboards(api: GrafanaApi, dashboards: Sequence[Dashboard], folder_uid: str) -> list[Pushed]:
    """Save each dashboard into the folder, overwriting one with the same uid."""
    pushed = []
    for d in dashboards:
        model = {**d.model, "id": None}  # the server picks its own id; the uid names the dashboard
        answer = _call(
            api,
            f"saving {d.path.name}",
            "POST",
            "/dashboards/db",
            {"dashboard": model, "folderUid": folder_uid, "overwrite": True, "message": "garden dashboards push"},
        )
        answer = answer if isinstance(answer, dict) else {}
        version = answer.get("version")
        pushed.append(
            Pushed(
                uid=str(answer.get("uid") or d.uid),
                title=d.title,
                url=str(answer.get("url") or ""),
                version=version if isinstance(version, int) else None,
                status=str(answer.get("status") or "success"),
            )
        )
    return pushed
