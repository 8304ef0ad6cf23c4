"""Sending a task to the broker after commit, and what happens when the broker is unreachable.

Every round and job is enqueued through :func:`enqueue_after_commit`: the row is committed first
(a worker never sees an uncommitted row), then the task is published.  When the publish fails
(Redis or RabbitMQ down, ``kombu.exceptions.OperationalError``) nothing is left waiting for a
task no worker will ever receive: ``on_failure`` marks the row failed with the reason, and
:class:`BrokerUnavailable` (a 503 :class:`ServiceError`) reaches the caller, so the API answers
``503 {"error": ...}`` and the admin shows the reason.  Callers for whom the task is a side
effect of a write that has committed already (a label that triggers a round) catch it: the write
stands, the failed row says why, and the refill policy asks again later.

The publish retries briefly (``PUBLISH_RETRY``, about a second in all) rather than Celery's
default, so an outage costs a request about a second, not a hung worker thread.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from celery import current_app
from django.db import transaction
from kombu.exceptions import OperationalError

from .errors import ServiceError

log = logging.getLogger(__name__)

PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.0, "interval_step": 0.3, "interval_max": 0.5}


class BrokerUnavailable(ServiceError):
    """The task could not be sent: the broker is unreachable (503, try again later)."""

    status = 503


def broker_failure_reason(exc: BaseException) -> str:
    return f"not started: the task broker is unreachable ({type(exc).__name__}: {exc})"[:500]


def enqueue_after_commit(*, task: str, args: list[Any], what: str, on_failure: Callable[[str], None]) -> None:
    """Publish the task registered as ``task`` with ``args`` once the current transaction commits (at
    once in autocommit).  By name, through the Celery app's registry: tasks import services, services
    never import tasks (``annotate/apps.py`` registers the tasks in every process).

    ``what`` names the thing in the error ("round 3 of project 1"); ``on_failure(reason)`` records the
    failure on the row (it runs after the commit, in autocommit).  Raises :class:`BrokerUnavailable`
    from the commit (the caller's ``atomic`` exit) when the broker cannot be reached.
    """

    def send() -> None:
        try:
            current_app.tasks[task].apply_async(args=args, retry=True, retry_policy=PUBLISH_RETRY)
        except (OperationalError, OSError) as exc:
            reason = broker_failure_reason(exc)
            log.error("%s: %s", what, reason)
            on_failure(reason)
            raise BrokerUnavailable(
                f"{what} could not be started: the task queue (broker) is unreachable; nothing was queued, "
                "try again in a moment"
            ) from exc

    transaction.on_commit(send)
