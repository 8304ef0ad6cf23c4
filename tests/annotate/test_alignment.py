"""Feature alignment (ASVP) and the final model on a tiny random DINOv2: the job fine-tunes, scores both
feature sets with LogME-PED (checked against the hf extractor + the library function), applies the
threshold, and re-embeds through the ordinary embedding job; the final model is exported and measured."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from tests.annotate.datakit import write_tree
from tests.factories import add_member, empty_project, make_user
from django.urls import reverse
from PIL import Image

from annotate import storage
from annotate.models import AlignmentDecision, Annotation, Item, Job, QueueEntry
from annotate.services import alignment
from annotate.services import embeddings as emb
from annotate.services.final_model import final_model_execute, final_model_request
from annotate.services.imports import ImportOptions, import_images
from selection.extractors import make_extractor
from selection.transfer import logme_ped
from tests.modelkit import tiny_hf_model

pytestmark = pytest.mark.django_db
pytest.importorskip("transformers")

N = 24
FT = {"method": "lpft", "epochs": 2, "lr": 1e-3, "batch_size": 8}


def _png(seed: int, cls: int) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 120, size=(16, 16, 3))
    arr[..., cls] += 120  # red cats, green dogs: a learnable signal under the noise
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8), "RGB").save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def project(tmp_path, settings, monkeypatch):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    monkeypatch.setattr("annotate.services.jobs.stats_push", lambda project_id: None)
    monkeypatch.setattr("annotate.services.jobs._push", lambda job: None)
    enqueued = []
    monkeypatch.setattr("annotate.services.jobs.dispatch.enqueue_after_commit",
                        lambda **kw: enqueued.append(kw["task"]))
    src = write_tree(tmp_path / "src", {f"{i:02d}.png": _png(i, i % 2) for i in range(N)})
    p = empty_project()
    import_images(project=p, options=ImportOptions(source=str(src)))
    folder = tiny_hf_model(tmp_path / "dino", "dinov2")
    job = emb.embedding_execute(job_id=str(emb.embedding_request(
        project=p, extractor="hf", params={"model": str(folder), "device": "cpu", "batch": 8}).pk))
    assert job.status == Job.Status.DONE, job.error
    user = make_user("ann")
    for k, item in enumerate(Item.objects.filter(project=p).order_by("pk")):
        if k < 16:
            Annotation.objects.create(item=item, annotator=user, label=("cat", "dog")[int(item.original_name[:2]) % 2])
    p.refresh_from_db()
    p.finetune_params = FT
    p.align_every = 10
    p.save()
    p.enqueued = enqueued
    return p


def _labeled_images(project):
    items = [i for i in Item.objects.filter(project=project).order_by("pk") if i.annotations.exists()]
    y = np.array([("cat", "dog").index(i.annotations.get().label) for i in items])
    return [Image.open(storage.media_path(i.file)).convert("RGB") for i in items], y


def test_alignment_scores_are_logme_ped_of_each_backbones_features_and_realign_re_embeds(project):
    project.align_threshold = -1e9  # any difference counts: the re-embedding path
    project.save()
    assert alignment.alignment_due(project=project)
    stale = storage.models_dir(project) / "backbone-align-999"
    stale.mkdir(parents=True)  # a backbone an earlier re-alignment left behind
    job = alignment.alignment_request(project=project)
    assert alignment.alignment_request(project=project) is None  # one at a time
    job = alignment.alignment_execute(job_id=str(job.pk))
    assert job.status == Job.Status.DONE, job.error
    d = AlignmentDecision.objects.get(project=project)
    imgs, y = _labeled_images(project)
    assert d.labeled_count == 16 and d.realigned and d.method == "lpft"
    current = make_extractor("hf", {"model": d.current_model, "device": "cpu"}).extract(lambda k: imgs[k], 16)
    assert d.score_current == pytest.approx(logme_ped(current, y), rel=1e-4)
    folder = storage.media_path(d.finetuned_model)
    assert (folder / "model.safetensors").is_file()
    assert json.loads((folder / "loupe.json").read_text())["base_model"] == d.current_model
    assert not stale.exists()  # superseded backbones are deleted; the one in use is outside models/ here
    tuned = make_extractor("hf", {"model": str(folder), "device": "cpu"}).extract(lambda k: imgs[k], 16)
    assert d.score_finetuned == pytest.approx(logme_ped(tuned, y), rel=1e-4)
    assert job.result["delta"] == pytest.approx(d.score_finetuned - d.score_current)
    # the re-embedding is an ordinary embedding job with the fine-tuned folder; annotators are not stopped
    embed_job = d.embed_job
    assert embed_job.kind == Job.Kind.EMBED and embed_job.params["params"]["model"] == str(folder.resolve())
    assert project.enqueued[-1] == "annotate.tasks.embedding_compute"
    embed_job = emb.embedding_execute(job_id=str(embed_job.pk))
    assert embed_job.status == Job.Status.DONE, embed_job.error
    project.refresh_from_db()
    assert project.embedding_version == 2 and project.extractor_params["model"] == str(folder.resolve())
    assert not alignment.alignment_due(project=project)  # no new labels since the decision


def test_dashboard_shows_each_decision_with_its_scores(project, client):
    project.align_threshold = 1e9
    project.save()
    alignment.alignment_execute(job_id=str(alignment.alignment_request(project=project).pk))
    d = AlignmentDecision.objects.get(project=project)
    viewer = make_user("viewer")
    add_member(project, viewer, "annotator")
    client.force_login(viewer)
    html = client.get(reverse("dashboard", args=[project.pk])).content.decode()
    assert 'id="alignment"' in html and "checked every\n      10 new labels" in html
    for value in (d.score_current, d.score_finetuned, d.delta):
        assert f"{value:.4f}" in html
    assert "<td>kept</td>" in html


def test_alignment_below_threshold_keeps_the_features(project):
    project.align_threshold = 1e9
    project.save()
    job = alignment.alignment_execute(job_id=str(alignment.alignment_request(project=project).pk))
    assert job.status == Job.Status.DONE, job.error
    d = AlignmentDecision.objects.get(project=project)
    assert not d.realigned and d.embed_job is None and not d.finetuned_model
    assert not (storage.models_dir(project)).exists() or not any(storage.models_dir(project).glob("backbone-*"))
    project.refresh_from_db()
    assert project.embedding_version == 1


def test_alignment_is_refused_with_a_reason_off_hf_or_with_bad_settings(project):
    project.finetune_params = {"epochs": "many"}
    with pytest.raises(ValueError, match="epochs"):
        alignment.alignment_request(project=project)
    project.finetune_params = {"optimizer": "sgd"}
    with pytest.raises(ValueError, match="unknown fine-tuning setting"):
        alignment.alignment_request(project=project)
    project.extractor = "pixels"
    assert not alignment.alignment_due(project=project)
    with pytest.raises(ValueError, match="'hf' extractor"):
        alignment.alignment_request(project=project)


def test_final_model_is_exported_and_measured_on_audit_items_it_never_trained_on(project, client):
    items = [i for i in Item.objects.filter(project=project).order_by("pk") if i.annotations.exists()]
    for it in items[:4]:
        QueueEntry.objects.create(project=project, item=it, is_audit=True, state=QueueEntry.State.DONE)
    job = final_model_execute(job_id=str(final_model_request(project=project, method="auto").pk))
    assert job.status == Job.Status.DONE, job.error
    cfg = job.result
    assert cfg["n_audit"] == 4 and cfg["n_train"] + cfg["n_heldout"] == 12
    assert cfg["method"] in ("lpft", "ft") and set(cfg["heldout_accuracy"]) == {"lpft", "ft"}
    z = zipfile.ZipFile(storage.media_path(job.result_file))
    names = set(z.namelist())
    assert {"config.json", "head.safetensors", "backbone/model.safetensors", "backbone/config.json"} <= names
    # the reported accuracy is the exported model's on the audit items, recomputed here from the files
    from safetensors.numpy import load_file

    folder = storage.media_path(cfg["folder"])
    head = load_file(str(folder / "head.safetensors"))
    imgs = [Image.open(storage.media_path(i.file)).convert("RGB") for i in items[:4]]
    F = make_extractor("hf", {"model": str(folder / "backbone"), "device": "cpu"}).extract(lambda k: imgs[k], 4)
    y = np.array([("cat", "dog").index(i.annotations.get().label) for i in items[:4]])
    assert cfg["audit_accuracy"] == pytest.approx(((F @ head["weight"].T + head["bias"]).argmax(1) == y).mean())
    # predictions for the unlabeled items come from the exported model
    preds = z.read("predictions.csv").decode().splitlines()
    assert preds[0] == "item_id,file,label,confidence" and len(preds) - 1 == N - 16
    unl = [i for i in Item.objects.filter(project=project).order_by("pk") if not i.annotations.exists()][:3]
    imgs = [Image.open(storage.media_path(i.file)).convert("RGB") for i in unl]
    F = make_extractor("hf", {"model": str(folder / "backbone"), "device": "cpu"}).extract(lambda k: imgs[k], 3)
    want = [("cat", "dog")[k] for k in (F @ head["weight"].T + head["bias"]).argmax(1)]
    assert [row.split(",")[2] for row in preds[1:4]] == want
    with pytest.raises(ValueError, match="method"):
        final_model_request(project=project, method="sgd")
    admin_user = make_user("boss")
    add_member(project, admin_user, "admin")
    client.force_login(admin_user)
    resp = client.get(reverse("job_download", args=[job.pk]))
    assert resp.status_code == 200 and b"".join(resp.streaming_content)[:2] == b"PK"  # the zip
