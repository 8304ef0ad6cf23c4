"""Feature alignment (ASVP, Wen, Pizarro & Williams 2024, arXiv 2403.01101): refresh the embeddings
when a backbone fine-tuned on the labels separates the classes better than the one in use.

The rule (:func:`alignment_maybe_request`, run after each finished round): once ``align_every`` new
labels have arrived since the last check, an ``align`` job on the gpu queue

1. embeds the labeled items with the backbone in use (the project's ``hf`` model);
2. fine-tunes the pretrained backbone it came from on those labels (LP-FT or FT, early stopping on
   a held-out share: ``selection.transfer.finetune``) and embeds them again with it;
3. scores both with LogME-PED (``selection.transfer.ped``: PED as its authors' implementation
   defines it, each feature set standardised by its own statistics on the labeled items) and stores
   an :class:`AlignmentDecision`;
4. when ``score_finetuned − score_current > align_threshold`` (0.03 by default, the value the issue
   gives as the paper's; the plain difference of the two per-sample scores is Loupe's reading, as the
   paper's text could not be read: docs/feature-alignment.md),
   saves the fine-tuned backbone as a model folder under MEDIA_ROOT and queues an ordinary embedding
   job with it: a new embedding version, which the next round uses (Cluster-Margin's cache is keyed
   by version; the head's warm start is dropped when the dimension changes).

Annotators never wait: the queue keeps being served from the current version while the job runs.
Both feature sets are computed fresh on the raw backbone output (no PCA), so the comparison does
not depend on the projection the stored matrix may have.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from django.db import transaction

from selection.extractors import ExtractorError

from .. import selectors, storage
from ..models import AlignmentDecision, Job, Project
from . import dispatch
from . import jobs as job_services
from .transfer_common import finetune_config, hf_model_of, labeled_set, pretrained_of

log = logging.getLogger(__name__)

ACTIVE = (Job.Status.QUEUED, Job.Status.RUNNING)


def alignment_request(*, project: Project, user=None) -> Job | None:
    """Queue an ``align`` job, or None when one is already queued or running for the project.

    ValueError when the project cannot be aligned (not on 'hf', bad fine-tuning settings)."""
    hf_model_of(project)
    finetune_config(project.finetune_params)
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project.pk)  # one check at a time per project
        if Job.objects.filter(project=project, kind=Job.Kind.ALIGN, status__in=ACTIVE).exists():
            return None
        job = job_services.job_create(project=project, kind=Job.Kind.ALIGN, params={}, user=user)
        job_services.job_enqueue(job=job)
    return job


def alignment_due(*, project: Project) -> bool:
    """Whether the rule asks for a check now: 'hf' project, ``align_every`` > 0, that many new labels
    since the last decision, and no alignment or embedding job under way."""
    if project.extractor != "hf" or project.align_every <= 0:
        return False
    last = AlignmentDecision.objects.filter(project=project).order_by("-created_at").first()
    labeled = selectors.current_labels(project=project).values("item_id").distinct().count()
    if labeled - (last.labeled_count if last else 0) < project.align_every:
        return False
    return not Job.objects.filter(project=project, kind__in=(Job.Kind.ALIGN, Job.Kind.EMBED),
                                  status__in=ACTIVE).exists()


def alignment_maybe_request(*, project: Project) -> Job | None:
    """Apply the rule (called when a round finishes).  Never raises for a broker outage: the check
    simply runs after a later round."""
    if not alignment_due(project=project):
        return None
    try:
        return alignment_request(project=project)
    except (ValueError, dispatch.BrokerUnavailable) as exc:
        log.warning("feature alignment of project %s not started: %s", project.pk, exc)
        return None


def _align(job: Job, progress: job_services.Progress) -> job_services.JobOutcome:
    from selection.transfer import logme_ped  # noqa: PLC0415 - torch / transformers: workers only
    from selection.transfer.finetune import embed, finetune  # noqa: PLC0415
    from selection.transfer.hf_backbone import image_loader, load_backbone, save_backbone  # noqa: PLC0415

    project = Project.objects.get(pk=job.project_id)
    current, pooling = hf_model_of(project)
    cfg = finetune_config(project.finetune_params, seed=int(project.seed))
    data = labeled_set(project)
    n = len(data.y)
    if n < 4 or len(set(data.y.tolist())) < 2:
        raise ValueError(f"feature alignment needs labels of at least two classes (at least 4 labels); "
                         f"project {project.pk} has {n}")
    version_before = project.embedding_version
    progress(0.02, f"embedding {n} labeled items with the current backbone")
    backbone = load_backbone(current, pooling=pooling)
    F_old = embed(backbone, image_loader(backbone.source, data.image), n, batch_size=cfg.batch_size,
                  device=cfg.device)
    base = pretrained_of(current)  # fine-tune the pretrained model again, not a fine-tuned one further
    del backbone
    backbone = load_backbone(base, pooling=pooling)
    load = image_loader(backbone.source, data.image)
    res = finetune(backbone, load, data.y, len(data.classes), config=cfg,
                   progress=lambda f, m: progress(0.1 + 0.75 * f, m))
    progress(0.87, "embedding the labeled items with the fine-tuned backbone")
    F_new = embed(backbone, load, n, batch_size=cfg.batch_size, device=cfg.device)
    s_old = logme_ped(F_old, data.y, n_classes=len(data.classes))
    s_new = logme_ped(F_new, data.y, n_classes=len(data.classes))
    threshold = float(project.align_threshold)
    realign = s_new - s_old > threshold
    decision = AlignmentDecision.objects.create(
        project=project, job=job, labeled_count=n, method=res.method, base_model=base, current_model=current,
        score_current=s_old, score_finetuned=s_new, threshold=threshold, val_accuracy=res.val_accuracy,
        realigned=realign, embedding_version_before=version_before,
    )
    note = ""
    if realign:
        folder = storage.models_dir(project) / f"backbone-align-{decision.pk}"
        save_backbone(backbone, folder, meta={"base_model": base, "method": res.method, "labeled": n,
                                              "val_accuracy": res.val_accuracy, "alignment": decision.pk})
        decision.finetuned_model = folder.relative_to(storage.media_path("")).as_posix()
        params = {**(project.extractor_params or {}), "model": str(folder.resolve())}
        from .embeddings import embedding_request  # noqa: PLC0415 - embeddings imports jobs, as we do

        try:
            decision.embed_job = embedding_request(project=project, extractor="hf", params=params)
            note = "; re-embedding the pool with the fine-tuned backbone"
        except (ExtractorError, dispatch.BrokerUnavailable) as exc:
            note = f"; re-embedding could not be queued: {exc}"
        decision.save(update_fields=["finetuned_model", "embed_job"])
        _remove_stale_backbones(project, keep={folder.resolve(), Path(current).expanduser().resolve()})
    delta = s_new - s_old
    return job_services.JobOutcome(
        result={"decision": decision.pk, "score_current": s_old, "score_finetuned": s_new, "delta": delta,
                "threshold": threshold, "realigned": realign, "val_accuracy": res.val_accuracy,
                "labeled": n, "method": res.method, "best_epoch": res.best_epoch, "device": res.device},
        message=(f"LogME-PED {s_old:.4f} -> {s_new:.4f} (difference {delta:+.4f}, threshold {threshold})"
                 + ("" if realign else "; features kept") + note),
        stats_changed=True,
    )


def _remove_stale_backbones(project: Project, keep: set[Path]) -> None:
    """Delete earlier fine-tuned backbone folders: the one in use and the new one stay (a backbone can
    be hundreds of MB, and every re-alignment writes one)."""
    for old in storage.models_dir(project).glob("backbone-align-*"):
        if old.is_dir() and old.resolve() not in keep:
            shutil.rmtree(old, ignore_errors=True)


def alignment_execute(*, job_id: str) -> Job:
    return job_services.job_run(job_id=job_id, work=_align, expected=(ExtractorError, ValueError))
