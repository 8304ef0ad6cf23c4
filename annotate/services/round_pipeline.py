"""The steps of a round: load -> train -> plan -> write, with a dataclass between steps.

``round_execute`` (``services/rounds.py``) runs them in order:

1. :func:`round_load` reads the embeddings, the labeled rows and their labels, the pool (items with no
   current label or skip that nobody holds a lease on; items still pending from an earlier round
   are in it, since this round supersedes their entries), and the previous model for a warm start;
2. :func:`round_train` fits the logistic head and predicts the pool (arrays only); then
   ``services/quality_scores.py`` applies the stored confidence calibration to the pool (cheap; the
   out-of-fold fits and suspect scores run in the quality task after step 4's commit);
3. ``selection.plan.plan_batch`` draws the audit share and asks the strategy for the rest (pure);
4. :func:`round_write` saves the model and, in ONE transaction, supersedes the project's
   still-pending entries of earlier rounds, creates this round's entries with the prediction of
   the model just trained and marks the round done; after commit it pushes ``round.status`` and
   ``queue.updated``.  Leased entries are never touched, and picked items that were leased,
   labeled or skipped while the round trained are left out (read inside the transaction).  It
   locks the round row and writes nothing when another run of the round finished first.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .. import realtime, selectors, storage
from ..models import Item, Project, QueueEntry, Round
from . import candidates
from .quality import quality_enqueue
from .queue_counts import queue_pending_add
from .refill import POLICY_REASONS, pace_measure, refill_point

if TYPE_CHECKING:
    from selection.plan import BatchPlan

log = logging.getLogger(__name__)


@dataclass
class RoundData:
    """What :func:`round_load` read.  Positions in ``pool_*`` index the pool arrays."""

    classes: list[str]
    X_all: np.ndarray  # (N, d) float32, memory-mapped: every embedded item's row
    labeled_ids: list[int]  # (m,) item ids of the labeled rows, in the order of ``y``
    pool_ids: np.ndarray  # (n,) int64 item ids
    pool_rows: np.ndarray  # (n,) int64 rows of X_all
    X_pool: np.ndarray | None  # (n, d) float32; None with an empty pool
    X_labeled: np.ndarray | None  # (m, d) float32; None without labels
    y: np.ndarray  # (m,) int64 class indices
    warm: dict[str, np.ndarray] | None = None  # the previous round's head, when its shape still fits
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainedHead:
    """What :func:`round_train` fitted; all None without labels (the strategy cold-starts)."""

    state: dict[str, np.ndarray] | None = None  # LogisticHead.get_state()
    probs_pool: np.ndarray | None = None  # (n, c)
    probs_labeled: np.ndarray | None = None  # (m, c)
    pool_correct: np.ndarray | None = None  # (n,) calibrated P(prediction right), services/quality_scores.py
    metrics: dict[str, Any] = field(default_factory=dict)


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


def round_load(rnd: Round) -> RoundData:
    """Read everything round ``rnd`` needs (step 1)."""
    project = rnd.project
    X_all = storage.load_embeddings(project)
    classes = list(project.classes)
    if len(classes) < 2:
        raise ValueError(f"project {project.pk} has {len(classes)} classes; at least 2 are needed")
    class_index = {c: i for i, c in enumerate(classes)}
    labels = selectors.labeled_item_labels(project=project)
    # rows of the labeled items only; the pool's (id, row) pairs come as one array, in id order, from
    # one query: no Python dict or loop over a million pool items (docs/million-items.md)
    row_of = dict(Item.objects.filter(project=project, row__isnull=False,
                                      pk__in=selectors.current_labels(project=project).values("item_id"))
                  .values_list("id", "row"))
    lab_items = [i for i, lab in labels.items() if i in row_of and lab in class_index]
    lab_rows = np.array([row_of[i] for i in lab_items], dtype=np.int64)
    y = np.array([class_index[labels[i]] for i in lab_items], dtype=np.int64)
    pool = np.array(list(selectors.pool_items(project=project, include_pending=True).order_by("id")
                         .values_list("id", "row")), dtype=np.int64).reshape(-1, 2)
    pool_ids, pool_rows = pool[:, 0].copy(), pool[:, 1].copy()
    if len(pool_rows) and pool_rows.max() >= X_all.shape[0]:
        raise ValueError(f"an item row ({pool_rows.max()}) is outside the embedding matrix ({X_all.shape[0]} rows)")
    return RoundData(
        classes=classes, X_all=X_all, labeled_ids=lab_items, pool_ids=pool_ids, pool_rows=pool_rows,
        X_pool=np.asarray(X_all[pool_rows], dtype=np.float32) if len(pool_rows) else None,
        X_labeled=np.asarray(X_all[lab_rows], dtype=np.float32) if len(lab_rows) else None,
        y=y, warm=_warm_state(project, rnd, len(classes), X_all.shape[1]) if len(y) else None,
        metrics={"labeled": int(len(y)), "pool": int(len(pool_ids)),
                 "classes_seen": int(len(np.unique(y))) if len(y) else 0,
                 # the candidate-set threshold and the accuracy that turns suggestions on (services/candidates.py)
                 **candidates.calibration_read(project=project, labels=labels, classes=classes)},
    )


def round_train(data: RoundData, *, l2: float, seed: int, device: str = "cpu") -> TrainedHead:
    """Fit the head on the labeled rows (warm start from ``data.warm``) and predict the pool (step 2)."""
    from selection.head import LogisticHead  # noqa: PLC0415 - torch: only in workers

    if not len(data.y):
        return TrainedHead()
    head = LogisticHead(len(data.classes), l2=float(l2), device=device, random_state=int(seed) % (2**32))
    head.fit(data.X_labeled, data.y, warm_start=data.warm)
    probs_labeled = head.predict_proba(data.X_labeled)
    return TrainedHead(
        state=head.get_state(),
        probs_pool=head.predict_proba(data.X_pool) if data.X_pool is not None else None,
        probs_labeled=probs_labeled,
        metrics={"warm_start": data.warm is not None,
                 "train_accuracy": float((probs_labeled.argmax(1) == data.y).mean())},
    )


def _save_model(rnd: Round, state: dict[str, np.ndarray] | None) -> str:
    if state is None:
        return ""
    path = storage.models_dir(rnd.project) / f"round-{rnd.number:05d}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **state)
    return str(path.relative_to(Path(settings.MEDIA_ROOT)))


def round_write(rnd: Round, *, data: RoundData, trained: TrainedHead, plan: BatchPlan,
                timings: dict[str, float]) -> int:
    """Save the model, write the plan as the project's queue and finish the round (step 4).

    Returns the number of entries written (0 when another run of the round finished first).
    ``timings`` (seconds per step) gets ``write``; ``total`` is their sum.
    """
    t = time.perf_counter()
    project = rnd.project
    model_rel = _save_model(rnd, trained.state)
    metrics = {**data.metrics, **trained.metrics, "audit": plan.n_audit}
    if plan.info:
        metrics["strategy_info"] = plan.info
        if "sub_strategy" in plan.info:  # 'auto': the strategy that chose this batch (round history)
            metrics["sub_strategy"] = str(plan.info["sub_strategy"])
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
        # The prediction, top classes and candidate-set size of each pick (services/candidates.py).
        preds = ([] if trained.probs_pool is None else candidates.entry_predictions(
            trained.probs_pool[[p.position for p in plan.picks]], data.classes,
            metrics.get("candidate_threshold", 0.0)))
        for rank, pick in enumerate(plan.picks):
            item_id = int(data.pool_ids[pick.position])
            if item_id in taken:
                continue
            entries.append(QueueEntry(
                project=project, round=locked, item_id=item_id, rank=rank, score=pick.score,
                is_audit=pick.is_audit, audit_probability=pick.audit_probability, overlap_k=pick.overlap_k,
                **(preds[rank] if preds else {}),
                correct_probability=(None if trained.pool_correct is None
                                     else float(trained.pool_correct[pick.position])),
            ))
        QueueEntry.objects.bulk_create(entries)
        metrics["superseded"] = int(superseded)
        metrics["entries"] = len(entries)
        timings["write"] = time.perf_counter() - t
        timings["total"] = sum(v for k, v in timings.items() if k != "total")
        # The pace the refill policy of the next label reads (services/refill.py).
        now = timezone.now()
        took = (now - locked.created_at).total_seconds() if locked.reason in POLICY_REASONS else None
        pace = pace_measure(project=project, now=now, this_round_seconds=took)
        metrics["pace"] = pace.as_dict()
        metrics["refill_point"] = refill_point(threshold=int(project.refill_threshold), pace=pace)
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
        # the kept pending count, last: every queue row of this write is written (services/queue_counts.py)
        queue_pending_add(project_id=project.pk, delta=len(entries) - int(superseded), inserted=bool(entries))
        pending = selectors.pending_count(project=project)
        number, n_added, round_id, project_id = locked.number, len(entries), locked.pk, project.pk
        transaction.on_commit(lambda: round_status_push(round_id))
        quality_enqueue(project_id=project_id)  # report, suspect scores, next calibration (after commit)
        transaction.on_commit(lambda: realtime.send_queue_updated(
            project_id, round_number=number, pending=pending, added=n_added))
    log.info("round %s of project %s: %d entries, %s", number, project_id, n_added, metrics)
    return n_added


def round_status_push(round_id: int) -> None:
    rnd = Round.objects.filter(pk=round_id).first()
    if rnd is not None:
        realtime.send_round_status(rnd)
