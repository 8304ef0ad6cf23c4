"""No upload runs code on a worker (issue 11): the TorchScript attack, refused for a project admin, and
error texts that never carry file contents."""
from __future__ import annotations

import json
import logging

import pytest
from tests.annotate.datakit import image_bytes, write_tree
from tests.factories import add_member, empty_project, make_user
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from annotate import storage
from annotate.forms import field_name
from annotate.models import Job
from annotate.services.embeddings import ExtractorNotAllowed, embedding_execute, embedding_request
from annotate.services.imports import ImportOptions, import_images
from annotate.payloads import job_payload
from tests.modelkit import file_reading_torchscript

pytestmark = pytest.mark.django_db

SECRET = "TOPSECRET-worker-file-42"


@pytest.fixture
def world(tmp_path, settings, pushes):
    pytest.importorskip("torch")
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    project = empty_project(classes=("cat", "dog"))
    import_images(project=project, options=ImportOptions(source=str(write_tree(tmp_path / "s", {
        f"{i}.png": image_bytes(i) for i in range(3)}))))
    admin = make_user("padmin")
    add_member(project, admin, "admin")
    admin.refresh_from_db()
    secret = tmp_path / "secret.txt"  # a file on the worker the uploader must never see
    secret.write_text(SECRET)
    evil = file_reading_torchscript(tmp_path / "evil.pt", secret)
    return project, admin, evil, pushes


def _change_form(project, **extra):
    data = {"name": project.name, "description": "", "classes_text": "cat\ndog", "strategy": "margin",
            "batch_size": 20, "refill_policy": "low_water", "refill_threshold": 10, "retrain_every": 0,
            "audit_rate": 0.1, "l2": 1.0, "seed": 0, "memberships-TOTAL_FORMS": 0, "memberships-INITIAL_FORMS": 0,
            "rounds-TOTAL_FORMS": 0, "rounds-INITIAL_FORMS": 0}
    data.update(extra)
    return data


def test_project_admin_cannot_upload_a_torchscript_model(world):
    project, admin, evil, _ = world
    assert admin.is_staff and not admin.is_superuser
    c = Client()
    c.force_login(admin)
    page = c.get(f"/admin/annotate/project/{project.pk}/change/").content.decode()
    assert 'value="torch"' not in page  # not offered
    upload = SimpleUploadedFile("model.pt", evil.read_bytes())
    r = c.post(f"/admin/annotate/project/{project.pk}/change/", _change_form(
        project, extractor="torch", **{field_name("ep", "torch", "path"): upload,
                                      field_name("ep", "torch", "size"): 8,
                                      field_name("ep", "torch", "normalize"): "unit"}))
    assert r.status_code == 200  # the form comes back with an error; nothing saved
    assert "Select a valid choice" in r.content.decode() or "only a superuser" in r.content.decode()
    project.refresh_from_db()
    assert project.extractor == "pixels"
    assert not Job.objects.filter(project=project, kind=Job.Kind.EMBED).exists()
    assert not (storage.project_dir(project) / "extractors").exists()
    # A project a superuser set up with TorchScript: the project admin may edit other fields, not the model.
    project.extractor, project.extractor_params = "torch", {"path": str(evil), "size": 8, "normalize": "unit"}
    project.save()
    upload = SimpleUploadedFile("model.pt", evil.read_bytes())
    r = c.post(f"/admin/annotate/project/{project.pk}/change/", _change_form(
        project, extractor="torch", **{field_name("ep", "torch", "path"): upload,
                                      field_name("ep", "torch", "size"): 8,
                                      field_name("ep", "torch", "normalize"): "unit"}))
    assert r.status_code == 200 and "only a superuser may configure" in r.content.decode()
    assert not (storage.project_dir(project) / "extractors").exists()


def test_project_configure_refuses_torchscript_for_a_project_admin_before_saving(world):
    """The rule lives in the service too (scripts call it without the admin form)."""
    from annotate.services.projects import project_configure

    project, admin, evil, _ = world
    project.extractor, project.extractor_params = "torch", {"size": 8}
    with pytest.raises(ExtractorNotAllowed, match="runs code"):
        project_configure(project=project, user=admin, previous=("pixels", {}),
                          uploads={"path": SimpleUploadedFile("model.pt", evil.read_bytes())})
    project.refresh_from_db()
    assert project.extractor == "pixels"
    assert not (storage.project_dir(project) / "extractors").exists()


def test_project_admin_cannot_run_a_torchscript_model(world):
    project, admin, evil, _ = world
    with pytest.raises(ExtractorNotAllowed, match="runs code"):
        embedding_request(project=project, user=admin, extractor="torch", params={"path": str(evil)})
    # Nor re-embed a project a superuser set up with TorchScript (the file would run again).
    project.extractor, project.extractor_params = "torch", {"path": str(evil)}
    project.save()
    with pytest.raises(ExtractorNotAllowed, match="only a superuser"):
        embedding_request(project=project, user=admin)
    c = Client()
    c.force_login(admin)
    c.post(f"/admin/annotate/project/{project.pk}/reembed/")
    assert not Job.objects.filter(project=project, kind=Job.Kind.EMBED).exists()


def test_project_admin_cannot_point_hf_at_a_server_folder(world, tmp_path):
    project, admin, _, _ = world
    with pytest.raises(ExtractorNotAllowed, match="folder on the server"):
        embedding_request(project=project, user=admin, extractor="hf", params={"model": str(tmp_path)})
    c = Client()
    c.force_login(admin)
    r = c.post(f"/admin/annotate/project/{project.pk}/change/", _change_form(
        project, extractor="hf", **{field_name("ep", "hf", "model"): str(tmp_path)}))
    assert r.status_code == 200 and "only a superuser may point" in r.content.decode()
    r = c.post(f"/admin/annotate/project/{project.pk}/change/", _change_form(
        project, extractor="hf", **{field_name("ep", "hf", "model"): ""}))
    assert r.status_code == 200 and "give a model" in r.content.decode()
    project.refresh_from_db()
    assert project.extractor == "pixels"
    # A folder a superuser chose may be re-run by the project admin (an import re-embeds): it runs no code.
    project.extractor, project.extractor_params = "hf", {"model": str(tmp_path)}
    project.save()
    job = embedding_request(project=project, user=admin)
    assert job.params["params"]["model"] == str(tmp_path)


def test_superuser_sees_the_runs_code_warning(world):
    project, _, _, _ = world
    root = make_user("root", is_superuser=True, is_staff=True)
    c = Client()
    c.force_login(root)
    page = c.get(f"/admin/annotate/project/{project.pk}/change/").content.decode()
    assert 'value="torch"' in page and "RUNS CODE from the uploaded file" in page


def test_the_attack_never_reaches_users_even_when_run(world, caplog):
    """Defence in depth: run the file-reading model as the operator would; its error is not shown."""
    project, _, evil, pushed = world
    job = embedding_request(project=project, user=None, extractor="torch",
                            params={"path": str(evil), "size": 8, "device": "cpu"})
    with caplog.at_level(logging.ERROR, logger="annotate.services.embeddings"):
        with pytest.raises(Exception, match="leak"):  # the worker task still sees (and logs) the real error
            embedding_execute(job_id=str(job.pk))
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    shown = json.dumps(job_payload(job)) + json.dumps(pushed)
    assert SECRET not in shown and "Traceback" not in shown and "leak" not in shown
    assert "internal error (reference" in job.error
    ref = job.error.split("reference ")[1].split(";")[0]
    assert any(ref in r.getMessage() and SECRET in (r.exc_text or "") for r in caplog.records)
