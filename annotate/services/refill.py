"""Adaptive refill: when the next round starts, and how many items it picks.

A round takes time (training, selection, the queue write, plus waiting for the worker); the
annotators keep labeling the pending rest meanwhile.  The queue runs dry when that rest runs out
before the round lands, so the start point follows the team's pace instead of a fixed count:

* ``pace``: the project's recent **labeling rate** r (labels and skips per second, from the
  timestamps of its newest annotations within :data:`RATE_WINDOW_S`) and its recent **round
  time** T (median, over the newest :data:`ROUND_SAMPLES` finished rounds that the refill policy
  requested, of request -> queue written: the time annotators actually wait for, worker queue
  included).  Rounds started otherwise do not count: the initial round is requested before any
  worker runs (measured: 23.5 s of waiting for the worker to start, which grew the next batches
  to the bound for nothing), and an admin's round is not waited for.  Both are read from stored rows by
  :func:`pace_measure` when a round writes its queue, and kept in that round's
  ``metrics["pace"]``; so the check after every label reads no extra row (it has the current
  round already) and the pace is refreshed once per round, i.e. every batch.
* **refill point** (:func:`refill_point`): the next round starts when the pending items would
  last less than ``MARGIN`` (2) round times at rate r, i.e. ``pending < ceil(2 T r)``, and never
  later than the project's configured ``refill_threshold`` (the floor).  The factor 2 leaves a
  full round time of slack: the team may label twice as fast as measured, or one round may take
  twice as long, before anyone waits.
* **batch size** (:func:`next_batch_size`): a round writes a fresh batch of b items and supersedes
  the pending rest, so right after it lands the buffer is b.  When b would not cover the refill
  point plus one more round time of labeling (the round is slower than the buffer a batch gives),
  the next round picks ``ceil(2 T r + T r)`` items instead; bounded by ``MAX_BATCH_FACTOR`` times
  the configured batch size, since larger batches are less adaptive (fewer model updates per label).

With no pace yet (a new project, a team that stopped labeling) the configured threshold and batch
size apply unchanged.  Everything here but :func:`pace_measure` is a pure function.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable

#: Start the next round when the pending items would last less than this many round times.
MARGIN = 2.0
#: The labeling rate counts annotations from the last this many seconds ...
RATE_WINDOW_S = 120.0
#: ... at most this many of the newest (enough for a steady estimate; the query stays small).
RATE_SAMPLES = 50
#: Fewer annotations than this in the window: no rate (too noisy to act on).
RATE_MIN_SAMPLES = 3
#: The round time is the median over this many newest finished rounds.
ROUND_SAMPLES = 3
#: A grown batch is at most this many times the project's configured batch size.
MAX_BATCH_FACTOR = 4
#: The reasons of the rounds whose durations make the round time (see the module docstring).
POLICY_REASONS = ("low_water", "every_n")


@dataclass(frozen=True)
class Pace:
    """The project's recent pace.  ``None`` where there is no measurement yet."""

    label_rate: float | None  # labels + skips per second, all annotators together
    round_seconds: float | None  # median request -> queue written of recent rounds

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any] | None) -> Pace:
        """The pace a round stored in its ``metrics["pace"]`` (an empty pace when it has none)."""
        raw = (metrics or {}).get("pace") or {}
        return cls(_positive(raw.get("label_rate")), _positive(raw.get("round_seconds")))

    @property
    def demand(self) -> float | None:
        """Items labeled during one round time (T r), or None without a full measurement."""
        if self.label_rate is None or self.round_seconds is None:
            return None
        return self.label_rate * self.round_seconds


def _positive(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and math.isfinite(v) else None


def refill_point(*, threshold: int, pace: Pace, margin: float = MARGIN) -> int:
    """Pending count below which the next round starts: ``max(threshold, ceil(margin T r))``."""
    demand = pace.demand
    if demand is None:
        return int(threshold)
    return max(int(threshold), math.ceil(margin * demand))


def next_batch_size(*, base: int, threshold: int, pace: Pace, margin: float = MARGIN,
                    max_factor: int = MAX_BATCH_FACTOR) -> int:
    """Items the next round picks: ``base``, grown to the refill point plus one round time of
    labeling when ``base`` does not cover it, at most ``max_factor * base``."""
    demand = pace.demand
    if demand is None or base <= 0:
        return int(base)
    need = refill_point(threshold=threshold, pace=pace, margin=margin) + math.ceil(demand)
    return int(min(max(base, need), max_factor * base))


def label_rate(timestamps: Iterable[datetime], *, now: datetime, window_s: float = RATE_WINDOW_S,
               min_samples: int = RATE_MIN_SAMPLES) -> float | None:
    """Labels per second from annotation times: k times in the window span k - 1 gaps from the
    oldest to ``now`` (not to the newest, so a pause lowers the rate at once).  None with fewer
    than ``min_samples`` times in the window."""
    since = now - timedelta(seconds=window_s)
    recent = [t for t in timestamps if since <= t <= now]
    if len(recent) < min_samples:
        return None
    span = (now - min(recent)).total_seconds()
    return (len(recent) - 1) / span if span > 0 else None


def round_seconds(durations: Iterable[float]) -> float | None:
    """Median of the positive durations (seconds), None without any."""
    xs = [d for d in durations if d is not None and d > 0]
    return float(statistics.median(xs)) if xs else None


def pace_measure(*, project, now: datetime, this_round_seconds: float | None = None) -> Pace:
    """Read the project's pace from stored rows (two small queries): the newest annotations and the
    newest finished rounds the policy requested (``this_round_seconds``: the duration of such a
    round being written, which is not stored as finished yet)."""
    from ..models import Annotation, Round  # noqa: PLC0415 - keep the pure part importable without Django apps

    times = list(
        Annotation.objects.filter(item__project=project, action__in=(Annotation.Action.LABEL, Annotation.Action.SKIP),
                                  created_at__gte=now - timedelta(seconds=RATE_WINDOW_S))
        .order_by("-id").values_list("created_at", flat=True)[:RATE_SAMPLES]
    )
    n_done = ROUND_SAMPLES - (1 if this_round_seconds is not None else 0)
    done = Round.objects.filter(project=project, status=Round.Status.DONE, finished_at__isnull=False,
                                reason__in=POLICY_REASONS)
    durations = [(f - c).total_seconds() for c, f in
                 done.order_by("-number").values_list("created_at", "finished_at")[:n_done]]
    if this_round_seconds is not None:
        durations.append(this_round_seconds)
    return Pace(label_rate(times, now=now), round_seconds(durations))
