"""Notification channels and the dispatcher against real servers in this process.

An ``http.server`` in a thread stands in for webhook receivers and ntfy, a
socket that accepts and never answers for a dead webhook, and aiosmtpd's
Controller for the mail server. All listen on 127.0.0.1; no broker is needed.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import shutil
import socket
import ssl
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from email.header import decode_header, make_header
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from garden.notify.channels import DeliveryError, NtfyChannel, SmtpChannel, SmtpSecurity, WebhookChannel
from garden.notify.dispatch import Dispatcher
from garden.notify.notice import Notice, Recipient
from garden.notify.quiet_hours import QuietHours

from .conftest import free_port, wait_for

TOKEN = "tk_s3cr3t0k3n0fth3g4rd3n"
PASSWORD = "pw-n0t-f0r-l0gs"
NOW_MS = 1_717_200_000_000  # 2024-06-01 00:00 UTC


def notice(
    severity: str = "warning", transition: str = "raised", key: str = "water/bed-3", title: str = "Bed 3 is dry"
) -> Notice:
    return Notice(
        key=key,
        transition=transition,
        severity=severity,
        title=title,
        body=f"{key}: soil moisture 12 % (below 18 %) for 2 h",
        data={"bed": "bed-3", "vwc_pct": 12.0, "threshold": {"vwc_pct": 18.0}},
        created_ms=NOW_MS,
    )


def person(
    name: str = "ana",
    *,
    email: str | None = None,
    topic: str | None = None,
    webhook: str | None = None,
    quiet: QuietHours | None = None,
    urgent_overrides_quiet: bool = True,
) -> Recipient:
    return Recipient(name, email, topic, webhook, quiet, "UTC", urgent_overrides_quiet)


# --- real servers ---------------------------------------------------------------------------


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    snapshot: Any = None  # what ``on_request`` returned when this request came in

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """An HTTP server that records each POST and answers with scripted statuses, then ``default``."""

    def __init__(self, statuses: list[int] | None = None, default: int = 200) -> None:
        self.requests: list[Request] = []
        self.statuses = deque(statuses or [])
        self.default = default
        self.on_request: Callable[[], Any] | None = None
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                snapshot = receiver.on_request() if receiver.on_request else None
                with receiver.cond:
                    receiver.requests.append(Request(self.path, dict(self.headers.items()), body, snapshot))
                    status = receiver.statuses.popleft() if receiver.statuses else receiver.default
                    receiver.cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="test-receiver", daemon=True
        )
        self.thread.start()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Request]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.requests) >= count, timeout), (
                f"{len(self.requests)} of {count} requests after {timeout}s"
            )
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class HungServer:
    """Accepts TCP connections and never answers: a webhook that hangs until the client's timeout."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.accepted = 0
        self.first_accepted = threading.Event()
        self.conns: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, name="test-hung", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.conns.append(conn)
            self.accepted += 1
            self.first_accepted.set()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        for conn in self.conns:
            conn.close()
        self.sock.close()


@dataclass
class Mailbox:
    """An aiosmtpd handler: refuses ``nobody@`` recipients, keeps every message."""

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    rcpt_attempts: int = 0
    on_message: Callable[[], Any] | None = None
    snapshots: list[Any] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        self.rcpt_attempts += 1
        if address.startswith("nobody@"):
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        snapshot = self.on_message() if self.on_message else None
        with self.cond:
            self.messages.append(message)
            self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
            self.snapshots.append(snapshot)
            self.cond.notify_all()
        return "250 Message accepted for delivery"

    def wait_for(self, count: int, timeout: float = 5.0) -> list[EmailMessage]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)


def authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"garden",
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def make_receiver() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(statuses: list[int] | None = None, default: int = 200) -> Receiver:
        made.append(Receiver(statuses, default))
        return made[-1]

    yield make
    for server in made:
        server.close()


@pytest.fixture
def hung() -> Iterator[HungServer]:
    server = HungServer()
    yield server
    server.close()


@pytest.fixture
def smtp_server() -> Iterator[tuple[Mailbox, Callable[..., Controller]]]:
    """A mailbox and a factory for Controllers that deliver into it (stopped at teardown)."""
    mailbox = Mailbox()
    started: list[Controller] = []

    def start(**options: Any) -> Controller:
        controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), server_hostname="mail.test", **options)
        controller.start()
        started.append(controller)
        return controller

    yield mailbox, start
    for controller in started:
        controller.stop()


@pytest.fixture
def mailbox(smtp_server: tuple[Mailbox, Callable[..., Controller]]) -> tuple[Mailbox, int]:
    box, start = smtp_server
    return box, start().port


@pytest.fixture
def dispatchers() -> Iterator[Callable[..., Dispatcher]]:
    """Makes dispatchers, closes them at teardown and checks that no worker thread is left."""
    made: list[Dispatcher] = []

    def make(channels: list[Any], **options: Any) -> Dispatcher:
        made.append(Dispatcher(channels, **options))
        return made[-1]

    yield make
    for dispatcher in made:
        dispatcher.close(timeout_s=5)
    assert worker_threads() == []


def worker_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("notify-")]


FAST = {"backoff_base_s": 0.01, "backoff_cap_s": 0.05}


# --- webhook ----------------------------------------------------------------------------------


def test_webhook_posts_the_notice_as_json(receiver: Receiver) -> None:
    channel = WebhookChannel(timeout_s=2)
    channel.send(notice(), person(webhook=f"{receiver.url}/hooks/garden?k=1"))
    channel.close()
    (request,) = receiver.requests
    assert request.path == "/hooks/garden?k=1"
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    assert request.json() == {
        "key": "water/bed-3",
        "transition": "raised",
        "severity": "warning",
        "title": "Bed 3 is dry",
        "body": "water/bed-3: soil moisture 12 % (below 18 %) for 2 h",
        "data": {"bed": "bed-3", "vwc_pct": 12.0, "threshold": {"vwc_pct": 18.0}},
        "created_ms": NOW_MS,
        "recipient": "ana",
    }


def test_webhook_500_twice_then_200_is_retried_and_delivered(
    make_receiver: Callable[..., Receiver], dispatchers: Callable[..., Dispatcher]
) -> None:
    flaky = make_receiver([500, 500])
    dispatcher = dispatchers([WebhookChannel(timeout_s=2)], max_attempts=5, **FAST)
    dispatcher.submit(notice(), [person(webhook=flaky.url)])
    wait_for(lambda: dispatcher.stats()["webhook"]["sent"] == 1, 5, "the third attempt")
    assert len(flaky.requests) == 3
    assert {r.body for r in flaky.requests} == {flaky.requests[0].body}
    stats = dispatcher.stats()["webhook"]
    assert (stats["sent"], stats["retried"], stats["failed"], stats["queued"]) == (1, 2, 0, 0)


def test_webhook_400_is_not_retried(
    make_receiver: Callable[..., Receiver], dispatchers: Callable[..., Dispatcher], caplog: pytest.LogCaptureFixture
) -> None:
    refusing = make_receiver(default=400)
    with pytest.raises(DeliveryError) as caught:
        WebhookChannel(timeout_s=2).send(notice(), person(webhook=refusing.url))
    assert not caught.value.retryable
    assert "answered 400" in str(caught.value)

    dispatcher = dispatchers([WebhookChannel(timeout_s=2)], max_attempts=5, **FAST)
    dispatcher.submit(notice(), [person(webhook=refusing.url)])
    wait_for(lambda: dispatcher.stats()["webhook"]["failed"] == 1, 5, "the failure")
    assert len(refusing.requests) == 2  # one from the direct send, one from the dispatcher
    assert dispatcher.stats()["webhook"]["retried"] == 0
    gave_up = [r for r in caplog.records if "gave up" in r.getMessage()]
    assert len(gave_up) == 1 and gave_up[0].levelno == logging.WARNING


@pytest.mark.parametrize("status", [408, 429, 503])
def test_webhook_busy_answers_are_retryable(make_receiver: Callable[..., Receiver], status: int) -> None:
    busy = make_receiver(default=status)
    with pytest.raises(DeliveryError) as caught:
        WebhookChannel(timeout_s=2).send(notice(), person(webhook=busy.url))
    assert caught.value.retryable


def test_webhook_with_nothing_listening_fails_after_max_attempts(
    dispatchers: Callable[..., Dispatcher], caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook/s3cr3t-path"
    with pytest.raises(DeliveryError) as caught:
        WebhookChannel(timeout_s=2).send(notice(), person(webhook=url))
    assert caught.value.retryable
    assert "s3cr3t-path" not in str(caught.value)

    dispatcher = dispatchers([WebhookChannel(timeout_s=2)], max_attempts=4, **FAST)
    dispatcher.submit(notice(), [person(webhook=url)])
    wait_for(lambda: dispatcher.stats()["webhook"]["failed"] == 1, 5, "the failure")
    stats = dispatcher.stats()["webhook"]
    assert (stats["retried"], stats["failed"], stats["sent"]) == (3, 1, 0)  # 4 attempts in all
    gave_up = [r.getMessage() for r in caplog.records if "gave up" in r.getMessage()]
    assert len(gave_up) == 1 and "after 4 attempt(s)" in gave_up[0]
    assert all("s3cr3t-path" not in r.getMessage() for r in caplog.records if r.name.startswith("garden"))


# --- ntfy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("severity", "transition", "priority", "tags"),
    [
        ("critical", "escalated", "urgent", "rotating_light,escalated"),
        ("warning", "raised", "high", "warning,raised"),
        ("info", "repeated", "default", "information_source,repeated"),
        ("warning", "resolved", "high", "white_check_mark,resolved"),
    ],
)
def test_ntfy_publishes_as_ntfy_expects(
    receiver: Receiver, severity: str, transition: str, priority: str, tags: str
) -> None:
    channel = NtfyChannel(server=receiver.url + "/", token=TOKEN, timeout_s=2)
    channel.send(notice(severity, transition), person(topic="garden-bed-3"))
    channel.close()
    (request,) = receiver.requests
    assert request.path == "/garden-bed-3"
    assert request.body.decode() == "water/bed-3: soil moisture 12 % (below 18 %) for 2 h"
    assert request.headers["Title"] == "Bed 3 is dry"
    assert request.headers["Priority"] == priority
    assert request.headers["Tags"] == tags
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_ntfy_title_with_line_breaks_and_umlauts(receiver: Receiver) -> None:
    NtfyChannel(server=receiver.url).send(notice(title="Beet 3:\r\nzu trocken – gießen"), person(topic="t"))
    (request,) = receiver.requests
    assert "Authorization" not in request.headers
    # RFC 2047, which ntfy decodes: https://docs.ntfy.sh/publish/#message-title
    assert request.headers["Title"].startswith("=?UTF-8?B?")
    assert str(make_header(decode_header(request.headers["Title"]))) == "Beet 3: zu trocken – gießen"


def test_ntfy_token_and_topic_stay_out_of_logs_reprs_and_errors(
    make_receiver: Callable[..., Receiver], dispatchers: Callable[..., Dispatcher], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    forbidden = make_receiver(default=403)
    channel = NtfyChannel(server=forbidden.url, token=TOKEN, timeout_s=2)
    assert TOKEN not in repr(channel)
    with pytest.raises(DeliveryError) as caught:
        channel.send(notice(), person(topic="secret-topic-42"))
    assert not caught.value.retryable
    assert TOKEN not in str(caught.value) and "secret-topic-42" not in str(caught.value)
    assert "secret-topic-42" not in repr(person(topic="secret-topic-42"))

    ok = make_receiver()
    dispatcher = dispatchers(
        [NtfyChannel(server=ok.url, token=TOKEN, timeout_s=2, name="ntfy-ok"), channel], max_attempts=2, **FAST
    )
    dispatcher.submit(notice("critical"), [person(topic="secret-topic-42")])
    wait_for(lambda: dispatcher.stats()["ntfy"]["failed"] == 1, 5, "the refused publish")
    wait_for(lambda: dispatcher.stats()["ntfy-ok"]["sent"] == 1, 5, "the publish")
    assert ok.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"  # it was sent...
    assert caplog.records, "expected log records to check"
    for record in caplog.records:  # ...and never logged, by us or by requests/urllib3
        assert TOKEN not in record.getMessage(), record
    garden_records = [r.getMessage() for r in caplog.records if r.name.startswith("garden")]
    assert any("gave up" in m for m in garden_records)
    assert all("secret-topic-42" not in m for m in garden_records)


# --- SMTP -------------------------------------------------------------------------------------


def test_smtp_delivers_subject_from_to_and_body(mailbox: tuple[Mailbox, int]) -> None:
    box, port = mailbox
    SmtpChannel("127.0.0.1", port, security="none", sender="garden@commons.test", timeout_s=5).send(
        notice("critical", title="Node n7\nis silent"), person(email="ana@example.org")
    )
    (message,) = box.messages
    assert box.envelopes == [("garden@commons.test", ["ana@example.org"])]
    assert message["Subject"] == "Node n7 is silent"
    assert message["From"] == "garden@commons.test"
    assert message["To"] == "ana@example.org"
    assert message["Date"].datetime == datetime(2024, 6, 1, tzinfo=UTC)  # when the notice was made
    assert message.get_content().strip() == "water/bed-3: soil moisture 12 % (below 18 %) for 2 h"


def test_smtp_refused_recipient_is_not_retried(
    mailbox: tuple[Mailbox, int], dispatchers: Callable[..., Dispatcher]
) -> None:
    box, port = mailbox
    channel = SmtpChannel("127.0.0.1", port, security="none", timeout_s=5)
    with pytest.raises(DeliveryError) as caught:
        channel.send(notice(), person(email="nobody@example.org"))
    assert not caught.value.retryable
    assert "550" in str(caught.value)

    dispatcher = dispatchers([channel], max_attempts=5, **FAST)
    dispatcher.submit(notice(), [person(email="nobody@example.org")])
    wait_for(lambda: dispatcher.stats()["smtp"]["failed"] == 1, 5, "the refusal")
    assert box.rcpt_attempts == 2  # one from the direct send, one from the dispatcher
    assert dispatcher.stats()["smtp"]["retried"] == 0
    assert box.messages == []


def test_smtp_with_nothing_listening_is_retryable() -> None:
    channel = SmtpChannel("127.0.0.1", free_port(), security="none", timeout_s=2)
    with pytest.raises(DeliveryError) as caught:
        channel.send(notice(), person(email="ana@example.org"))
    assert caught.value.retryable


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_login_and_the_password_stays_secret(
    smtp_server: tuple[Mailbox, Callable[..., Controller]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    box, start = smtp_server
    port = start(authenticator=authenticator, auth_required=True, auth_require_tls=False).port

    good = SmtpChannel("127.0.0.1", port, security="none", username="garden", password=PASSWORD, timeout_s=5)
    good.send(notice(), person(email="ana@example.org"))
    assert len(box.messages) == 1

    bad = SmtpChannel("127.0.0.1", port, security="none", username="garden", password=PASSWORD + "x", timeout_s=5)
    with pytest.raises(DeliveryError) as caught:
        bad.send(notice(), person(email="ana@example.org"))
    assert not caught.value.retryable
    assert "login refused (535)" in str(caught.value)
    for text in (str(caught.value), repr(caught.value), repr(good), repr(bad)):
        assert PASSWORD not in text
    assert caught.value.__cause__ is None and caught.value.__context__ is not None  # suppressed in tracebacks
    assert all(PASSWORD not in r.getMessage() for r in caplog.records)
    assert len(box.messages) == 1


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is missing: run scripts/setup.sh (apt-get install openssl)")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-keyout", str(key), "-out", str(cert)),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_smtp_over_tls(
    smtp_server: tuple[Mailbox, Callable[..., Controller]], tls_files: tuple[Path, Path], security: SmtpSecurity
) -> None:
    box, start = smtp_server
    cert, key = tls_files
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    options: dict[str, Any] = (
        {"tls_context": server_context, "require_starttls": True}
        if security == "starttls"
        # aiosmtpd only counts STARTTLS as TLS when deciding to offer AUTH; this connection is TLS throughout.
        else {"ssl_context": server_context, "auth_require_tls": False}
    )
    port = start(authenticator=authenticator, auth_required=True, **options).port
    trusting = ssl.create_default_context(cafile=str(cert))
    channel = SmtpChannel(
        "127.0.0.1", port, security, username="garden", password=PASSWORD, timeout_s=5, ssl_context=trusting
    )
    channel.send(notice(), person(email="ana@example.org"))
    assert box.messages[0]["Subject"] == "Bed 3 is dry"

    # The system trust store does not know this certificate: a setting to fix, not a retry.
    untrusting = SmtpChannel("127.0.0.1", port, security, username="garden", password=PASSWORD, timeout_s=5)
    with pytest.raises(DeliveryError) as caught:
        untrusting.send(notice(), person(email="ana@example.org"))
    assert not caught.value.retryable
    assert "certificate" in str(caught.value)


# --- the dispatcher -----------------------------------------------------------------------


def test_a_dead_channel_does_not_delay_the_others(
    hung: HungServer,
    receiver: Receiver,
    mailbox: tuple[Mailbox, int],
    dispatchers: Callable[..., Dispatcher],
) -> None:
    box, smtp_port = mailbox
    dispatcher = dispatchers(
        [
            WebhookChannel(timeout_s=1.0),
            NtfyChannel(server=receiver.url, timeout_s=2),
            SmtpChannel("127.0.0.1", smtp_port, security="none", timeout_s=5),
        ],
        max_attempts=3,
        **FAST,
    )
    # What the webhook channel looks like at the moment each healthy delivery lands.
    receiver.on_request = lambda: dispatcher.stats()["webhook"]
    box.on_message = lambda: dispatcher.stats()["webhook"]

    dispatcher.submit(notice("critical", key="node/n7"), [person("ana", webhook=hung.url)])
    assert hung.first_accepted.wait(5), "the webhook never connected"
    # The webhook worker is now stuck in its first attempt.
    dispatcher.submit(notice("critical", key="node/n7"), [person("ben", topic="garden", email="ben@example.org")])
    (published,) = receiver.wait_for(1)
    (mail,) = box.wait_for(1)
    assert mail["To"] == "ben@example.org"
    for stuck in (published.snapshot, box.snapshots[0]):
        # Delivered while the webhook's first attempt was still hanging: it had not timed out yet.
        assert (stuck["sent"], stuck["retried"], stuck["failed"]) == (0, 0, 0)

    wait_for(lambda: dispatcher.stats()["webhook"]["failed"] == 1, 10, "the dead webhook to be given up")
    assert hung.accepted == 3  # exactly max_attempts
    stats = dispatcher.stats()
    assert (stats["webhook"]["retried"], stats["webhook"]["failed"], stats["webhook"]["queued"]) == (2, 1, 0)
    assert stats["ntfy"]["sent"] == 1 and stats["smtp"]["sent"] == 1


def test_a_full_queue_drops_without_blocking_and_close_abandons_the_rest(
    hung: HungServer, dispatchers: Callable[..., Dispatcher], caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher = dispatchers([WebhookChannel(timeout_s=1.0)], max_queue=2, max_attempts=1, **FAST)
    ana = person("ana", webhook=hung.url)
    dispatcher.submit(notice(key="water/bed-1"), [ana])
    assert hung.first_accepted.wait(5)
    for n in range(2, 6):  # the worker is stuck: two fit in the queue, two are dropped
        dispatcher.submit(notice(key=f"water/bed-{n}"), [ana])
    stats = dispatcher.stats()["webhook"]
    # All four returned while the first send still hung.
    assert (stats["queued"], stats["dropped"], stats["sent"], stats["failed"]) == (2, 2, 0, 0)
    assert len([r for r in caplog.records if "dropping" in r.getMessage()]) == 1  # logged once, not per notice

    dispatcher.close(timeout_s=5)
    assert worker_threads() == []
    stats = dispatcher.stats()["webhook"]
    assert (stats["abandoned"], stats["failed"], stats["queued"]) == (2, 1, 0)
    dispatcher.submit(notice(), [ana])  # after close: counted, not raised
    assert dispatcher.stats()["webhook"]["dropped"] == 3
    assert hung.accepted == 1


def test_quiet_hours_hold_all_but_critical_until_release(
    receiver: Receiver, dispatchers: Callable[..., Dispatcher]
) -> None:
    clock = [int(datetime(2024, 6, 1, 23, 0, tzinfo=UTC).timestamp() * 1000)]
    night = QuietHours(time(22, 0), time(7, 0))
    dispatcher = dispatchers([WebhookChannel(timeout_s=2)], clock_ms=lambda: clock[0], **FAST)
    strict = person("cai", webhook=f"{receiver.url}/cai", quiet=night, urgent_overrides_quiet=False)
    ana = person("ana", webhook=f"{receiver.url}/ana", quiet=night)
    dispatcher.submit(notice("warning", "raised"), [strict, ana])
    dispatcher.submit(notice("info", "resolved"), [strict, ana])
    dispatcher.submit(notice("critical", "raised", key="node/n7"), [strict, ana])
    # Jobs run in order, so had anything else not been held it would have come before this.
    (first,) = receiver.wait_for(1)
    assert (first.path, first.json()["key"]) == ("/ana", "node/n7")
    wait_for(lambda: dispatcher.stats()["webhook"]["sent"] == 1, 5, "the count")
    stats = dispatcher.stats()["webhook"]
    assert (stats["sent"], stats["deferred"], stats["queued"]) == (1, 5, 5)

    clock[0] = int(datetime(2024, 6, 2, 7, 0, tzinfo=UTC).timestamp() * 1000)
    dispatcher.poke()
    got = receiver.wait_for(6)
    order = [(r.path, r.json()["key"], r.json()["transition"]) for r in got[1:]]
    assert order == [
        ("/cai", "water/bed-3", "raised"),
        ("/ana", "water/bed-3", "raised"),
        ("/cai", "water/bed-3", "resolved"),
        ("/ana", "water/bed-3", "resolved"),
        ("/cai", "node/n7", "raised"),
    ]
    wait_for(lambda: dispatcher.stats()["webhook"]["sent"] == 6, 5, "the count")
    assert dispatcher.stats()["webhook"]["queued"] == 0


def test_close_leaves_no_worker_threads(receiver: Receiver, mailbox: tuple[Mailbox, int]) -> None:
    _, port = mailbox
    before = set(threading.enumerate())
    dispatcher = Dispatcher(
        [WebhookChannel(), NtfyChannel(server=receiver.url), SmtpChannel("127.0.0.1", port, security="none")]
    )
    assert sorted(worker_threads()) == ["notify-ntfy", "notify-smtp", "notify-webhook"]
    dispatcher.submit(notice(), [person(topic="t", webhook=receiver.url, email="ana@example.org")])
    dispatcher.close()
    dispatcher.close()  # twice is harmless
    assert worker_threads() == []
    assert set(threading.enumerate()) <= before


def test_channel_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        Dispatcher([WebhookChannel(), WebhookChannel()])
    assert worker_threads() == []
