"""Loupe's data model (DESIGN.md, "Data model").

Writes go through ``annotate/services``; nothing important happens in ``save()`` or signals.
Labels are stored as class names (strings from ``Project.classes``) so that they survive a
reordering of the class list and read well in exports.
"""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from selection import DEFAULT_PARAMS, DEFAULT_STRATEGY


def default_strategy_params() -> dict:
    """A fresh copy of ``selection.DEFAULT_PARAMS`` (a new project's strategy parameters)."""
    return dict(DEFAULT_PARAMS)


class Project(models.Model):
    class Refill(models.TextChoices):
        LOW_WATER = "low_water", "when the pending queue falls below the threshold"
        EVERY_N = "every_n", "after every N new labels (or when the queue runs low)"

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    classes = models.JSONField(default=list, help_text="Ordered list of class names.")
    # class name -> keyboard key, fixed once set so muscle memory holds (services/keymap.py).
    hotkeys = models.JSONField(default=dict, blank=True, help_text="Keyboard key of each class (class -> key).")
    suggestions = models.BooleanField(
        default=True, help_text="Show the model's guess on the labeling page once it is right often enough.")
    suggest_min_accuracy = models.FloatField(
        default=0.8, help_text="Show the guess once the model was right this often on the latest labels.")
    candidate_coverage = models.FloatField(
        default=0.9, help_text="The offered candidate classes hold the right one this often (calibrated on labels).")
    # Strategy: a name from the selection registry and its parameters, validated against its schema.
    strategy = models.CharField(max_length=64, default=DEFAULT_STRATEGY)
    strategy_params = models.JSONField(default=default_strategy_params, blank=True)
    batch_size = models.PositiveIntegerField(default=20)
    refill_policy = models.CharField(max_length=16, choices=Refill.choices, default=Refill.LOW_WATER)
    refill_threshold = models.PositiveIntegerField(
        default=10, help_text="Start the next round when fewer pending items than this remain."
    )
    retrain_every = models.PositiveIntegerField(
        default=0, help_text="With the every_n policy: start a round after this many new labels."
    )
    audit_rate = models.FloatField(
        default=0.4, help_text="Expected share of each batch drawn at random, with recorded probabilities, for the "
                               "unbiased accuracy estimate. Simulated with three annotators (97/90/80% right) at "
                               "about 200 labels: 0.1 gives about ±20 points, 0.4 about ±10 (at a cost of 0.5-1.2 "
                               "points of model accuracy), 0.2 about ±16 at no measurable cost (docs/quality.md)."
    )
    audit_target_halfwidth = models.FloatField(
        default=0.0, help_text="Adaptive audit rate: the half-width of the accuracy interval to reach. While the "
                               "dashboard's interval is wider, each round audits at audit_rate; at or under it, at "
                               "min(audit_rate, 0.1), and back up if it widens again. 0 turns this off. "
                               "See docs/quality.md (adaptive audit rate)."
    )
    l2 = models.FloatField(default=1.0, help_text="L2 strength of the classifier head (also FIRAL's lambda).")
    overlap_rate = models.FloatField(
        default=0.0, help_text="Share of each batch served to overlap_k different annotators (agreement, consensus)."
    )
    overlap_k = models.PositiveSmallIntegerField(
        default=2, help_text="Annotators per overlapped item (never the same person twice)."
    )
    seed = models.PositiveIntegerField(default=0)
    selection_ranks = models.PositiveSmallIntegerField(
        default=1, help_text="MPI ranks for the 'firal' strategy's selection (1: in the worker process; "
                             "more: the gpu worker runs mpirun -n <ranks>, one GPU per rank when it has them)."
    )
    # Embeddings: one float32 .npy per project and extractor version (items point at their row).
    extractor = models.CharField(max_length=32, default="pixels")
    extractor_params = models.JSONField(default=dict, blank=True)
    embedding_version = models.PositiveIntegerField(default=0)
    embedding_file = models.CharField(max_length=500, blank=True, help_text="Path relative to MEDIA_ROOT.")
    embedding_dim = models.PositiveIntegerField(default=0)
    # Feature alignment (ASVP, services/alignment.py): only for projects on an 'hf' backbone.
    align_every = models.PositiveIntegerField(
        default=0, help_text="Check feature alignment after this many new labels (0: never). 'hf' extractor only."
    )
    align_threshold = models.FloatField(
        default=0.03, help_text="Re-embed with the fine-tuned backbone when its LogME-PED exceeds the current "
                                "features' by more than this (ASVP's 0.03)."
    )
    finetune_params = models.JSONField(
        default=dict, blank=True,
        help_text="Fine-tuning settings: method (lpft, ft), epochs, lr, head_lr, batch_size, val_share, patience.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        ANNOTATOR = "annotator", "annotator"
        REVIEWER = "reviewer", "reviewer"
        ADMIN = "admin", "admin"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="loupe_memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ANNOTATOR)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} as {self.role}"


class RunStatus(models.TextChoices):
    """The life of a round or a job (``Round.Status``, ``Job.Status``)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Item(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="items")
    file = models.CharField(max_length=500, help_text="Path relative to MEDIA_ROOT.")
    original_name = models.CharField(max_length=500, blank=True)
    checksum = models.CharField(max_length=64, help_text="SHA-256 of the file's bytes.")
    row = models.PositiveIntegerField(null=True, blank=True, help_text="Row in the project's embedding matrix.")
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    # Ground truth from an import: kept apart from annotations, for evaluation/simulation only.
    ground_truth = models.CharField(max_length=200, blank=True)
    # Written by the quality worker (services/quality.py), never in a request.
    consensus_label = models.CharField(
        max_length=200, blank=True, help_text="Dawid-Skene consensus of two or more annotators' labels."
    )
    consensus_probability = models.FloatField(null=True, blank=True)
    suspect_score = models.FloatField(
        null=True, blank=True, help_text="How likely the label is wrong (confident learning + learnability)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "checksum"], name="item_unique_checksum"),
            models.UniqueConstraint(fields=["project", "row"], name="item_unique_row"),
        ]
        indexes = [models.Index(fields=["project", "row"])]

    def __str__(self) -> str:
        return f"{self.project_id}:{self.original_name or self.file}"


class Round(models.Model):
    Status = RunStatus

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="rounds")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    reason = models.CharField(max_length=64, blank=True, help_text="Why the round was started.")
    failure = models.TextField(blank=True, help_text="Why the round failed.")
    strategy = models.CharField(max_length=64)
    params = models.JSONField(default=dict, blank=True)
    seed = models.BigIntegerField(default=0)
    batch_size = models.PositiveIntegerField(default=0)
    labeled_count = models.PositiveIntegerField(default=0)
    pool_size = models.PositiveIntegerField(default=0)
    embedding_version = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    progress = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=200, blank=True)
    model_file = models.CharField(max_length=500, blank=True, help_text="Saved head for warm starts.")
    task_id = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Liveness (annotate/services/liveness.py): last sign of life (enqueued, claimed, or a beat of the
    # running worker) and which worker process runs it ("host:pid").
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["project_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="round_unique_number"),
            # One round per project at a time.
            models.UniqueConstraint(
                fields=["project"], condition=Q(status__in=["queued", "running"]), name="round_one_active"
            ),
        ]

    @property
    def strategy_used(self) -> str:
        """The strategy, and for ``auto`` the one that chose this round's batch ("auto → typiclust")."""
        sub = (self.metrics or {}).get("sub_strategy") if isinstance(self.metrics, dict) else None
        return f"{self.strategy} → {sub}" if sub else self.strategy

    def __str__(self) -> str:
        return f"{self.project} round {self.number} ({self.status})"


class QueueEntry(models.Model):
    class State(models.TextChoices):
        PENDING = "pending"
        LEASED = "leased"
        DONE = "done"
        SKIPPED = "skipped"
        EXPIRED = "expired"  # superseded by a newer round's queue before anyone took it

    OPEN = (State.PENDING, State.LEASED)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="queue")
    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="entries", null=True, blank=True)
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="queue_entries")
    rank = models.PositiveIntegerField(default=0)
    score = models.FloatField(null=True, blank=True)
    is_audit = models.BooleanField(
        default=False, help_text="Drawn at random, with a known probability, for the accuracy estimate.")
    audit_probability = models.FloatField(
        null=True, blank=True,
        help_text="The probability with which the round's audit draw chose this item (null: an audit item from "
                  "before probabilities were recorded, drawn uniformly; or not an audit item).")
    predicted_label = models.CharField(max_length=200, blank=True)
    predicted_confidence = models.FloatField(null=True, blank=True)
    # The model's top classes when the round wrote the entry: [[class, probability], ...], most probable first.
    top_classes = models.JSONField(default=list, blank=True)
    candidate_count = models.PositiveSmallIntegerField(
        default=0, help_text="How many of top_classes form the calibrated candidate set.")
    correct_probability = models.FloatField(
        null=True, blank=True, help_text="Calibrated P(model right) at serve time (prediction-powered estimate)."
    )
    overlap_k = models.PositiveSmallIntegerField(default=1, help_text="Annotators who should label this item.")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    leased_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="leases"
    )
    leased_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project_id", "round_id", "rank"]
        verbose_name_plural = "queue entries"
        constraints = [
            # An item is in the open queue at most once.
            models.UniqueConstraint(
                fields=["item"], condition=Q(state__in=["pending", "leased"]), name="queue_item_open_once"
            ),
        ]
        indexes = [
            models.Index(fields=["project", "state", "rank"]),
            models.Index(fields=["state", "lease_expires_at"]),
            # Plus "queue_pending_lease_order" (migration 0005, SQL per database: SQLite cannot
            # write NULLS LAST in an index): the lease's order, so a lease reads its first pending
            # entries off an index instead of sorting the whole pending queue.
        ]

    def __str__(self) -> str:
        return f"{self.item} [{self.state}]"


class Annotation(models.Model):
    """One event in an item's labeling history.

    Rows are never deleted or edited: undo and corrections add a row.  ``is_current`` marks the
    latest row per (item, annotator); the current label of that pair is that row's ``label``
    unless it is a skip or an undo.
    """

    class Action(models.TextChoices):
        LABEL = "label"
        SKIP = "skip"
        UNDO = "undo"
        CORRECT = "correct"  # a reviewer's correction of someone else's label

    class Origin(models.TextChoices):
        MANUAL = "manual", "typed or clicked by the annotator"
        SUGGESTION = "suggestion", "the model's suggestion, accepted with one key"
        CANDIDATE = "candidate", "picked from the model's candidate classes"
        PRELABEL = "prelabel", "imported with the images"

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="annotations")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="annotations")
    action = models.CharField(max_length=16, choices=Action.choices, default=Action.LABEL)
    label = models.CharField(max_length=200, blank=True)
    skipped = models.BooleanField(default=False)
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.MANUAL)
    time_ms = models.PositiveIntegerField(default=0)
    is_current = models.BooleanField(default=True)
    supersedes = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    queue_entry = models.ForeignKey(QueueEntry, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    client_id = models.UUIDField(null=True, blank=True, help_text="Idempotency key sent by the client.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["item", "annotator"], condition=Q(is_current=True), name="annotation_one_current"
            ),
            models.UniqueConstraint(fields=["annotator", "client_id"], name="annotation_unique_client_id"),
        ]
        indexes = [models.Index(fields=["item", "is_current"])]

    def __str__(self) -> str:
        return f"{self.annotator} {self.action} {self.label!r} on {self.item_id}"


class Job(models.Model):
    """A background job (import, embedding, export) with progress for the UI."""

    class Kind(models.TextChoices):
        IMPORT = "import"
        EMBED = "embed"
        EXPORT = "export"
        ALIGN = "align"
        FINAL = "final_model"

    Status = RunStatus

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="jobs", null=True, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    params = models.JSONField(default=dict, blank=True)
    progress = models.FloatField(default=0.0)
    message = models.CharField(max_length=500, blank=True)
    result = models.JSONField(default=dict, blank=True, help_text="Counts, skipped files with reasons, etc.")
    result_file = models.CharField(max_length=500, blank=True, help_text="Path relative to MEDIA_ROOT.")
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Liveness, as on Round.
    attempts = models.PositiveIntegerField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} job {self.id} ({self.status})"


class AlignmentDecision(models.Model):
    """One check of the feature-alignment rule (services/alignment.py): the scores and what was done."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="alignments")
    job = models.ForeignKey(Job, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    labeled_count = models.PositiveIntegerField(
        help_text="Labels the backbone was fine-tuned on (held-out share included).")
    method = models.CharField(max_length=8)
    base_model = models.CharField(max_length=500, help_text="The pretrained backbone that was fine-tuned.")
    current_model = models.CharField(max_length=500, help_text="The backbone of the embeddings in use.")
    score_current = models.FloatField(help_text="LogME-PED of the current backbone's features on the labeled items.")
    score_finetuned = models.FloatField(help_text="LogME-PED of the fine-tuned backbone's features.")
    threshold = models.FloatField()
    val_accuracy = models.FloatField(null=True, blank=True, help_text="Fine-tuned model on the held-out labels.")
    realigned = models.BooleanField(default=False)
    finetuned_model = models.CharField(max_length=500, blank=True, help_text="Model folder relative to MEDIA_ROOT.")
    embed_job = models.ForeignKey(Job, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    embedding_version_before = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]

    @property
    def delta(self) -> float:
        return self.score_finetuned - self.score_current

    def __str__(self) -> str:
        return f"alignment of project {self.project_id} at {self.labeled_count} labels"


class QualityReport(models.Model):
    """The latest agreement / annotator-model summary of a project (services/quality.py)."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="quality_report")
    data = models.JSONField(default=dict, blank=True)
    computed_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"quality of {self.project}"


class ProjectCounts(models.Model):
    """Item totals of a project kept up to date by the services that insert items or assign
    embedding rows (``services/item_counts.py``), in the same transaction, so that the labeling
    responses and the dashboard read two numbers instead of counting a million rows
    (docs/million-items.md).  A row of its own rather than fields on ``Project``: a
    ``project.save()`` from a stale instance cannot write old counts back."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, primary_key=True, related_name="counts")
    items = models.BigIntegerField(default=0)
    embedded = models.BigIntegerField(default=0, help_text="Items with an embedding row.")

    def __str__(self) -> str:
        return f"{self.items} items ({self.embedded} embedded) of project {self.project_id}"


class QueueCounts(models.Model):
    """The number of pending queue entries of a project, kept exact by the queue services in the
    transaction of every change (``services/queue_counts.py``), so that a submit's refill decision and
    the "N waiting" of the labeling page read one row instead of counting a 10k-entry queue
    (docs/million-items.md).  Its own row rather than a column of ``ProjectCounts``: an import holds
    that row's lock for its whole transaction, and leases must not wait for it.  A project without
    a row yet is counted (``selectors.pending_count``)."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, primary_key=True, related_name="queue_counts")
    pending = models.BigIntegerField(default=0, help_text="Queue entries in the state 'pending'.")

    def __str__(self) -> str:
        return f"{self.pending} pending in project {self.project_id}"


class LabelCounts(models.Model):
    """Kept label counts of a project (``services/label_counts.py``), updated by the label services in
    the transaction of every change: the row without an annotator holds how many of the project's
    items have a current label or correction; a row per person holds that person's current labels and
    corrections (the labeling page's "mine").  Counting them joined every current label row to the
    item table, about 10 ms per submit once the project held a million items (docs/million-items.md).
    One table, so a submit moves both of its counts in one statement."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True,
                                  related_name="+", help_text="Empty: the project's labeled items.")
    labels = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "annotator"], condition=Q(annotator__isnull=False),
                                    name="label_counts_one_per_annotator"),
            models.UniqueConstraint(fields=["project"], condition=Q(annotator__isnull=True),
                                    name="label_counts_one_per_project"),
        ]

    def __str__(self) -> str:
        who = "labeled items" if self.annotator_id is None else f"labels of user {self.annotator_id}"
        return f"{self.labels} {who} in project {self.project_id}"


class ApiToken(models.Model):
    """A key for the JSON API (``Authorization: Token <key>``).  Only a SHA-256 of the key is stored;
    the key itself is shown once, when ``manage.py loupe_token`` creates it."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    key_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=8, help_text="First characters of the key, to tell tokens apart.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… for {self.user} ({self.name or 'unnamed'})"
