"""Rounds: when to start one, and what one does.

``round_request`` creates a queued round (at most one active round per project: a partial
unique constraint backs the check) and enqueues ``annotate.tasks.round_run`` after commit.
``round_maybe_request`` applies the project's refill policy after each label; the refill point
and the batch size adapt to the project's pace (``services/refill.py``).

``round_execute`` (run by the task) trains the head and writes the next batch, in four steps with a
dataclass between them (``services/round_pipeline.py``): load -> train -> plan (``selection.plan``,
pure) -> write.

Progress (a database UPDATE and a push to every browser) is written at each stage, and the
strategy's own reports (FIRAL: every RELAX step and ROUND pick) at most every ``PROGRESS_INTERVAL_S``.

A re-run of a round (tasks are ``acks_late``, so a worker lost mid-round runs it again) starts
over from step 1 and writes nothing twice: the write step locks the round row and does nothing
when the round is already done.
"""
from __future__ import annotations

import logging
import math
import time
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from .. import realtime, selectors, storage
from ..models import Project, Round
from . import dispatch, liveness, round_pipeline
from .failures import failure_summary
from ..selectors_quality import audit_rate_plan
from .quality_scores import quality_audit_design, quality_round_confidence
from .refill import Pace, next_batch_size, refill_point
from .threads import compute_threads

log = logging.getLogger(__name__)

#: The strategy's progress reports reach the database and the browsers at most this often.
PROGRESS_INTERVAL_S = 0.25
_UNREAD = object()


# --------------------------------------------------------------------------- requesting
def round_request(*, project: Project, reason: str, batch_size: int | None = None) -> Round | None:
    """Create and enqueue the next round, unless one is active already (then ``None``).

    ``batch_size``: items to pick; the project's configured batch size when not given.
    A round whose worker is gone is not replaced here: the sweeper (``services/liveness.py``) re-runs
    or fails it within ``LOUPE_LOST_AFTER_SECONDS`` plus a sweep interval.  Raises
    ``dispatch.BrokerUnavailable`` (503) when the broker is unreachable; the round is then failed.
    """
    with transaction.atomic():
        if selectors.active_round(project=project) is not None:
            return None
        number = (Round.objects.filter(project=project).aggregate(m=Max("number"))["m"] or 0) + 1
        try:
            with transaction.atomic():
                rnd = Round.objects.create(
                    project=project,
                    number=number,
                    status=Round.Status.QUEUED,
                    reason=reason[:64],
                    strategy=project.strategy,
                    params=dict(project.strategy_params or {}),
                    seed=int(project.seed) * 1_000_003 + number,
                    batch_size=project.batch_size if batch_size is None else int(batch_size),
                    embedding_version=project.embedding_version,
                    progress_message="queued",
                    heartbeat_at=timezone.now(),
                )
        except IntegrityError:
            return None  # a concurrent request created it first
        round_enqueue(rnd)
    return rnd


def round_enqueue(rnd: Round) -> None:
    """Send the round's task once the current transaction commits (a worker never sees an uncommitted row).

    An unreachable broker fails the round with the reason (nothing stays queued for a task that was
    never sent) and raises ``BrokerUnavailable`` from the commit.
    """
    round_id = rnd.pk

    def failed(reason: str) -> None:
        Round.objects.filter(pk=round_id, status=Round.Status.QUEUED).update(
            status=Round.Status.FAILED, failure=reason, progress_message=reason[:200], finished_at=timezone.now())
        round_pipeline.round_status_push(round_id)

    transaction.on_commit(lambda: round_pipeline.round_status_push(round_id))
    dispatch.enqueue_after_commit(task="annotate.tasks.round_run", args=[round_id], on_failure=failed,
                                  what=f"round {rnd.number} of project {rnd.project_id}")


def round_maybe_request(*, project: Project, pending: int | None = None, current: Round | None = _UNREAD
                        ) -> Round | None:
    """Apply the project's refill policy: start a round when the queue runs low (or every N labels).

    Low: below the adaptive refill point (``services/refill.py``), from the pace the newest round
    stored, which also sizes the batch.  Runs after every label, so the common case reads nothing
    new: ``pending`` (pending entries) and ``current`` (``selectors.current_round``) come from the
    caller (read here when not given); the dearer checks only run when a round may start.
    """
    if pending is None:
        pending = selectors.pending_count(project=project)
    if current is _UNREAD:
        current = selectors.current_round(project=project)
    if current is not None and current.status in Round.ACTIVE:
        return None
    last = current
    pace = Pace.from_metrics(last.metrics) if last is not None else Pace(None, None)
    threshold = int(project.refill_threshold)
    low = pending < refill_point(threshold=threshold, pace=pace)
    every_n = project.refill_policy == Project.Refill.EVERY_N and project.retrain_every > 0
    if not low and not every_n:
        return None
    if last is not None and last.status == Round.Status.FAILED and last.finished_at:
        # Wait before an automatic retry: a deterministic failure would otherwise start a round per label.
        if timezone.now() - last.finished_at < timedelta(seconds=settings.LOUPE_RETRY_AFTER_FAILURE_SECONDS):
            return None
    if low:
        reason = "low_water"
    else:
        labeled = selectors.current_labels(project=project).values("item_id").distinct().count()
        since = labeled - (last.labeled_count if last is not None else 0)
        if since < project.retrain_every:
            return None
        reason = "every_n"
    if not selectors.pool_items(project=project).exists():
        return None  # nothing left to pick
    batch = next_batch_size(base=int(project.batch_size), threshold=threshold, pace=pace)
    try:
        return round_request(project=project, reason=reason, batch_size=batch)
    except dispatch.BrokerUnavailable:
        # The label that got us here has committed and stands; the round is failed with the reason
        # and the policy asks again after LOUPE_RETRY_AFTER_FAILURE_SECONDS.
        return None


# --------------------------------------------------------------------------- executing
def _progress(rnd: Round, fraction: float, message: str, *, throttle: bool = False) -> None:
    """Store and push the round's progress (``throttle``: not when the last is younger than the interval)."""
    now = time.monotonic()
    if throttle and now - getattr(rnd, "_progress_at", -math.inf) < PROGRESS_INTERVAL_S:
        return
    rnd._progress_at = now
    rnd.progress = float(min(max(fraction, 0.0), 1.0))
    rnd.progress_message = message[:200]
    Round.objects.filter(pk=rnd.pk).update(progress=rnd.progress, progress_message=rnd.progress_message)
    realtime.send_round_status(rnd)


def round_execute(*, round_id: int) -> Round:
    """Run a round (see the module docstring).  Safe to call again for the same round."""
    if not liveness.claim(Round, round_id):
        return Round.objects.get(pk=round_id)  # done, failed, or running on a live worker
    rnd = Round.objects.select_related("project").get(pk=round_id)
    try:
        with liveness.Heartbeat(Round, rnd.pk), compute_threads():
            _execute(rnd)
    except Exception as exc:  # the round is marked failed with the reason; the traceback goes to the log only
        Round.objects.filter(pk=rnd.pk, status__in=Round.ACTIVE).update(
            status=Round.Status.FAILED,
            failure=failure_summary(what=f"round {rnd.number} of project {rnd.project_id}", exc=exc, logger=log),
            finished_at=timezone.now(),
        )
        rnd.refresh_from_db()
        realtime.send_round_status(rnd)
        raise
    rnd.refresh_from_db()
    if rnd.status == Round.Status.DONE:
        from .alignment import alignment_maybe_request  # noqa: PLC0415 - alignment imports round helpers' peers

        alignment_maybe_request(project=rnd.project)  # ASVP: re-align the features every N new labels
    return rnd


def _execute(rnd: Round) -> None:
    from selection import SelectionContext, make_strategy  # noqa: PLC0415 - heavy imports only in workers
    from selection.plan import plan_batch  # noqa: PLC0415

    project = rnd.project
    timings: dict[str, float] = {}
    t = time.perf_counter()
    _progress(rnd, 0.05, "loading embeddings and labels")
    data = round_pipeline.round_load(rnd)
    timings["load"] = time.perf_counter() - t

    t = time.perf_counter()
    if len(data.y):
        _progress(rnd, 0.15, f"training the head on {len(data.y)} labels")
    trained = round_pipeline.round_train(data, l2=float(project.l2), seed=int(rnd.seed),
                                         device=settings.SELECTION_DEVICE)
    timings["train"] = time.perf_counter() - t

    # Calibrated pool confidences from the calibration stored by the last quality task (no head fit:
    # the out-of-fold pass and the suspect scores run after the queue is written, services/quality.py).
    t = time.perf_counter()
    if len(data.y):
        q = quality_round_confidence(project=project, probs_pool=trained.probs_pool, X_pool=data.X_pool,
                                     X_lab=data.X_labeled, y=data.y)
        trained.pool_correct = q["pool_correct"]
        trained.metrics["quality"] = q["metrics"]
    # The audit draw: each pool item with a known probability, higher where the model is unsure it is right
    # (active statistical inference; docs/quality.md), fixed before the draw and recorded per entry.
    # The rate: project.audit_rate, or less once the last interval is at the project's target half-width
    # (adaptive audit rate; decided from labels collected before this draw, so pi stays known in advance).
    n_pool = len(data.pool_ids)
    audit_pi = None
    audit_plan = audit_rate_plan(project=project)
    rate = audit_plan["rate"]
    if trained.pool_correct is not None:
        design = quality_audit_design(pool_correct=trained.pool_correct,
                                      expected=min(int(rnd.batch_size), n_pool) * rate)
        audit_pi = design["pi"]
        trained.metrics["quality"].update(design["metrics"])
        trained.metrics["quality"].update({"audit_rate": rate, "audit_rate_base": audit_plan["base_rate"],
                                           "audit_target_halfwidth": audit_plan["target"],
                                           "audit_rate_half_width": audit_plan["half_width"]})
    timings["quality"] = time.perf_counter() - t

    t = time.perf_counter()
    _progress(rnd, 0.5, f"selecting {min(rnd.batch_size, n_pool)} of {n_pool} with {rnd.strategy}")
    plan = plan_batch(
        strategy=make_strategy(rnd.strategy, rnd.params),
        X_pool=data.X_pool, probs_pool=trained.probs_pool,
        X_labeled=data.X_labeled, probs_labeled=trained.probs_labeled, y_labeled=data.y if len(data.y) else None,
        batch_size=int(rnd.batch_size), audit_rate=rate,
        overlap_rate=float(project.overlap_rate), overlap_k=int(project.overlap_k),
        rng=np.random.default_rng(int(rnd.seed) % (2**63)), audit_probabilities=audit_pi,
        context=SelectionContext(
            X_all=data.X_all,
            pool_index=data.pool_rows,
            cache_dir=str(storage.cache_dir(project)),
            embedding_version=f"{project.extractor}-v{project.embedding_version}",
            l2=float(project.l2),
            device=settings.SELECTION_DEVICE,
            progress=lambda f, m: _progress(rnd, 0.5 + 0.4 * float(f), m, throttle=True),
            ranks=int(project.selection_ranks), ranks_timeout=float(settings.LOUPE_MPI_TIMEOUT),
        ),
    )
    timings["select"] = time.perf_counter() - t

    _progress(rnd, 0.92, "writing the queue")
    round_pipeline.round_write(rnd, data=data, trained=trained, plan=plan, timings=timings)


def rounds_resume_orphans() -> list[int]:
    """Re-enqueue rounds left active by a previous process (the embedded memory broker loses its tasks)."""
    ids = []
    for rnd in Round.objects.filter(status__in=Round.ACTIVE):
        Round.objects.filter(pk=rnd.pk).update(status=Round.Status.QUEUED, progress=0.0, progress_message="resumed",
                                               heartbeat_at=timezone.now(), worker="")
        try:
            with transaction.atomic():
                round_enqueue(rnd)
        except dispatch.BrokerUnavailable:
            continue  # failed with the reason
        ids.append(rnd.pk)
    return ids
