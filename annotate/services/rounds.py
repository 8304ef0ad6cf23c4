"""Rounds: when to start one, and what one does.

``round_request`` creates a queued round (at most one active round per project: a partial
unique constraint backs the check) and enqueues ``annotate.tasks.round_run`` after commit.
``round_maybe_request`` applies the project's refill policy after each label; the refill point
and the batch size adapt to the project's pace (``services/refill.py``).

``round_execute`` (run by the task) trains the head and writes the next batch:

1. load the embeddings, the labeled rows and their labels, and the pool: items with no current
   label or skip that nobody holds a lease on.  Items still pending from an earlier round are in
   the pool: this round supersedes their entries (step 4), so the new model re-scores them
   rather than leaving them out of this round and in a stale queue;
2. fit the logistic head (warm start from the previous round's saved weights when their shape
   still fits), predict the pool;
3. draw the audit share uniformly from the pool (``Project.audit_rate``, stochastic rounding so
   the expected share is exact), pick the rest with the project's strategy (its own cold start
   handles the no-label case), and put the audit items at random ranks among the others;
4. in ONE transaction: supersede the project's still-pending entries of earlier rounds
   (state ``expired``; whichever of their items the strategy picks again get a fresh entry), create this round's
   entries with the prediction of the model just trained, mark the round done.  Leased entries
   are never touched: whoever holds one keeps it and can label it.  Picked items that were leased,
   labeled or skipped while the round trained are left out (read inside this transaction);
5. after commit, push ``round.status`` and ``queue.updated``.

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
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from .. import realtime, selectors, storage
from . import dispatch, liveness
from .failures import failure_summary
from ..models import Item, Project, QueueEntry, Round
from .quality import quality_enqueue, quality_round_scores
from .refill import POLICY_REASONS, Pace, next_batch_size, pace_measure, refill_point
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
        _push_status(round_id)

    transaction.on_commit(lambda: _push_status(round_id))
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
def _push_status(round_id: int) -> None:
    rnd = Round.objects.filter(pk=round_id).first()
    if rnd is not None:
        realtime.send_round_status(rnd)


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


def _model_path(project: Project, number: int) -> Path:
    return storage.models_dir(project) / f"round-{number:05d}.npz"


def _warm_state(project: Project, rnd: Round, n_classes: int, d: int) -> dict[str, np.ndarray] | None:
    prev = (
        Round.objects.filter(project=project, status=Round.Status.DONE, number__lt=rnd.number)
        .exclude(model_file="")
        .order_by("-number")
        .first()
    )
    if prev is None:
        return None
    try:
        with np.load(storage.media_path(prev.model_file)) as z:
            state = {k: z[k] for k in z.files}
    except (OSError, ValueError):
        log.warning("round %s: previous model %s unreadable; cold fit", rnd.pk, prev.model_file)
        return None
    if state.get("coef") is None or state["coef"].shape != (n_classes, d):
        return None  # classes or embeddings changed since
    return state


def _audit_count(b: int, rate: float, rng: np.random.Generator) -> int:
    # Stochastic rounding: the expected audit share is exactly ``rate`` even for small batches.
    exact = b * min(max(rate, 0.0), 1.0)
    n = math.floor(exact)
    if rng.random() < exact - n:
        n += 1
    return min(n, b)


def round_execute(*, round_id: int) -> Round:
    """Run a round (see the module docstring).  Safe to call again for the same round."""
    if not liveness.claim(Round, round_id):
        return Round.objects.get(pk=round_id)  # done, failed, or running on a live worker
    rnd = Round.objects.select_related("project").get(pk=round_id)
    project = rnd.project
    try:
        with liveness.Heartbeat(Round, rnd.pk), compute_threads():
            return _execute(rnd, project)
    except Exception as exc:  # the round is marked failed with the reason; the traceback goes to the log only
        Round.objects.filter(pk=rnd.pk, status__in=Round.ACTIVE).update(
            status=Round.Status.FAILED,
            failure=failure_summary(what=f"round {rnd.number} of project {project.pk}", exc=exc, logger=log),
            finished_at=timezone.now(),
        )
        rnd.refresh_from_db()
        realtime.send_round_status(rnd)
        raise


def _execute(rnd: Round, project: Project) -> Round:
    from selection import SelectionContext, make_strategy  # noqa: PLC0415 - heavy imports only in workers
    from selection.head import LogisticHead  # noqa: PLC0415

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    _progress(rnd, 0.05, "loading embeddings and labels")
    X_all = storage.load_embeddings(project)
    classes = list(project.classes)
    if len(classes) < 2:
        raise ValueError(f"project {project.pk} has {len(classes)} classes; at least 2 are needed")
    class_index = {c: i for i, c in enumerate(classes)}
    row_of = dict(Item.objects.filter(project=project, row__isnull=False).values_list("id", "row"))
    labels = selectors.labeled_item_labels(project=project)
    lab_items = [i for i, lab in labels.items() if i in row_of and lab in class_index]
    lab_rows = np.array([row_of[i] for i in lab_items], dtype=np.int64)
    y = np.array([class_index[labels[i]] for i in lab_items], dtype=np.int64)
    pool_ids = np.array(sorted(selectors.pool_items(project=project, include_pending=True)
                               .values_list("id", flat=True)), dtype=np.int64)
    pool_rows = np.array([row_of[i] for i in pool_ids], dtype=np.int64)
    timings["load"] = time.perf_counter() - t0
    metrics: dict[str, Any] = {"labeled": int(len(y)), "pool": int(len(pool_ids)),
                               "classes_seen": int(len(np.unique(y))) if len(y) else 0}
    if len(pool_rows) and pool_rows.max() >= X_all.shape[0]:
        raise ValueError(f"an item row ({pool_rows.max()}) is outside the embedding matrix ({X_all.shape[0]} rows)")

    X_pool = np.asarray(X_all[pool_rows], dtype=np.float32) if len(pool_rows) else None
    X_lab = np.asarray(X_all[lab_rows], dtype=np.float32) if len(lab_rows) else None

    # ---- train
    t = time.perf_counter()
    head = None
    probs_pool = probs_lab = None
    model_rel = ""
    if len(y):
        _progress(rnd, 0.15, f"training the head on {len(y)} labels")
        head = LogisticHead(len(classes), l2=float(project.l2), device=settings.SELECTION_DEVICE,
                            random_state=int(rnd.seed) % (2**32))
        warm = _warm_state(project, rnd, len(classes), X_all.shape[1])
        head.fit(X_lab, y, warm_start=warm)
        metrics["warm_start"] = warm is not None
        probs_lab = head.predict_proba(X_lab)
        metrics["train_accuracy"] = float((probs_lab.argmax(1) == y).mean())
        path = _model_path(project, rnd.number)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **head.get_state())
        model_rel = str(path.relative_to(Path(settings.MEDIA_ROOT)))
        if X_pool is not None:
            probs_pool = head.predict_proba(X_pool)
    timings["train"] = time.perf_counter() - t

    # ---- quality: suspect scores of the labeled items, calibrated pool confidences (services/quality.py)
    t = time.perf_counter()
    pool_correct = None
    if len(y):
        _progress(rnd, 0.4, "scoring suspected label errors")
        q = quality_round_scores(project=project, lab_items=lab_items, X_lab=X_lab, y=y, probs_lab=probs_lab,
                                 probs_pool=probs_pool, seed=int(rnd.seed) % (2**32))
        pool_correct = q["pool_correct"]
        metrics["quality"] = q["metrics"]
    timings["quality"] = time.perf_counter() - t

    # ---- select
    t = time.perf_counter()
    chosen: list[tuple[int, float | None, bool]] = []  # (pool position, score, is_audit)
    n_pool = 0 if X_pool is None else len(X_pool)
    b = min(int(rnd.batch_size), n_pool)
    rng = np.random.default_rng(int(rnd.seed) % (2**63))
    if b > 0:
        _progress(rnd, 0.5, f"selecting {b} of {n_pool} with {rnd.strategy}")
        n_audit = _audit_count(b, float(project.audit_rate), rng)
        audit_pos = rng.choice(n_pool, size=n_audit, replace=False) if n_audit else np.empty(0, np.int64)
        rest = np.setdiff1d(np.arange(n_pool), audit_pos)
        n_active = b - n_audit
        if n_active > 0:
            strategy = make_strategy(rnd.strategy, rnd.params)

            def progress(fraction: float, message: str) -> None:
                _progress(rnd, 0.5 + 0.4 * float(fraction), message, throttle=True)

            ctx = SelectionContext(
                X_all=X_all,
                pool_index=pool_rows[rest],
                cache_dir=str(storage.cache_dir(project)),
                embedding_version=f"{project.extractor}-v{project.embedding_version}",
                l2=float(project.l2),
                device=settings.SELECTION_DEVICE,
                progress=progress,
            )
            sel = strategy.select(
                X_pool[rest],
                None if probs_pool is None else probs_pool[rest],
                X_labeled=X_lab,
                probs_labeled=probs_lab,
                y_labeled=y if len(y) else None,
                batch_size=n_active,
                random_state=rng,
                context=ctx,
            )
            scores = sel.scores if sel.scores is not None else np.full(len(sel.indices), np.nan)
            chosen += [(int(rest[i]), float(s), False) for i, s in zip(sel.indices, scores)]
            metrics["strategy_info"] = {k: v for k, v in sel.info.items() if isinstance(v, (int, float, str, bool))}
            if "sub_strategy" in sel.info:  # 'auto': the strategy that chose this batch (round history)
                metrics["sub_strategy"] = str(sel.info["sub_strategy"])
        # Audit items at random ranks, so their position gives nothing away.
        slots = rng.choice(b, size=n_audit, replace=False) if n_audit else []
        active_iter = iter(chosen)
        audit_iter = iter(audit_pos)
        audit_slots = set(int(s) for s in slots)
        ordered = []
        for r in range(b):
            if r in audit_slots:
                ordered.append((int(next(audit_iter)), None, True))
            else:
                ordered.append(next(active_iter))
        chosen = ordered
        metrics["audit"] = int(n_audit)
    # Overlap: a share of the batch is served to overlap_k different annotators (services/annotations.py).
    overlapped = rng.random(len(chosen)) < float(project.overlap_rate) if project.overlap_k > 1 else []
    per_pos = {pos: {"overlap_k": int(project.overlap_k) if len(overlapped) and overlapped[r] else 1,
                     "correct_probability": None if pool_correct is None else float(pool_correct[pos])}
               for r, (pos, _s, _a) in enumerate(chosen)}
    timings["select"] = time.perf_counter() - t

    # ---- write (one transaction; idempotent by round id)
    _progress(rnd, 0.92, "writing the queue")
    added = _write(rnd, project, chosen, pool_ids, probs_pool, classes, metrics, timings, model_rel, t0,
                   per_pos=per_pos)
    rnd.refresh_from_db()
    log.info("round %s of project %s: %d entries, %s", rnd.number, project.pk, added, metrics)
    return rnd


def _write(rnd, project, chosen, pool_ids, probs_pool, classes, metrics, timings, model_rel, t0, *,
           per_pos: dict[int, dict] | None = None) -> int:
    t_write = time.perf_counter()
    with transaction.atomic():
        locked = Round.objects.select_for_update().get(pk=rnd.pk)
        if locked.status != Round.Status.RUNNING or locked.entries.exists():
            return 0  # another run of this round finished first
        # Supersede the pending rest of earlier rounds; leased entries stay with their holders.
        superseded = (
            QueueEntry.objects.filter(project=project, state=QueueEntry.State.PENDING)
            .exclude(round=locked)
            # overlap copies of items someone already labeled keep waiting for their next annotator
            .exclude(overlap_k__gt=1, item_id__in=selectors.decided_item_ids(project=project))
            .update(state=QueueEntry.State.EXPIRED)
        )
        # The pool was read before training: since then an item may have been leased (it was pending),
        # or leased and already labeled or skipped.  Both are read here, after the supersede, and skipped.
        taken = set(
            QueueEntry.objects.filter(project=project, state__in=QueueEntry.OPEN).values_list("item_id", flat=True)
        )
        taken |= set(selectors.decided_item_ids(project=project).values_list("item_id", flat=True))
        entries = []
        for rank, (pos, score, is_audit) in enumerate(chosen):
            item_id = int(pool_ids[pos])
            if item_id in taken:
                continue
            pred, conf = "", None
            if probs_pool is not None:
                k = int(np.argmax(probs_pool[pos]))
                pred, conf = classes[k], float(probs_pool[pos, k])
            entries.append(QueueEntry(
                project=project, round=locked, item_id=item_id, rank=rank,
                score=None if score is None or not math.isfinite(score) else score,
                is_audit=is_audit, predicted_label=pred, predicted_confidence=conf,
                **(per_pos or {}).get(pos, {}),
            ))
        QueueEntry.objects.bulk_create(entries)
        metrics["superseded"] = int(superseded)
        metrics["entries"] = len(entries)
        # The pace the refill policy of the next label reads (services/refill.py).
        now = timezone.now()
        took = (now - locked.created_at).total_seconds() if locked.reason in POLICY_REASONS else None
        pace = pace_measure(project=project, now=now, this_round_seconds=took)
        metrics["pace"] = pace.as_dict()
        metrics["refill_point"] = refill_point(threshold=int(project.refill_threshold), pace=pace)
        timings["write"] = time.perf_counter() - t_write
        timings["total"] = time.perf_counter() - t0
        Round.objects.filter(pk=locked.pk).update(
            status=Round.Status.DONE,
            labeled_count=metrics["labeled"],
            pool_size=metrics["pool"],
            metrics=metrics,
            timings={k: round(v, 4) for k, v in timings.items()},
            model_file=model_rel,
            progress=1.0,
            progress_message=f"{len(entries)} new items",
            finished_at=now,
        )
        pending = QueueEntry.objects.filter(project=project, state=QueueEntry.State.PENDING).count()
        number, n_added, round_id, project_id = locked.number, len(entries), locked.pk, project.pk
        transaction.on_commit(lambda: _push_status(round_id))
        quality_enqueue(project_id=project_id)
        transaction.on_commit(lambda: realtime.send_queue_updated(
            project_id, round_number=number, pending=pending, added=n_added))
    return n_added


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
