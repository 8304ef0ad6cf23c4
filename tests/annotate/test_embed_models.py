"""Embedding jobs with real backbones: hf through the job (progress, PCA stored), resume after a kill."""
from __future__ import annotations

import numpy as np
import pytest
from tests.annotate.datakit import imported_project
from tests.factories import add_member, make_user
from PIL import Image

from annotate import storage
from annotate.models import Item, Job
from annotate.services import embeddings as emb
from selection.extractors import make_extractor
from tests.modelkit import fake_hub_cache, tiny_hf_model, tiny_onnx_model

pytestmark = pytest.mark.django_db
pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")


@pytest.fixture
def project(media, tmp_path, monkeypatch, pushes):
    return imported_project(tmp_path, 14)


def _images(project):
    items = list(Item.objects.filter(project=project).order_by("pk"))
    return items, [Image.open(storage.media_path(i.file)).convert("RGB") for i in items]


def test_hf_job_embeds_with_progress_and_stores_pca_with_the_version(project, tmp_path, monkeypatch, pushes):
    monkeypatch.setattr("annotate.services.jobs._MIN_INTERVAL_S", 0.0)
    folder = tiny_hf_model(tmp_path / "dino", "dinov2")
    params = {"model": str(folder), "device": "cpu", "batch": 4, "pca_dim": 5}
    job = emb.embedding_execute(job_id=str(emb.embedding_request(project=project, extractor="hf", params=params).pk))
    assert job.status == Job.Status.DONE, job.error
    project.refresh_from_db()
    assert (project.extractor, project.embedding_dim, project.embedding_version) == ("hf", 5, 1)
    assert job.result["pca"]["from_dim"] == 16 and job.result["pca"]["to_dim"] == 5
    pushed = [j["message"] for j in pushes.jobs()]
    assert sum("embedded" in m and "images on cpu" in m for m in pushed) == 4  # ceil(14 / 4) batches pushed
    items, imgs = _images(project)
    ref = make_extractor("hf", params).extract(lambda k: imgs[k], len(imgs))
    E = storage.load_embeddings(project)
    np.testing.assert_allclose(E[[i.row for i in items]], ref, rtol=1e-4, atol=1e-4)
    pca = np.load(storage.media_path(project.embedding_file).with_suffix(".pca.npz"))
    raw = make_extractor("hf", {**params, "pca_dim": 0}).extract(lambda k: imgs[k], len(imgs))
    np.testing.assert_allclose((raw - pca["mean"]) @ pca["components"].T, ref, rtol=1e-4, atol=1e-4)


def test_a_killed_embedding_job_resumes_where_it_stopped(project, tmp_path, monkeypatch, pushes):
    tiny_onnx_model(tmp_path / "m.onnx", size=8)
    rel = f"projects/{project.pk}/extractors/m.onnx"
    storage.media_path(rel).parent.mkdir(parents=True)
    storage.media_path(rel).write_bytes((tmp_path / "m.onnx").read_bytes())
    params = {"path": rel, "size": 8, "batch": 2, "checkpoint_rows": 4, "workers": 0}
    job = emb.embedding_request(project=project, extractor="onnx", params=params)
    opened = []
    real_open = Image.open

    class Killed(BaseException):
        pass

    def dying_open(fp, *a, **k):
        opened.append(fp)
        if len(opened) == 11:
            raise Killed  # the worker dies while embedding image 11 of 14
        return real_open(fp, *a, **k)

    monkeypatch.setattr(Image, "open", dying_open)
    with pytest.raises(Killed):
        emb.embedding_execute(job_id=str(job.pk))
    project.refresh_from_db()
    assert project.embedding_version == 0
    opened.clear()
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: opened.append(fp) or real_open(fp, *a, **k))
    job = emb.embedding_execute(job_id=str(job.pk))  # the broker redelivers the same job
    assert job.status == Job.Status.DONE, job.error
    assert len(opened) == 14 - 8  # rows 0..7 came from two finished chunks
    project.refresh_from_db()
    items, imgs = _images(project)
    ref = make_extractor("onnx", {**params, "path": str(storage.media_path(rel))}).extract(lambda k: imgs[k], 14)
    np.testing.assert_allclose(storage.load_embeddings(project)[[i.row for i in items]], ref, rtol=1e-5, atol=1e-6)
    assert not (storage.project_dir(project) / "embeddings" / "partial").exists()  # checkpoints dropped after


def test_missing_hf_model_fails_the_job_with_the_fetch_instructions(project, tmp_path, monkeypatch, pushes):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    job = emb.embedding_request(project=project, extractor="hf", params={"model": "facebook/dinov2-small"})
    job = emb.embedding_execute(job_id=str(job.pk))
    assert job.status == Job.Status.FAILED
    assert "'facebook/dinov2-small' is not on this worker" in job.error
    assert "python manage.py loupe_fetch_model facebook/dinov2-small" in job.error


def test_fetch_command_keeps_safetensors_only_and_checks_the_model_loads(tmp_path, monkeypatch):
    """The download itself is replaced by a local copy (no network in tests); what is asked for is checked."""
    import huggingface_hub
    from django.core.management import CommandError, call_command

    folder = tiny_hf_model(tmp_path / "dino", "dinov2")
    asked = []

    def fake_snapshot_download(repo_id, **kw):
        asked.append((repo_id, kw))
        return str(folder if repo_id == "acme/tiny" else tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    out = tmp_path / "out.txt"
    with open(out, "w") as fh:
        call_command("loupe_fetch_model", "acme/tiny", "--check", stdout=fh)
    text = out.read_text()
    assert "models--acme--tiny" in text and "loads offline: embeddings of 16 dimensions" in text
    patterns = asked[0][1]["allow_patterns"]
    assert "*.safetensors" in patterns and not any("bin" in p or "pt" in p for p in patterns)
    assert asked[1][1].get("local_files_only") is True  # the check loads the way a worker does
    with pytest.raises(CommandError, match="has no safetensors weights"):
        call_command("loupe_fetch_model", "acme/pickled-only")


def test_project_admin_picks_an_hf_model_in_admin_and_the_next_round_uses_it(project, tmp_path, monkeypatch,
                                                                             make_round, pushes):
    """The issue's "done when": choose hf + a model id in admin -> embedding job with progress -> rounds on it."""
    from django.test import Client
    from huggingface_hub import constants

    from annotate.forms import field_name
    from annotate.models import QueueEntry

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    fake_hub_cache(cache, "acme/tiny-dino", tiny_hf_model(tmp_path / "dino", "dinov2"))
    admin = make_user("teamlead")
    add_member(project, admin, "admin")
    project.classes = ["cat", "dog"]
    project.save()
    c = Client()
    c.force_login(admin)
    data = {"name": project.name, "description": "", "classes_text": "cat\ndog", "strategy": "margin",
            "batch_size": 4, "refill_policy": "low_water", "refill_threshold": 2, "retrain_every": 0,
            "audit_rate": 0.0, "l2": 1.0, "seed": 0, "extractor": "hf",
            field_name("ep", "hf", "model"): "acme/tiny-dino", field_name("ep", "hf", "pooling"): "auto",
            field_name("ep", "hf", "precision"): "auto", field_name("ep", "hf", "batch"): 8,
            field_name("ep", "hf", "workers"): 2, field_name("ep", "hf", "device"): "cpu",
            field_name("ep", "hf", "pca_dim"): 0, field_name("ep", "hf", "checkpoint_rows"): 2048,
            "memberships-TOTAL_FORMS": 0, "memberships-INITIAL_FORMS": 0,
            "rounds-TOTAL_FORMS": 0, "rounds-INITIAL_FORMS": 0}
    r = c.post(f"/admin/annotate/project/{project.pk}/change/", data)
    assert r.status_code == 302, r.content.decode()[-3000:]
    job = Job.objects.get(project=project, kind=Job.Kind.EMBED)
    assert job.params["params"]["model"] == "acme/tiny-dino" and job.created_by == admin
    job = emb.embedding_execute(job_id=str(job.pk))  # what the gpu worker does with the queued task
    assert job.status == Job.Status.DONE, job.error
    project.refresh_from_db()
    assert (project.extractor, project.embedding_dim, project.embedding_version) == ("hf", 16, 1)
    rnd = make_round(project)
    assert rnd.status == "done" and rnd.embedding_version == 1, rnd.failure
    assert QueueEntry.objects.filter(round=rnd).count() == 4
