"""Everything pushed to browsers goes through this module.

One group per project (:func:`group_name`); one typed payload per message type; one ``send_*``
helper per type.  The consumer (``annotate/consumers.py``) has a handler for each type and
forwards the payload to the browser as ``{"type": ..., ...payload}``.  Every payload carries
``sent_at`` (Unix milliseconds) so a client can see how long the push took.

Delivery from threads (DESIGN.md, "Pitfall (measured)"): the in-memory channel layer is not
thread-safe.  A ``group_send`` made with ``async_to_sync`` from a worker thread runs on that
thread's own event loop and only reaches a consumer on the server's loop when that loop wakes for
some other reason.  So when the server's loop is known (recorded at start-up by ``loupe_serve``
and by every consumer that connects, see :func:`set_server_loop`) and the layer is the
in-memory one, the send is handed to that loop with ``asyncio.run_coroutine_threadsafe``.  The
Redis layer is safe from any loop and is used through ``async_to_sync``.

A missing channel layer is a misconfiguration and raises ``ImproperlyConfigured``.  An unreachable
one (Redis down) is an outage: pushes are best effort, sent after the write they announce has
committed, so a failed send is logged and dropped (:func:`_send`), never turning a committed write
into an error; browsers resync when their socket reconnects.  After a failure, progress sends are skipped
for ``OUTAGE_BACKOFF_S`` so a worker does not wait on a dead Redis at every progress step.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Literal, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.core.exceptions import ImproperlyConfigured

from .payloads import JobPayload, RoundPayload, job_payload, round_payload

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 10.0
OUTAGE_BACKOFF_S = 2.0
#: message types sent many times per round or job: the only ones skipped during the backoff
_FREQUENT = frozenset({"round.status", "job.progress"})
_outage_until = 0.0

_server_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


# --------------------------------------------------------------------------- messages
class QueueUpdated(TypedDict):
    type: Literal["queue.updated"]
    project_id: int
    round: int | None  # round number that wrote the queue
    pending: int
    added: int
    sent_at: float


class RoundStatus(TypedDict):
    type: Literal["round.status"]
    project_id: int
    round: RoundPayload
    sent_at: float


class StatsUpdated(TypedDict):
    type: Literal["stats.updated"]
    project_id: int
    stats: dict[str, Any]
    sent_at: float


class JobProgress(TypedDict):
    type: Literal["job.progress"]
    project_id: int | None
    job: JobPayload
    sent_at: float


class MembershipRevoked(TypedDict):
    type: Literal["membership.revoked"]
    project_id: int
    sent_at: float


class AccessRevoked(TypedDict):
    type: Literal["access.revoked"]
    sent_at: float


def group_name(project_id: int) -> str:
    return f"loupe.project.{int(project_id)}"


def member_group_name(project_id: int, user_id: int) -> str:
    """One user's sockets on one project (closed when the membership goes)."""
    return f"loupe.member.{int(project_id)}.{int(user_id)}"


def user_group_name(user_id: int) -> str:
    """Every socket of one user, on any project (closed when the account is deactivated)."""
    return f"loupe.user.{int(user_id)}"


# --------------------------------------------------------------------------- loop bookkeeping
def set_server_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Record the event loop the ASGI server runs consumers on (called from that loop)."""
    global _server_loop
    with _loop_lock:
        _server_loop = loop


def _layer():
    layer = get_channel_layer()
    if layer is None:
        raise ImproperlyConfigured(
            "no channel layer is configured (CHANNEL_LAYERS['default']); pushes to browsers cannot be sent"
        )
    return layer


def _now_ms() -> float:
    return time.time() * 1000.0


def _send(project_id: int | None, message: dict[str, Any], group: str | None = None) -> None:
    """Send ``message`` to the project's group (or ``group``); a layer outage is logged and the message dropped."""
    global _outage_until
    layer = _layer()  # a missing layer is a misconfiguration: raised, not swallowed
    group = group or group_name(project_id)
    if time.monotonic() < _outage_until and message.get("type") in _FREQUENT:
        # Progress comes many times a round: skipped while the layer is down.  A one-off message
        # (queue.updated, ...) is always tried, so the first one after a recovery gets through.
        log.debug("push %s to %s skipped: channel layer outage", message.get("type"), group)
        return
    try:
        try:
            _deliver(layer, group, message)
        except OUTAGE_ERRORS:
            # Once more at once: after a Redis restart the first use of a pooled connection fails.
            _deliver(layer, group, message)
    except OUTAGE_ERRORS as exc:
        _outage_until = time.monotonic() + OUTAGE_BACKOFF_S
        log.warning("push %s to project %s dropped: channel layer unreachable (%s: %s)",
                    message.get("type"), project_id, type(exc).__name__, exc)


def _outage_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, asyncio.TimeoutError, TimeoutError]
    try:
        from redis.exceptions import RedisError  # noqa: PLC0415 - only with the Redis layer installed

        errors.append(RedisError)
    except ImportError:
        pass
    from channels.exceptions import ChannelFull  # noqa: PLC0415

    errors.append(ChannelFull)
    import concurrent.futures  # noqa: PLC0415

    errors.append(concurrent.futures.TimeoutError)
    return tuple(errors)


OUTAGE_ERRORS = _outage_errors()


def _deliver(layer, group: str, message: dict[str, Any]) -> None:
    loop = _server_loop
    if isinstance(layer, InMemoryChannelLayer) and loop is not None and not loop.is_closed() and loop.is_running():
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            # Already on the server's loop (sync code called from async code): schedule, don't block it.
            loop.create_task(layer.group_send(group, message))
            return
        fut = asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop)
        fut.result(timeout=SEND_TIMEOUT_S)
        return
    # Redis layer (safe from any loop), or no server loop in this process (tests, commands).
    async_to_sync(layer.group_send)(group, message)


# --------------------------------------------------------------------------- senders
def send_queue_updated(project_id: int, *, round_number: int | None, pending: int, added: int) -> None:
    _send(project_id, dict(QueueUpdated(type="queue.updated", project_id=int(project_id), round=round_number,
                                        pending=int(pending), added=int(added), sent_at=_now_ms())))


def send_round_status(rnd) -> None:
    _send(rnd.project_id, dict(RoundStatus(type="round.status", project_id=rnd.project_id,
                                           round=round_payload(rnd), sent_at=_now_ms())))


#: at most one ``stats.updated`` per project this often (per process); the ones between are coalesced
STATS_INTERVAL_S = 0.5
_stats_lock = threading.Lock()
_stats_last: dict[int, float] = {}  # project -> monotonic time of its last stats push
_stats_waiting: dict[int, dict[str, Any]] = {}  # project -> the newest payload held back


def send_stats_updated(project_id: int, payload: dict[str, Any]) -> None:
    """Push dashboard statistics, coalesced: the first at once, then at most one per ``STATS_INTERVAL_S``
    per project, carrying the newest payload (a burst of finished jobs sends one update, not one each)."""
    pid = int(project_id)
    with _stats_lock:
        wait = _stats_last.get(pid, float("-inf")) + STATS_INTERVAL_S - time.monotonic()
        if wait > 0:
            if pid not in _stats_waiting:  # one timer per window; later payloads replace the held one
                timer = threading.Timer(wait, _stats_flush, args=(pid,))
                timer.daemon = True
                timer.start()
            _stats_waiting[pid] = payload
            return
        _stats_last[pid] = time.monotonic()
    _send_stats(pid, payload)


def _stats_flush(pid: int) -> None:
    with _stats_lock:
        payload = _stats_waiting.pop(pid, None)
        _stats_last[pid] = time.monotonic()
    if payload is not None:
        _send_stats(pid, payload)


def _send_stats(pid: int, payload: dict[str, Any]) -> None:
    _send(pid, dict(StatsUpdated(type="stats.updated", project_id=pid, stats=payload, sent_at=_now_ms())))


def send_job_progress(job) -> None:
    """Progress of a background job to its project's group (jobs without a project are not pushed)."""
    if job.project_id is not None:
        _send(job.project_id, dict(JobProgress(type="job.progress", project_id=job.project_id,
                                               job=job_payload(job), sent_at=_now_ms())))


def send_membership_revoked(project_id: int, user_id: int) -> None:
    """Tell the user's open sockets on the project to close: they may no longer receive its pushes."""
    msg: MembershipRevoked = {"type": "membership.revoked", "project_id": int(project_id), "sent_at": _now_ms()}
    _send(project_id, dict(msg), group=member_group_name(project_id, user_id))


def send_access_revoked(user_id: int) -> None:
    """Tell every open socket of the user to close: the account was deactivated (or deleted)."""
    msg: AccessRevoked = {"type": "access.revoked", "sent_at": _now_ms()}
    _send(None, dict(msg), group=user_group_name(user_id))
