"""The dispatcher: one queue and one worker thread per channel, retries, quiet hours.

``submit`` turns a notice into one job per (recipient, channel that accepts the
recipient) and returns at once: it never waits on a channel and never raises on
a full queue (the job is counted ``dropped``). So a webhook that hangs until its
timeout delays only the webhook's own queue, never ntfy, email or the hub.

Quiet hours: a notice that is not critical (or any notice, for a recipient with
``urgent_overrides_quiet=False``) reaching someone inside their quiet hours is
held (counted ``deferred``) until :func:`release_at`, then sent. Held notices are
sent in the order they came, all of them: a ``raised`` and its ``resolved`` that
both fell in the night arrive together in the morning, so the person learns both
that it happened and that it is over. A critical notice that goes through at
night may therefore arrive before an earlier, held warning for the same alert.
The held queue is read against the injected ``clock_ms``; the worker re-checks
it at the earliest release and at least every few seconds, and :meth:`poke`
re-checks it at once (for a clock that jumps, as in tests).

Retries: a retryable :class:`DeliveryError` is tried again after a delay from
:class:`firmware_bridge.backoff.Backoff` (full jitter, capped), at most
``max_attempts`` attempts in all; then the job is counted ``failed`` and logged
once at WARNING. A non-retryable error fails at once. While a job waits for its
retry, later jobs for the same recipient on that channel wait behind it, so one
person's notices arrive in order; other recipients' jobs go on. Backoff delays
run on the monotonic clock, not ``clock_ms``.

The bound ``max_queue`` is per channel and counts jobs waiting: ready, held
for quiet hours, or waiting for a retry (``queued`` in :meth:`stats`).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from firmware_bridge.backoff import Backoff
from garden.notify.channels import Channel, DeliveryError
from garden.notify.notice import Notice, Recipient
from garden.notify.quiet_hours import release_at

log = logging.getLogger(__name__)

# Held jobs are re-checked at least this often, so a wall clock that jumps (NTP, a suspended Pi)
# releases them within this long even without a poke().
HELD_RECHECK_S = 5.0

STAT_NAMES = ("sent", "retried", "failed", "dropped", "deferred", "queued", "abandoned")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True, eq=False)
class _Job:
    notice: Notice
    recipient: Recipient
    backoff: Backoff
    attempts: int = 0
    seq: int = 0
    release_ms: int | None = None  # held for quiet hours until then
    retry_at: float = 0.0  # time.monotonic() of the next attempt


@dataclass(slots=True)
class _Counts:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    dropped: int = 0
    deferred: int = 0
    abandoned: int = 0


@dataclass(slots=True)
class _Settings:
    max_queue: int
    max_attempts: int
    backoff_base_s: float
    backoff_cap_s: float
    clock_ms: Callable[[], int]


class _ChannelWorker:
    """One channel's queues and the thread that drains them. All state is guarded by ``_cond``."""

    def __init__(self, channel: Channel, settings: _Settings) -> None:
        self.channel = channel
        self._settings = settings
        self._cond = threading.Condition()
        self._ready: deque[_Job] = deque()
        self._held: list[tuple[int, int, _Job]] = []  # heap of (release_ms, seq, job)
        self._retrying: list[tuple[float, int, _Job]] = []  # heap of (retry_at, seq, job)
        self._waiting_recipients: set[str] = set()  # names with a job waiting for its retry
        self._counts = _Counts()
        self._rng = random.Random()  # shared by this worker's backoffs; only its own thread draws from it
        self._seq = itertools.count()
        self._stopping = False
        self._dropping = False
        self._thread = threading.Thread(target=self._run, name=f"notify-{channel.name}", daemon=True)

    # --- called from other threads -------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def offer(self, notice: Notice, recipient: Recipient, release_ms: int | None) -> None:
        settings = self._settings
        with self._cond:
            if self._stopping or self._pending() >= settings.max_queue:
                self._counts.dropped += 1
                if not self._dropping:
                    self._dropping = True
                    log.warning(
                        "%s: queue %s, dropping notices (first: %s for %s)",
                        self.channel.name,
                        "closed" if self._stopping else f"full ({settings.max_queue})",
                        notice.key,
                        recipient.name,
                    )
                return
            if self._dropping:
                self._dropping = False
                log.info("%s: queue has room again after %d dropped", self.channel.name, self._counts.dropped)
            backoff = Backoff(base=settings.backoff_base_s, cap=settings.backoff_cap_s, rng=self._rng)
            job = _Job(notice, recipient, backoff, seq=next(self._seq), release_ms=release_ms)
            if release_ms is None:
                self._ready.append(job)
            else:
                heapq.heappush(self._held, (release_ms, job.seq, job))
                self._counts.deferred += 1
                log.debug("%s: %s for %s held until %d", self.channel.name, notice.key, recipient.name, release_ms)
            self._cond.notify()

    def poke(self) -> None:
        with self._cond:
            self._cond.notify()

    def stats(self) -> dict[str, int]:
        with self._cond:
            c = self._counts
            return {
                "sent": c.sent,
                "retried": c.retried,
                "failed": c.failed,
                "dropped": c.dropped,
                "deferred": c.deferred,
                "queued": self._pending(),
                "abandoned": c.abandoned,
            }

    def stop(self) -> int:
        """Stops taking and starting jobs; abandons the waiting ones and returns how many."""
        with self._cond:
            self._stopping = True
            abandoned = self._pending()
            self._counts.abandoned += abandoned
            self._ready.clear()
            self._held.clear()
            self._retrying.clear()
            self._waiting_recipients.clear()
            self._cond.notify_all()
            return abandoned

    def join(self, timeout_s: float) -> bool:
        if self._thread.ident is not None:
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    # --- the worker thread --------------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                return
            self._attempt(job)

    def _pending(self) -> int:
        return len(self._ready) + len(self._held) + len(self._retrying)

    def _next_job(self) -> _Job | None:
        with self._cond:
            while not self._stopping:
                self._move_due_jobs()
                job = self._first_ready()
                if job is not None:
                    return job
                self._cond.wait(self._wait_s())
            return None

    def _move_due_jobs(self) -> None:
        now_ms = self._settings.clock_ms()
        while self._held and self._held[0][0] <= now_ms:
            self._ready.append(heapq.heappop(self._held)[2])
        now = time.monotonic()
        due: list[_Job] = []
        while self._retrying and self._retrying[0][0] <= now:
            due.append(heapq.heappop(self._retrying)[2])
        # A retry is older than anything else its recipient has queued here: it goes first.
        for job in reversed(due):
            self._waiting_recipients.discard(job.recipient.name)
            self._ready.appendleft(job)

    def _first_ready(self) -> _Job | None:
        for index, job in enumerate(self._ready):
            if job.recipient.name not in self._waiting_recipients:
                del self._ready[index]
                return job
        return None

    def _wait_s(self) -> float | None:
        waits: list[float] = []
        if self._retrying:
            waits.append(self._retrying[0][0] - time.monotonic())
        if self._held:
            waits.append(min(HELD_RECHECK_S, (self._held[0][0] - self._settings.clock_ms()) / 1000))
        return max(0.0, min(waits)) if waits else None

    def _attempt(self, job: _Job) -> None:
        name = self.channel.name
        job.attempts += 1
        try:
            self.channel.send(job.notice, job.recipient)
        except DeliveryError as exc:
            self._failed_attempt(job, exc)
        except Exception:
            # A bug in a channel: keep the worker alive for the next job.
            log.exception("%s: unexpected error sending %s to %s", name, job.notice.key, job.recipient.name)
            with self._cond:
                self._counts.failed += 1
        else:
            with self._cond:
                self._counts.sent += 1
            log.debug("%s: sent %s %s to %s", name, job.notice.key, job.notice.transition, job.recipient.name)

    def _failed_attempt(self, job: _Job, exc: DeliveryError) -> None:
        name = self.channel.name
        with self._cond:
            if exc.retryable and job.attempts < self._settings.max_attempts:
                if self._stopping:
                    self._counts.abandoned += 1
                    return
                delay = job.backoff.next_delay()
                job.retry_at = time.monotonic() + delay
                heapq.heappush(self._retrying, (job.retry_at, job.seq, job))
                self._waiting_recipients.add(job.recipient.name)
                self._counts.retried += 1
                log.debug("%s: attempt %d failed (%s); retrying in %.2fs", name, job.attempts, exc.problem, delay)
                return
            self._counts.failed += 1
        log.warning(
            "%s: gave up on %s (%s) for %s after %d attempt(s): %s",
            name,
            job.notice.key,
            job.notice.transition,
            job.recipient.name,
            job.attempts,
            exc.problem,
        )


class Dispatcher:
    """Delivers notices to recipients over channels, each channel on its own thread.

    Workers start when the dispatcher is made; call :meth:`close` (or use it as a
    context manager) to stop them. Channel names must be unique: they key :meth:`stats`.
    """

    def __init__(
        self,
        channels: Sequence[Channel],
        *,
        max_queue: int = 1000,
        max_attempts: int = 5,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 60.0,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        names = [channel.name for channel in channels]
        if len(set(names)) != len(names):
            raise ValueError(f"channel names must be unique, got {names}")
        if max_queue < 1 or max_attempts < 1:
            raise ValueError("max_queue and max_attempts must be at least 1")
        self._clock_ms = clock_ms
        settings = _Settings(max_queue, max_attempts, backoff_base_s, backoff_cap_s, clock_ms)
        self._workers = [_ChannelWorker(channel, settings) for channel in channels]
        self._closed = False
        for worker in self._workers:
            worker.start()

    def submit(self, notice: Notice, recipients: Sequence[Recipient]) -> None:
        """Queues one job per recipient and accepting channel; returns at once, never raises on a full queue."""
        now_ms = self._clock_ms()
        for recipient in recipients:
            urgent = notice.severity == "critical" and recipient.urgent_overrides_quiet
            release_ms = None if urgent else release_at(recipient.quiet_hours, now_ms, recipient.timezone)
            for worker in self._workers:
                if worker.channel.accepts(recipient):
                    worker.offer(notice, recipient, release_ms)

    def poke(self) -> None:
        """Re-checks held notices against the clock now, rather than at the next scheduled check."""
        for worker in self._workers:
            worker.poke()

    def stats(self) -> dict[str, dict[str, int]]:
        """Per channel: sent, retried, failed, dropped, deferred, abandoned (counters) and queued (now waiting)."""
        return {worker.channel.name: worker.stats() for worker in self._workers}

    def close(self, timeout_s: float = 5.0) -> None:
        """Stops the workers and waits up to ``timeout_s`` for them; waiting jobs are abandoned and counted.

        A send in progress is not interrupted: it ends within its channel's own timeout.
        """
        if self._closed:
            return
        self._closed = True
        abandoned = {worker.channel.name: worker.stop() for worker in self._workers}
        deadline = time.monotonic() + timeout_s
        for worker in self._workers:
            if not worker.join(max(0.0, deadline - time.monotonic())):
                log.warning(
                    "%s: worker still sending after %.1fs; it stops when that send ends", worker.channel.name, timeout_s
                )
        for name, count in abandoned.items():
            if count:
                log.warning("%s: closed with %d notice(s) undelivered", name, count)

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
