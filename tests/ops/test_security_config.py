"""Security rules 6-8 of issue 6, item 5 (rules 1-5: test_security.py): upload limits, admin-only
configuration, production settings.  Each refusal is paired with the right user getting through.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.ops.ops_support import client_for, png_bytes, seed_queue

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable

ANON_REFUSED = {401, 403, 404}
OUTSIDER_REFUSED = {403, 404}

pytestmark = pytest.mark.django_db


# --------------------------------------------------------------------------- 6: upload limits
def test_rule6_request_body_size_limit(world, settings):
    from annotate.models import Annotation

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    seed_queue(world["a"])
    c = client_for(world["annotator"])
    item_id = c.post(f"/api/projects/{world['a'].pk}/lease", data='{"n": 1}',
                     content_type="application/json").json()["items"][0]["item_id"]
    body = json.dumps({"item_id": item_id, "label": "cat"})
    too_big = body[:-1] + " " * 5000 + "}"  # the same JSON, padded past the limit
    resp = c.post(f"/api/projects/{world['a'].pk}/label", data=too_big, content_type="application/json")
    assert resp.status_code == 400
    assert not Annotation.objects.filter(item_id=item_id).exists()
    resp = c.post(f"/api/projects/{world['a'].pk}/label", data=body, content_type="application/json")
    assert resp.status_code == 201


def test_rule6_upload_size_and_type_limits(settings, tmp_path):
    """An upload over LOUPE_MAX_UPLOAD_BYTES is refused by the import form; a file that is not an
    allowed image is skipped with its reason; an image over LOUPE_MAX_IMAGE_BYTES likewise."""
    import zipfile

    from django.core.files.uploadedfile import SimpleUploadedFile

    from annotate.forms_io import ImportForm
    from annotate.services.imports import ImportOptions, import_images



    settings.LOUPE_MAX_UPLOAD_BYTES = 2048
    big = SimpleUploadedFile("images.zip", b"PK" + b"\0" * 4096, content_type="application/zip")
    form = ImportForm(data={"labels_as": "ground_truth"}, files={"zip_file": big})
    assert not form.is_valid() and "LOUPE_MAX_UPLOAD_BYTES" in str(form.errors)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.png", b"\x89PNG")  # the form reads the archive's directory; the job checks each image
    small = SimpleUploadedFile("images.zip", buf.getvalue(), content_type="application/zip")
    assert ImportForm(data={"labels_as": "ground_truth"}, files={"zip_file": small}).is_valid()

    settings.LOUPE_MAX_UPLOAD_BYTES = 10**8
    settings.LOUPE_MAX_IMAGE_BYTES = 4096
    from PIL import Image
    import io as _io
    import numpy as np

    buf = _io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(buf, "PNG")
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ok.png", png_bytes(999))
        z.writestr("script.png", b"<script>alert(1)</script>")  # not an image, whatever its name
        z.writestr("page.html", b"<html></html>")
        z.writestr("huge.png", buf.getvalue())  # a real image, over LOUPE_MAX_IMAGE_BYTES
    from annotate.models import Project

    project = Project.objects.create(name="upload-target", classes=["cat", "dog"], extractor="pixels")
    before = project.items.count()
    result = import_images(project=project, options=ImportOptions(source=str(archive)))
    skipped = " ".join(str(s) for s in getattr(result, "skipped", []))
    assert project.items.count() == before + 1, skipped
    assert "script.png" in skipped and "huge.png" in skipped and "LOUPE_MAX_IMAGE_BYTES" in skipped


# --------------------------------------------------------------------------- 7: admin-only configuration
def test_rule7_project_configuration_is_admin_only(world):
    a = world["a"]
    url = f"/admin/annotate/project/{a.pk}/change/"
    for who in ("annotator", "reviewer"):
        resp = client_for(world[who]).get(url)
        assert resp.status_code in (302, 403, 404), f"{who} opened the project's settings ({resp.status_code})"
        if resp.status_code == 302:
            assert "/admin/login/" in resp["Location"]
    # A project admin of B cannot open A's settings or A's import/export pages.
    for path in (url, f"/admin/annotate/project/{a.pk}/import/", f"/admin/annotate/project/{a.pk}/export/"):
        resp = client_for(world["outsider"]).get(path)
        assert resp.status_code in (302, 403, 404), f"{path}: admin of another project got {resp.status_code}"
    # A's admin can.
    assert client_for(world["admin"]).get(url).status_code == 200
    # An annotator's POST to the change form changes nothing.
    client_for(world["annotator"]).post(url, {"name": "hijacked", "batch_size": 1})
    a.refresh_from_db()
    assert a.name == "A" and a.batch_size == 10


def test_rule7_server_side_import_sources_are_superuser_only(world):
    """A project admin (not a superuser) cannot point an import at the server's own files."""
    from annotate.models import Job

    c = client_for(world["admin"])
    before = Job.objects.filter(kind=Job.Kind.IMPORT).count()
    for data in ({"folder": "/etc"}, {"manifest_url": "file:///etc/passwd"}, {"manifest_url": "/etc/passwd"}):
        resp = c.post(f"/admin/annotate/project/{world['a'].pk}/import/", {**data, "labels_as": "ground_truth"})
        assert resp.status_code in (400, 403), f"{data}: {resp.status_code}"
    assert Job.objects.filter(kind=Job.Kind.IMPORT).count() == before
    # A superuser may (the right user gets through the same door).
    from django.contrib.auth import get_user_model

    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123456")
    resp = client_for(root).post(f"/admin/annotate/project/{world['a'].pk}/import/",
                                 {"folder": str(Path(__file__).parent), "labels_as": "ground_truth"})
    assert resp.status_code == 302 and Job.objects.filter(kind=Job.Kind.IMPORT).count() == before + 1


def test_rule7_manifest_urls_of_admins_cannot_reach_internal_addresses(world):
    """No SSRF through imports: a project admin's manifest URL may not name a loopback, private or
    link-local host (the worker would fetch it)."""
    from annotate.models import Job

    c = client_for(world["admin"])
    before = Job.objects.filter(kind=Job.Kind.IMPORT).count()
    for url in ("http://127.0.0.1:6379/manifest.csv", "http://169.254.169.254/latest/meta-data/",
                "http://localhost:5432/x.csv"):
        resp = c.post(f"/admin/annotate/project/{world['a'].pk}/import/",
                      {"manifest_url": url, "labels_as": "ground_truth"})
        assert resp.status_code in (400, 403), f"{url}: {resp.status_code}"
    assert Job.objects.filter(kind=Job.Kind.IMPORT).count() == before


# --------------------------------------------------------------------------- 8: production settings
def _production(extra: dict[str, str], code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DEBUG", "ALLOWED_HOSTS", "SECRET_KEY", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE")}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", LOUPE_PRODUCTION="1", **extra)
    return subprocess.run([PY, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_rule8_production_refuses_to_start_without_a_secret_key():
    out = _production({}, "import django; django.setup()")
    assert out.returncode != 0 and "SECRET_KEY" in out.stderr


def test_rule8_production_settings_pass_the_deploy_checks(tmp_path):
    code = """
import json, django
django.setup()
from django.conf import settings as s
from django.core.management import call_command
from django.core import checks
msgs = [m.id for m in checks.run_checks(include_deployment_checks=True) if m.level >= checks.WARNING]
print(json.dumps({"msgs": msgs, "debug": s.DEBUG, "session_secure": s.SESSION_COOKIE_SECURE,
  "csrf_secure": s.CSRF_COOKIE_SECURE, "httponly": s.SESSION_COOKIE_HTTPONLY, "hosts": s.ALLOWED_HOSTS,
  "xfo": s.X_FRAME_OPTIONS, "nosniff": s.SECURE_CONTENT_TYPE_NOSNIFF}))
"""
    out = _production({"SECRET_KEY": "s" * 20 + uuid.uuid4().hex * 2, "ALLOWED_HOSTS": "loupe.example.org",
                       "LOUPE_VAR_DIR": str(tmp_path)}, code)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["debug"] is False and got["session_secure"] and got["csrf_secure"] and got["httponly"]
    assert got["hosts"] == ["loupe.example.org"] and got["xfo"] == "DENY" and got["nosniff"]
    # TLS ends at the proxy (docs/deploy.md): HSTS and the SSL redirect are the proxy's to set,
    # so only those two deploy warnings may remain.
    assert set(got["msgs"]) <= {"security.W004", "security.W008"}, got["msgs"]


def test_rule8_production_refuses_unknown_hosts(tmp_path):
    code = """
import django
django.setup()
from django.test import Client
c = Client()
print(c.get("/accounts/login/", HTTP_HOST="evil.example", secure=True).status_code,
      c.get("/accounts/login/", HTTP_HOST="loupe.example.org", secure=True).status_code)
"""
    out = _production({"SECRET_KEY": "s" * 60, "ALLOWED_HOSTS": "loupe.example.org",
                       "LOUPE_VAR_DIR": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}, code)
    assert out.returncode == 0, out.stderr
    evil, good = out.stdout.split()[-2:]
    assert evil == "400"
    assert good == "200"
