"""Adapters that deliver one :class:`Notice` to one :class:`Recipient`: ntfy, a JSON webhook, email.

Each channel has a ``name``, ``accepts(recipient)`` (the recipient has the address
it needs) and ``send(notice, recipient)``, which returns once the other side took
the message or raises :class:`DeliveryError`. ``DeliveryError.retryable`` says
whether trying again later can help (a timeout, a 503) or not (a 400, a refused
address, a wrong password); the dispatcher does the retrying.

Secrets stay out of messages, reprs and logs: passwords and tokens never appear,
and URLs are shown as scheme, host and port only, because an ntfy topic is as
good as a password and webhook paths often carry tokens.
"""

from __future__ import annotations

import base64
import json
import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Literal, Protocol
from urllib.parse import quote, urlsplit

import requests

from garden.errors import GardenError
from garden.notify.notice import Notice, Recipient

log = logging.getLogger(__name__)

SmtpSecurity = Literal["starttls", "tls", "none"]

# ntfy's priorities by name, 1 (min) to 5 (max/urgent): https://docs.ntfy.sh/publish/#message-priority
NTFY_PRIORITY = {"critical": "urgent", "warning": "high", "info": "default"}
# Tags that are emoji short codes show as an emoji before the title: https://docs.ntfy.sh/publish/#tags-emojis
NTFY_EMOJI = {"critical": "rotating_light", "warning": "warning", "info": "information_source"}
NTFY_RESOLVED_EMOJI = "white_check_mark"


class DeliveryError(GardenError):
    """A channel could not deliver a notice to a recipient.

    ``channel`` and ``recipient`` are names; ``problem`` says what went wrong without
    any secret; ``retryable`` says whether a later attempt can succeed.
    """

    def __init__(self, channel: str, recipient: str, problem: str, *, retryable: bool) -> None:
        super().__init__(f"{channel} to {recipient}: {problem}")
        self.channel = channel
        self.recipient = recipient
        self.problem = problem
        self.retryable = retryable


class Channel(Protocol):
    """What the dispatcher needs of a channel. ``send`` is called from one worker thread only."""

    name: str

    def accepts(self, recipient: Recipient) -> bool: ...

    def send(self, notice: Notice, recipient: Recipient) -> None: ...


def redact_url(url: str) -> str:
    """``scheme://host:port``: enough to find the server, nothing of the path, query or credentials."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<bad url>"
    return f"{parts.scheme}://{host}{port}"


def one_line(text: str) -> str:
    """Header values (ntfy's Title, an email's Subject) must not contain line breaks."""
    return " ".join(text.split())


# A bad URL or header: trying again cannot help.
_OUR_MISTAKES = (
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidHeader,
    requests.exceptions.URLRequired,
)


def _retryable_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


class _HttpPoster:
    """The POST, status handling and error wording that ntfy and the webhook share."""

    def __init__(self, name: str, timeout_s: float, session: requests.Session | None) -> None:
        self.name = name
        self._timeout_s = timeout_s
        self._own_session = session is None
        self._session = session if session is not None else requests.Session()

    def post(self, url: str, recipient: Recipient, *, data: bytes, headers: dict[str, str]) -> None:
        where = redact_url(url)
        try:
            response = self._session.post(
                url, data=data, headers=headers, timeout=self._timeout_s, allow_redirects=False
            )
        except requests.Timeout:
            raise DeliveryError(
                self.name, recipient.name, f"{where} did not answer within {self._timeout_s:g}s", retryable=True
            ) from None
        except requests.ConnectionError as exc:
            raise DeliveryError(
                self.name, recipient.name, f"cannot connect to {where} ({type(exc).__name__})", retryable=True
            ) from None
        except _OUR_MISTAKES as exc:
            raise DeliveryError(
                self.name, recipient.name, f"cannot post to {where} ({type(exc).__name__})", retryable=False
            ) from None
        except requests.RequestException as exc:  # a response cut short, too many redirects, ...
            raise DeliveryError(
                self.name, recipient.name, f"post to {where} failed ({type(exc).__name__})", retryable=True
            ) from None
        with response:
            status = response.status_code
            if 200 <= status < 300:
                return
            reason = one_line(response.reason or "")[:80]
        if 300 <= status < 400:
            problem = f"{where} answered {status} {reason}: redirects are not followed, configure the final URL"
        else:
            problem = f"{where} answered {status} {reason}"
        raise DeliveryError(self.name, recipient.name, problem, retryable=_retryable_status(status))

    def close(self) -> None:
        if self._own_session:
            self._session.close()


class WebhookChannel:
    """POSTs the notice as JSON to the recipient's ``webhook_url``.

    The body is ``{"key", "transition", "severity", "title", "body", "data",
    "created_ms", "recipient"}``. 2xx is delivered; 408, 429, 5xx, timeouts and
    connection errors are retryable; other answers are not.
    """

    def __init__(self, timeout_s: float = 5.0, session: requests.Session | None = None, *, name: str = "webhook"):
        self.name = name
        self._http = _HttpPoster(name, timeout_s, session)

    def accepts(self, recipient: Recipient) -> bool:
        return bool(recipient.webhook_url)

    def send(self, notice: Notice, recipient: Recipient) -> None:
        if not recipient.webhook_url:
            raise DeliveryError(self.name, recipient.name, "no webhook_url", retryable=False)
        payload = {
            "key": notice.key,
            "transition": notice.transition,
            "severity": notice.severity,
            "title": notice.title,
            "body": notice.body,
            "data": dict(notice.data),
            "created_ms": notice.created_ms,
            "recipient": recipient.name,
        }
        try:
            data = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise DeliveryError(
                self.name, recipient.name, f"notice {notice.key}: data is not JSON ({exc})", retryable=False
            ) from None
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "garden-commons"}
        self._http.post(recipient.webhook_url, recipient, data=data, headers=headers)

    def close(self) -> None:
        """Closes the HTTP session if this channel made it."""
        self._http.close()

    def __repr__(self) -> str:
        return f"WebhookChannel(name={self.name!r})"


class NtfyChannel:
    """Publishes to ``<server>/<topic>`` the way ntfy expects: https://docs.ntfy.sh/publish/.

    The body is the notice's text; ``Title``, ``Priority`` (critical → urgent,
    warning → high, info → default) and ``Tags`` go in headers, and
    ``Authorization: Bearer <token>`` when a token is given.
    """

    def __init__(
        self,
        server: str = "https://ntfy.sh",
        token: str | None = None,
        timeout_s: float = 5.0,
        *,
        session: requests.Session | None = None,
        name: str = "ntfy",
    ) -> None:
        self.name = name
        self.server = server.rstrip("/")
        self._token = token
        self._http = _HttpPoster(name, timeout_s, session)

    def accepts(self, recipient: Recipient) -> bool:
        return bool(recipient.ntfy_topic)

    def headers(self, notice: Notice) -> dict[str, str]:
        """The publish headers for a notice (without the token)."""
        emoji = NTFY_RESOLVED_EMOJI if notice.transition == "resolved" else NTFY_EMOJI[notice.severity]
        return {
            "Title": _ascii_header(one_line(notice.title)),
            "Priority": NTFY_PRIORITY[notice.severity],
            "Tags": f"{emoji},{notice.transition}",
            "Content-Type": "text/plain; charset=utf-8",
            "User-Agent": "garden-commons",
        }

    def send(self, notice: Notice, recipient: Recipient) -> None:
        if not recipient.ntfy_topic:
            raise DeliveryError(self.name, recipient.name, "no ntfy_topic", retryable=False)
        headers = self.headers(notice)
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        url = f"{self.server}/{quote(recipient.ntfy_topic, safe='')}"
        body = notice.body or notice.title
        self._http.post(url, recipient, data=body.encode("utf-8"), headers=headers)

    def close(self) -> None:
        """Closes the HTTP session if this channel made it."""
        self._http.close()

    def __repr__(self) -> str:
        return f"NtfyChannel(server={redact_url(self.server)!r}, token={'<set>' if self._token else None})"


def _ascii_header(value: str) -> str:
    """Non-ASCII header values as RFC 2047 base64, which ntfy decodes: https://docs.ntfy.sh/publish/#message-title."""
    if value.isascii():
        return value
    return f"=?UTF-8?B?{base64.b64encode(value.encode('utf-8')).decode('ascii')}?="


class SmtpChannel:
    """Sends a plain-text email with the notice's title as Subject.

    ``security`` is ``starttls`` (port 587), ``tls`` (implicit TLS, port 465) or
    ``none`` (a trusted local relay). ``ssl_context`` defaults to the system's
    trust store. SMTP answers in the 4xx range, timeouts and lost connections are
    retryable; 5xx answers (a refused sender or recipient, a rejected message,
    bad credentials) and TLS certificate failures are not.
    """

    def __init__(
        self,
        host: str,
        port: int = 587,
        security: SmtpSecurity = "starttls",
        username: str | None = None,
        password: str | None = None,
        sender: str = "garden@localhost",
        timeout_s: float = 10.0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        name: str = "smtp",
    ) -> None:
        if security not in ("starttls", "tls", "none"):
            raise ValueError(f"smtp security {security!r} must be starttls, tls or none")
        if (username is None) != (password is None):
            raise ValueError("smtp username and password go together: give both or neither")
        self.name = name
        self.host = host
        self.port = port
        self.security: SmtpSecurity = security
        self.sender = sender
        self._username = username
        self._password = password
        self._timeout_s = timeout_s
        self._ssl_context = ssl_context
        if username is not None and security == "none":
            log.warning("%s: logging in to %s:%s without TLS sends the password in the clear", name, host, port)

    def accepts(self, recipient: Recipient) -> bool:
        return bool(recipient.email)

    def message(self, notice: Notice, recipient: Recipient) -> EmailMessage:
        """The email for a notice."""
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = recipient.email or ""
        msg["Subject"] = one_line(notice.title)
        msg["Date"] = formatdate(notice.created_ms / 1000, usegmt=True)
        # make_msgid's default asks DNS for this host's name, which can hang; the sender's domain will do.
        msg["Message-ID"] = make_msgid("garden", domain=self.sender.rpartition("@")[2] or "localhost")
        msg["X-Garden-Alert"] = f"{notice.key} {notice.transition} {notice.severity}"
        msg.set_content(notice.body or notice.title)
        return msg

    def send(self, notice: Notice, recipient: Recipient) -> None:
        if not recipient.email:
            raise DeliveryError(self.name, recipient.name, "no email address", retryable=False)
        try:
            msg = self.message(notice, recipient)
        except (ValueError, TypeError) as exc:  # a line break or worse in an address
            raise DeliveryError(self.name, recipient.name, f"cannot write the email ({exc})", retryable=False) from None
        where = f"{self.host}:{self.port}"

        def fail(problem: str, retryable: bool) -> DeliveryError:
            return DeliveryError(self.name, recipient.name, f"{where}: {problem}", retryable=retryable)

        try:
            smtp = self._connect()
            try:
                if self._username is not None and self._password is not None:
                    smtp.login(self._username, self._password)
                smtp.send_message(msg)
            finally:
                _quit(smtp)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            temporary = bool(codes) and all(400 <= code < 500 for code in codes)
            raise fail(f"recipient refused ({', '.join(map(str, codes))})", temporary) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise fail(f"login refused ({exc.smtp_code})", 400 <= exc.smtp_code < 500) from None
        except smtplib.SMTPResponseException as exc:  # sender refused, data refused, HELO refused, ...
            raise fail(f"{type(exc).__name__} ({exc.smtp_code})", 400 <= exc.smtp_code < 500) from None
        except smtplib.SMTPNotSupportedError as exc:  # no STARTTLS, no AUTH: a setting to fix
            raise fail(f"server does not support it: {one_line(str(exc))[:120]}", False) from None
        except smtplib.SMTPServerDisconnected:
            raise fail("the server closed the connection", True) from None
        except ssl.SSLCertVerificationError as exc:
            raise fail(f"TLS certificate not trusted ({exc.verify_message})", False) from None
        except TimeoutError:
            raise fail(f"no answer within {self._timeout_s:g}s", True) from None
        except (OSError, smtplib.SMTPException) as exc:  # refused, unreachable, TLS handshake, ...
            raise fail(f"cannot talk to the server ({type(exc).__name__})", True) from None

    def _connect(self) -> smtplib.SMTP:
        if self.security == "tls":
            context = self._ssl_context or ssl.create_default_context()
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self._timeout_s, context=context)
        smtp = smtplib.SMTP(self.host, self.port, timeout=self._timeout_s)
        if self.security == "starttls":
            try:
                smtp.starttls(context=self._ssl_context or ssl.create_default_context())
            except BaseException:
                smtp.close()
                raise
        return smtp

    def close(self) -> None:
        """Nothing to release: each send opens and closes its own connection."""

    def __repr__(self) -> str:
        login = "<set>" if self._username is not None else None
        return (
            f"SmtpChannel(host={self.host!r}, port={self.port}, security={self.security!r}, "
            f"sender={self.sender!r}, login={login})"
        )


def _quit(smtp: smtplib.SMTP) -> None:
    """Says goodbye; a failure here must not turn a delivered message into a retry (and a duplicate)."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()
