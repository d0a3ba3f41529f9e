"""A small fake of Grafana's HTTP API, on loopback, for ``garden dashboards push`` and ``garden doctor``.

Grafana itself cannot run where these tests run, so this implements just the
endpoints grafana-client calls for them, with Grafana's shapes and status codes:

- ``GET /api/health`` (no auth): ``{"database": "ok", "version": ...}``
- ``GET /api/folders``, ``POST /api/folders`` (409 for a uid taken)
- ``POST /api/dashboards/db``: 400 without a title or for an unknown
  ``folderUid``, 412 for a uid that exists unless ``overwrite``; the version
  counts up on each save
- ``GET /api/dashboards/uid/<uid>``, ``GET /api/datasources/uid/<uid>`` (404 when missing)

Auth, when ``token`` is set: ``Authorization: Bearer <token>`` or basic auth
with ``user``/``password``; otherwise 401 ``{"message": "Unauthorized"}``.
Every request is recorded in ``requests``.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FakeGrafana:
    token: str | None = "s3cret-token"
    user: str = "admin"
    password: str = "admin-pw"
    datasources: set[str] = field(default_factory=lambda: {"garden-influx"})
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    url: str = ""

    def authorised(self, header: str | None) -> bool:
        if self.token is None:
            return True
        if header == f"Bearer {self.token}":
            return True
        basic = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return header == f"Basic {basic}"

    def handle(self, method: str, path: str, body: Any, auth: str | None) -> tuple[int, Any]:
        self.requests.append((method, path, body))
        path = path.split("?", 1)[0]
        if method == "GET" and path == "/api/health":
            return 200, {"commit": "fake", "database": "ok", "version": "11.3.0"}
        if not self.authorised(auth):
            return 401, {"message": "Unauthorized"}
        if method == "GET" and path == "/api/folders":
            return 200, [{"id": f["id"], "uid": f["uid"], "title": f["title"]} for f in self.folders.values()]
        if method == "POST" and path == "/api/folders":
            uid = body.get("uid") or f"f{len(self.folders) + 1}"
            if uid in self.folders:
                return 409, {"message": "a folder with the same uid already exists"}
            folder = {"id": len(self.folders) + 1, "uid": uid, "title": body["title"], "url": f"/dashboards/f/{uid}/"}
            self.folders[uid] = folder
            return 200, folder
        if method == "POST" and path == "/api/dashboards/db":
            model = body.get("dashboard") or {}
            if not model.get("title"):
                return 400, {"message": "Dashboard title cannot be empty", "status": "empty-name"}
            folder_uid = body.get("folderUid")
            if folder_uid and folder_uid not in self.folders:
                return 400, {"message": "folder not found", "status": "not-found"}
            uid = str(model.get("uid") or f"u{len(self.dashboards) + 1}")  # Grafana makes one up
            existing = self.dashboards.get(uid)
            if existing is not None and not body.get("overwrite"):
                return 412, {"message": "A dashboard with the same uid already exists", "status": "name-exists"}
            version = existing["version"] + 1 if existing else 1
            record = {"id": existing["id"] if existing else len(self.dashboards) + 1, "version": version,
                      "folderUid": folder_uid, "model": model, "message": body.get("message")}  # fmt: skip
            self.dashboards[uid] = record
            slug = re.sub(r"[^a-z0-9]+", "-", model["title"].lower()).strip("-")
            return 200, {"id": record["id"], "uid": uid, "url": f"/d/{uid}/{slug}", "status": "success",
                         "version": version, "slug": slug}  # fmt: skip
        match = re.fullmatch(r"/api/dashboards/uid/([^/]+)", path)
        if method == "GET" and match:
            found = self.dashboards.get(match.group(1))
            if found is None:
                return 404, {"message": "Dashboard not found"}
            return 200, {"dashboard": found["model"], "meta": {"folderUid": found["folderUid"]}}
        match = re.fullmatch(r"/api/datasources/uid/([^/]+)", path)
        if method == "GET" and match:
            if match.group(1) not in self.datasources:
                return 404, {"message": "Data source not found"}
            return 200, {"uid": match.group(1), "type": "influxdb", "name": "Garden InfluxDB"}
        return 404, {"message": "Not found"}


@contextmanager
def running(fake: FakeGrafana) -> Iterator[FakeGrafana]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            status, answer = fake.handle(method, self.path, body, self.headers.get("Authorization"))
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
