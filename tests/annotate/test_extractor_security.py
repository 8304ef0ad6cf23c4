"""No upload runs code on a server (issue 11): TorchScript, the attack, is retired (refused for everyone,
never loaded, old projects keep their embeddings), and error texts never carry file contents."""
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
from annotate.models import Job, Project
from annotate.services.embeddings import ExtractorNotAllowed, embedding_execute, embedding_request
from annotate.services.imports import ImportOptions, import_images
from annotate.payloads import job_payload
from selection.extractors import make_extractor
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


def _torch_upload(project, evil, **extra):
    return _change_form(project, extractor="torch", **{field_name("ep", "torch", "path"): SimpleUploadedFile(
        "model.pt", evil.read_bytes()), field_name("ep", "torch", "size"): 8,
        field_name("ep", "torch", "normalize"): "unit"}, **extra)


def _legacy_torch_project(project, evil):
    """A project a superuser set up with TorchScript before it was retired, with embeddings computed."""
    from annotate.services.embeddings import embeddings_compute

    embeddings_compute(project=project, extractor="pixels", params={"size": 8, "dim": 3})
    params = {"path": str(evil), "size": 8, "normalize": "unit"}
    Project.objects.filter(pk=project.pk).update(extractor="torch", extractor_params=params)
    project.refresh_from_db()
    return params


@pytest.mark.parametrize("superuser", [False, True])
def test_nobody_can_upload_a_torchscript_model(world, superuser):
    """Not even a superuser: the upload is refused with a 400 that says to export to ONNX; nothing is kept."""
    project, admin, evil, _ = world
    user = make_user("root", is_superuser=True, is_staff=True) if superuser else admin
    c = Client()
    c.force_login(user)
    page = c.get(f"/admin/annotate/project/{project.pk}/change/").content.decode()
    assert 'value="torch"' not in page  # not offered
    r = c.post(f"/admin/annotate/project/{project.pk}/change/", _torch_upload(project, evil))
    assert r.status_code == 400 and "Select a valid choice" in r.content.decode()
    # A TorchScript file given to the ONNX extractor: refused by name, with what to do instead.
    r = c.post(f"/admin/annotate/project/{project.pk}/change/", _change_form(
        project, extractor="onnx", **{field_name("ep", "onnx", "path"): SimpleUploadedFile("m.pt", b"PK\x03\x04")}))
    text = r.content.decode()
    assert r.status_code == 400
    assert "TorchScript models are no longer accepted" in text and "Export the model to ONNX" in text
    project.refresh_from_db()
    assert project.extractor == "pixels"
    assert not Job.objects.filter(project=project, kind=Job.Kind.EMBED).exists()
    assert not (storage.project_dir(project) / "extractors").exists()


def test_project_configure_refuses_torchscript_for_everyone_before_saving(world):
    """The rule lives in the service too (scripts call it without the admin form, user=None)."""
    from annotate.services.projects import project_configure

    project, admin, evil, _ = world
    for user in (admin, None):
        project.extractor, project.extractor_params = "torch", {"size": 8}
        with pytest.raises(ExtractorNotAllowed, match="Export the model to ONNX"):
            project_configure(project=project, user=user, previous=("pixels", {}),
                              uploads={"path": SimpleUploadedFile("model.pt", evil.read_bytes())})
        project.refresh_from_db()
        assert project.extractor == "pixels"
    assert not (storage.project_dir(project) / "extractors").exists()


def test_a_project_set_up_with_torchscript_keeps_working_but_never_runs_it(world, make_round, caplog, tmp_path):
    """Its settings, file and embeddings stay; rounds and edits go on; every re-embed path says to export
    to ONNX; the file (which would read a worker file) is never loaded, not even by the operator."""
    project, admin, evil, pushed = world
    params = _legacy_torch_project(project, evil)
    version, embedding_file = project.embedding_version, project.embedding_file
    root = make_user("root", is_superuser=True, is_staff=True)
    for user in (admin, root, None):
        with pytest.raises(ExtractorNotAllowed, match="TorchScript models are no longer accepted"):
            embedding_request(project=project, user=user)
    c = Client()
    c.force_login(root)
    page = c.get(f"/admin/annotate/project/{project.pk}/change/").content.decode()
    assert 'value="torch"' in page and "Export the model to ONNX" in page  # kept in the list, and told why
    r = c.post(f"/admin/annotate/project/{project.pk}/change/", _change_form(project, extractor="torch", batch_size=7,
               **{field_name("ep", "torch", "size"): 8, field_name("ep", "torch", "normalize"): "unit"}))
    assert r.status_code == 302, r.content.decode()[-2000:]  # other settings are still editable
    r = c.post("/admin/annotate/project/", {"action": "reembed", "_selected_action": [project.pk]}, follow=True)
    assert "no longer accepted" in r.content.decode()
    project.refresh_from_db()
    assert (project.batch_size, project.extractor) == (7, "torch")
    assert project.extractor_params == make_extractor("torch", params).params_  # the same settings, defaults filled
    assert (project.embedding_version, project.embedding_file) == (version, embedding_file)
    assert not Job.objects.filter(project=project, kind=Job.Kind.EMBED).exists()
    rnd = make_round(project)
    assert rnd.status == "done" and rnd.embedding_version == version, rnd.failure
    # A job queued before the upgrade: it fails with the same advice, and the file never runs.
    job = Job.objects.create(project=project, kind=Job.Kind.EMBED, params={"extractor": "torch", "params": params})
    with caplog.at_level(logging.DEBUG):
        job = embedding_execute(job_id=str(job.pk))
    assert job.status == Job.Status.FAILED and "Export the model to ONNX" in job.error
    shown = json.dumps(job_payload(job)) + json.dumps(pushed) + caplog.text
    assert SECRET not in shown and "leak" not in shown
    project.refresh_from_db()
    assert project.embedding_version == version and storage.load_embeddings(project).shape == (3, 3)
    # An import into it stands and says why its new items were not embedded.
    from annotate.services.imports import import_execute, import_request

    source = write_tree(tmp_path / "more", {"x.png": image_bytes(7)})
    imp = import_execute(job_id=str(import_request(project=project, options={"source": str(source)}).pk))
    assert imp.status == Job.Status.DONE and imp.result["imported"] == 1
    assert "embeddings not computed: TorchScript models are no longer accepted" in imp.message


def test_project_admin_cannot_point_hf_at_a_server_folder(world, tmp_path):
    project, admin, _, _ = world
    with pytest.raises(ExtractorNotAllowed, match="folder on the server"):
        embedding_request(project=project, user=admin, extractor="hf", params={"model": str(tmp_path)})
    c = Client()
    c.force_login(admin)
    r = c.post(f"/admin/annotate/project/{project.pk}/change/", _change_form(
        project, extractor="hf", **{field_name("ep", "hf", "model"): str(tmp_path)}))
    assert r.status_code == 400 and "only a superuser may point" in r.content.decode()
    r = c.post(f"/admin/annotate/project/{project.pk}/change/", _change_form(
        project, extractor="hf", **{field_name("ep", "hf", "model"): ""}))
    assert r.status_code == 400 and "give a model" in r.content.decode()
    project.refresh_from_db()
    assert project.extractor == "pixels"
    # A folder a superuser chose may be re-run by the project admin (an import re-embeds): it runs no code.
    project.extractor, project.extractor_params = "hf", {"model": str(tmp_path)}
    project.save()
    job = embedding_request(project=project, user=admin)
    assert job.params["params"]["model"] == str(tmp_path)


UNSAFE_CALLS = {"torch.jit.load", "jit.load", "pickle.load", "pickle.loads", "joblib.load", "dill.load",
                "cloudpickle.load", "marshal.loads", "yaml.load", "yaml.unsafe_load", "torch.hub.load", "eval", "exec"}


def _unsafe_calls(tree):
    """(line, call) for every call in ``tree`` that may deserialise or execute code."""
    import ast

    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
        if (name in UNSAFE_CALLS
                or (name == "torch.load" and kw.get("weights_only") != "True")
                or kw.get("allow_pickle") == "True" or kw.get("trust_remote_code") == "True"):
            yield node.lineno, ast.unparse(node)[:120]


def test_no_code_path_deserialises_or_executes_a_file():
    """Every call in the server code (annotate/, selection/, config/): no TorchScript, pickle or YAML
    object loader, no eval/exec, no ``allow_pickle=True`` or ``trust_remote_code=True``, and
    ``torch.load`` only with ``weights_only=True``."""
    import ast
    from pathlib import Path

    assert [c for _, c in _unsafe_calls(ast.parse("torch.load(f)\nnp.load(f, allow_pickle=True)\n"
                                                  "torch.load(f, weights_only=True)\neval('1')"))] == [
        "torch.load(f)", "np.load(f, allow_pickle=True)", "eval('1')"]  # the scan itself finds them
    root = Path(__file__).resolve().parents[2]
    found = [f"{path.relative_to(root)}:{line}: {call}"
             for package in ("annotate", "selection", "config") for path in sorted((root / package).rglob("*.py"))
             for line, call in _unsafe_calls(ast.parse(path.read_text()))]
    assert found == []
