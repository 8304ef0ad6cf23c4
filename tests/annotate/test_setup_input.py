"""What a new team trips over on the setup pages: the add page saves as it comes, and a wrong upload or a
class list with a case-only repeat is refused at once with a 400 that names the problem, keeping nothing."""
from __future__ import annotations

import io
import zipfile
from html.parser import HTMLParser

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from annotate.models import Job, Project
from tests.annotate.datakit import image_bytes, media_files, write_zip
from tests.factories import empty_project, make_user

pytestmark = pytest.mark.django_db


class _FormFields(HTMLParser):
    """The fields a browser submits for ``form#<form_id>`` as rendered (no script): inputs with their value
    (checkboxes when checked), textareas, and each select's selected option, or its first one as a
    browser does when none is marked."""

    def __init__(self, form_id: str):
        super().__init__()
        self.form_id, self.inside, self.data = form_id, False, {}
        self._select = self._first = self._textarea = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        if not self.inside or "disabled" in a:
            return
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in ("submit", "file", "button"):
            if a.get("type") != "checkbox" or "checked" in a:
                self.data[name] = a.get("value", "on" if a.get("type") == "checkbox" else "")
        elif tag == "textarea" and name:
            self._textarea, self.data[name] = name, ""
        elif tag == "select" and name:
            self._select, self._first = name, None
        elif tag == "option" and self._select:
            if self._first is None:
                self._first = a.get("value", "")
            if "selected" in a:
                self.data[self._select] = a.get("value", "")

    def handle_data(self, data):
        if self._textarea:
            self.data[self._textarea] += data

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "textarea":
            self._textarea = None
        elif tag == "select" and self._select:
            if self._first is not None:  # a select without options sends nothing
                self.data.setdefault(self._select, self._first)
            self._select = None


def _submitted(html: str, form_id: str) -> dict[str, str]:
    parser = _FormFields(form_id)
    parser.feed(html)
    return parser.data


@pytest.fixture
def root_client(media):
    c = Client()
    c.force_login(make_user("root", superuser=True))
    return c


def test_a_new_project_saves_with_the_add_page_as_it_comes(root_client):
    page = root_client.get("/admin/annotate/project/add/").content.decode()
    data = _submitted(page, "project_form")
    assert data["extractor"] == "pixels"  # the model's default, not the first choice ('hf', which needs a model)
    data.update({"name": "Pets", "classes_text": "cat\ndog\nbird", "_save": "Save"})
    r = root_client.post("/admin/annotate/project/add/", data)
    assert r.status_code == 302, r.content.decode()[:3000]
    project = Project.objects.get(name="Pets")
    assert project.extractor == "pixels" and project.classes == ["cat", "dog", "bird"]


def test_classes_that_differ_only_by_case_are_refused_by_name(root_client):
    data = _submitted(root_client.get("/admin/annotate/project/add/").content.decode(), "project_form")
    data.update({"name": "Pets", "classes_text": "cat\ndog\nCat\nbird", "_save": "Save"})
    r = root_client.post("/admin/annotate/project/add/", data)
    assert r.status_code == 400
    assert "upper and lower case; repeated: &#x27;cat&#x27; / &#x27;Cat&#x27;" in r.content.decode()
    assert not Project.objects.filter(name="Pets").exists()


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def _npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, X=np.zeros((2, 3), np.float32))
    return buf.getvalue()


GOOD_ZIP = {"cat/a.png": image_bytes(1), "dog/b.png": image_bytes(2)}


@pytest.mark.parametrize(("files", "message"), [
    ({"zip_file": ("photos.zip", b"this is not a zip")}, "photos.zip is not a zip archive"),
    ({"zip_file": ("empty.zip", {})}, "empty.zip is empty (images: jpg, png"),
    ({"zip_file": ("notes.zip", {"cat/readme.txt": b"hi", "run.py": b"import os"})},
     "notes.zip holds 2 file(s) but no image"),
    ({"zip_file": ("evil.zip", {"../../etc/cron.d/x.png": image_bytes(3)})}, "evil.zip: zip entry '../../etc/cron.d"),
    ({"zip_file": ("bomb.zip", "bomb")}, "bomb.zip would unpack to 3000000 bytes, more than LOUPE_MAX_UPLOAD_BYTES"),
    ({"zip_file": ("ok.zip", GOOD_ZIP), "embeddings": ("X.csv", b"0.1,0.2\n0.3,0.4\n")},
     "X.csv is not a NumPy .npy file (a CSV or other text?"),
    ({"zip_file": ("ok.zip", GOOD_ZIP), "embeddings": ("X.npz", _npz())}, "X.npz is not a NumPy .npy file (a .npz"),
    # Found by QA: the zip of images chosen in the embeddings field was called a .npz.
    ({"zip_file": ("ok.zip", GOOD_ZIP), "embeddings": ("photos.zip", GOOD_ZIP)},
     "photos.zip is not a NumPy .npy file (a zip archive of other files: the zip of images goes in the 'Zip of"),
    ({"zip_file": ("ok.zip", GOOD_ZIP), "embeddings": ("X.npy", _npy(np.zeros(4, np.float32)))},
     "X.npy holds a float32 array of shape (4,)"),
    ({"zip_file": ("ok.zip", GOOD_ZIP), "embeddings": ("X.npy", _npy(np.array([{"a": 1}] * 2, dtype=object)))},
     "X.npy holds a object array"),
    ({"zip_file": ("ok.zip", GOOD_ZIP), "manifest_file": ("m.csv", b"filepath,klass\ncat/a.png,cat\n")},
     "has no image column"),
    ({"zip_file": ("ok.zip", GOOD_ZIP), "manifest_file": ("m.csv", "image,label\nä.png,cat\n".encode("latin-1"))},
     "m.csv is not UTF-8 text"),
    # Found by QA (each answered 500): a CSV field over the csv module's limit, a COCO file or a JSON entry
    # with a field of the wrong kind.
    ({"zip_file": ("ok.zip", GOOD_ZIP), "manifest_file": ("m.csv", b"image,label\n" + b"a" * 200_000 + b".png,cat\n")},
     "manifest 'm.csv': CSV line 2: field larger than field limit (131072)"),
    ({"zip_file": ("ok.zip", GOOD_ZIP),
      "manifest_file": ("coco.json", b'{"images": [{"id": 1, "file_name": "cat/a.png"}], '
                                     b'"categories": [{"name": "cat"}]}')},
     "manifest 'coco.json' is not a COCO classification file (KeyError: 'id')"),
    ({"zip_file": ("ok.zip", GOOD_ZIP),
      "manifest_file": ("m.json", b'[{"image": "cat/a.png", "label": {"choices": 5}}]')},
     "manifest 'm.json': entry 0 is not an image entry (TypeError"),
    ({"zip_file": ("ok.zip", GOOD_ZIP),
      "manifest_file": ("ls.json", b'[{"data": {"image": "cat/a.png"}, "annotations": 3}]')},
     "manifest 'ls.json': entry 0 is not an image entry (TypeError"),
    # Found by QA (the job failed later, one with numpy's "mmap length is greater than file size").
    ({"zip_file": ("ok.zip", GOOD_ZIP), "embeddings": ("X.npy", _npy(np.ones((2, 3), np.float32))[:-5])},
     "X.npy is cut short: its header says (2, 3) float32 (24 bytes of data) but it holds 19"),
    ({"zip_file": ("ok.zip", GOOD_ZIP), "embeddings": ("X.npy", _npy(np.ones((2, 0), np.float32)))},
     "X.npy holds an empty matrix (shape (2, 0))"),
])
def test_a_wrong_upload_is_refused_at_once_naming_the_problem(root_client, media, tmp_path, settings, files,
                                                              message):
    settings.LOUPE_MAX_UPLOAD_BYTES = 2_000_000
    project = empty_project(classes=("cat", "dog"))
    post = {"labels_as": "ground_truth", "class_folders": "on"}
    for field, (name, content) in files.items():
        if content == "bomb":  # a few kilobytes that unpack to 3 MB
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("cat/a.png", b"\0" * 3_000_000)
            content = buf.getvalue()
        if isinstance(content, dict):
            content = write_zip(tmp_path / name, content).read_bytes()
        post[field] = SimpleUploadedFile(name, content)
    r = root_client.post(f"/admin/annotate/project/{project.pk}/import/", post)
    assert r.status_code == 400
    page = r.content.decode().replace("&#x27;", "'")
    assert message in page, page[page.find("errorlist") - 200:][:1500]
    # The source given but refused is not also told "give a zip" (found by QA: both messages showed).
    assert "give a zip, a folder, or a manifest" not in page
    assert not Job.objects.exists() and media_files(media) == []  # nothing started, no upload kept


def test_a_good_upload_still_starts_the_import(root_client, media, tmp_path):
    project = empty_project(classes=("cat", "dog"))
    z = write_zip(tmp_path / "ok.zip", GOOD_ZIP).read_bytes()
    r = root_client.post(f"/admin/annotate/project/{project.pk}/import/", {
        "labels_as": "ground_truth", "class_folders": "on", "zip_file": SimpleUploadedFile("ok.zip", z),
        "embeddings": SimpleUploadedFile("X.npy", _npy(np.zeros((2, 3), np.float32))),
        "manifest_file": SimpleUploadedFile("m.csv", b"image,label\ncat/a.png,cat\ndog/b.png,dog\n")})
    assert r.status_code == 302
    job = Job.objects.get()
    assert job.kind == Job.Kind.IMPORT and job.params["embeddings"].endswith("X.npy")


def test_the_project_list_leads_whoever_may_create_projects_to_the_add_page(root_client):
    from tests.factories import add_member

    page = root_client.get("/").content.decode()
    assert 'id="new-project" href="/admin/annotate/project/add/"' in page
    annotator = make_user("ann")
    add_member(empty_project(), annotator, "annotator")
    c = Client()
    c.force_login(annotator)
    page = c.get("/").content.decode()
    assert 'id="new-project"' not in page and ">p<" in page  # their project, no button


def test_make_serve_applies_migrations_before_serving():
    """`make serve` after a pull with new migrations answered 500 ('no such column') until `make run`."""
    import shutil
    import subprocess

    from tests.support import ROOT

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    plan = subprocess.run(["make", "-n", "serve"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    assert "manage.py migrate" in plan and plan.index("manage.py migrate") < plan.index("loupe_serve")


def test_the_admin_export_page_shows_why_it_refused_a_post(root_client):
    project = empty_project()
    r = root_client.post(f"/admin/annotate/project/{project.pk}/export/", {"format": "xml"})
    assert r.status_code == 400 and "Select a valid choice. xml is not one of the available choices." in (
        r.content.decode())
    assert not Job.objects.exists()
