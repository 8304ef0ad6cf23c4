"""Issue 12: hostile or broken user input is refused by name (4xx or a named skip), never a 500.

Row 4: a damaged member of an import zip, or a NUL in a manifest path, skips that file by name and
imports the rest.  Row 6: deeply nested JSON, a NUL in a query parameter, a class name longer than a
label may be.  Row 10: ``item_id`` of the wrong JSON type on the review API.
"""
from __future__ import annotations

import json
import zipfile

import pytest
from tests.annotate.datakit import image_bytes, write_tree
from tests.factories import empty_project
from django.test import Client

from annotate.models import Item, Membership
from annotate.services.imports import ImportOptions, import_images


@pytest.fixture
def media(tmp_path, settings, db):
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = root
    return root


def _member_data_offset(path, name: str) -> tuple[int, int]:
    """(offset of the member's data in the file, its compressed size)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    with open(path, "rb") as fh:
        fh.seek(info.header_offset + 26)
        n_name, n_extra = int.from_bytes(fh.read(2), "little"), int.from_bytes(fh.read(2), "little")
    return info.header_offset + 30 + n_name + n_extra, info.compress_size


def _damage(path, name: str, new: bytes) -> None:
    start, size = _member_data_offset(path, name)
    raw = bytearray(path.read_bytes())
    raw[start + size // 2: start + size // 2 + len(new)] = new
    path.write_bytes(bytes(raw))


# --------------------------------------------------------------------------- row 4
def test_a_zip_with_a_bad_crc_member_and_a_broken_deflate_stream_imports_the_rest(media, tmp_path):
    z = tmp_path / "upload.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr(zipfile.ZipInfo("cat/good1.png"), image_bytes(1), compress_type=zipfile.ZIP_STORED)
        zf.writestr(zipfile.ZipInfo("cat/badcrc.png"), image_bytes(2), compress_type=zipfile.ZIP_STORED)
        zf.writestr(zipfile.ZipInfo("dog/deflate.png"), image_bytes(3, size=32), compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(zipfile.ZipInfo("dog/good2.png"), image_bytes(4), compress_type=zipfile.ZIP_DEFLATED)
    _damage(z, "cat/badcrc.png", b"\x00\xff")  # stored: the bytes change, the recorded CRC does not
    _damage(z, "dog/deflate.png", b"\xff" * 12)  # an invalid deflate block
    project = empty_project()
    res = import_images(project=project, options=ImportOptions.from_dict({"source": str(z)}))
    reasons = {s["name"]: s["reason"] for s in res.skipped}
    assert res.imported == 2
    assert set(reasons) == {"cat/badcrc.png", "dog/deflate.png"}
    assert "damaged zip member" in reasons["cat/badcrc.png"] and "CRC" in reasons["cat/badcrc.png"]
    assert "damaged zip member" in reasons["dog/deflate.png"]
    assert sorted(Item.objects.values_list("original_name", flat=True)) == ["cat/good1.png", "dog/good2.png"]


def test_a_nul_byte_in_a_manifest_path_skips_that_row_by_name(media, tmp_path):
    write_tree(tmp_path / "imgs", {"a.png": image_bytes(1), "b.png": image_bytes(2)})
    man = tmp_path / "list.json"
    man.write_text(json.dumps([{"image": "imgs/a.png"}, {"image": "imgs/\u0000b.png"}, {"image": "imgs/b.png"}]))
    project = empty_project()
    res = import_images(project=project, options=ImportOptions.from_dict({"manifest": man.as_uri()}))
    assert res.imported == 2
    assert res.skipped == [{"name": "imgs/\\x00b.png", "reason": "cannot be read: its path contains a NUL byte"}]


# --------------------------------------------------------------------------- rows 6 and 10 (HTTP)
@pytest.fixture
def reviewer_client(make_project, make_user, make_round):
    user = make_user("rev")
    project = make_project(members=[(user, Membership.Role.ADMIN)])
    make_round(project)
    client = Client()
    client.force_login(user)
    return project, client


def _post(client, url, body: bytes):
    return client.post(url, body, content_type="application/json")


def test_json_nested_a_hundred_thousand_deep_is_a_400(reviewer_client):
    project, client = reviewer_client
    deep = b"[" * 100_000 + b"]" * 100_000
    for path in ("label", "lease"):
        resp = _post(client, f"/api/projects/{project.pk}/{path}", b'{"item_id": ' + deep + b"}")
        assert resp.status_code == 400, resp.content[:200]
        assert "nested too deeply" in resp.json()["error"]
    resp = _post(client, f"/api/projects/{project.pk}/review/correct", deep)
    assert resp.status_code == 400 and "nested too deeply" in resp.json()["error"]


def test_a_nul_byte_in_the_review_filter_is_a_400(reviewer_client):
    project, client = reviewer_client
    resp = client.get(f"/api/projects/{project.pk}/review/items", {"label": "\x00"})
    assert resp.status_code == 400 and "NUL" in resp.json()["error"]


@pytest.mark.parametrize("item_id", [True, 1708.9, " 1708 ", "1708", None, [1], {"id": 1}])
def test_review_correct_takes_only_an_integer_item_id(reviewer_client, item_id):
    project, client = reviewer_client
    item = Item.objects.filter(project=project).first()
    body = {"item_id": item.pk if item_id == " 1708 " else item_id, "label": "cat"}
    if item_id == " 1708 ":
        body["item_id"] = f" {item.pk} "
    resp = _post(client, f"/api/projects/{project.pk}/review/correct", json.dumps(body).encode())
    assert resp.status_code == 400, resp.content
    assert "item_id" in resp.json()["error"]


def test_a_class_name_longer_than_a_label_may_be_is_refused_in_admin(db):
    from annotate.forms import build_project_form

    form = build_project_form()(data={"name": "long classes", "classes_text": "cat\n" + "x" * 201})
    assert not form.is_valid()
    assert "at most 200 characters" in str(form.errors["classes_text"])
    ok = build_project_form()(data={"name": "ok classes", "classes_text": "cat\n" + "x" * 200})
    ok.is_valid()
    assert "classes_text" not in ok.errors


def test_a_nul_inside_a_json_string_is_a_400(reviewer_client):
    project, client = reviewer_client
    resp = _post(client, f"/api/projects/{project.pk}/label", b'{"item_id": 1, "label": "c\\u0000t"}')
    assert resp.status_code == 400 and "NUL" in resp.json()["error"]
    # The six characters \u0000 written as text (an escaped backslash) are not a NUL.
    resp = _post(client, f"/api/projects/{project.pk}/label", b'{"item_id": 1, "label": "c\\\\u0000t"}')
    assert "NUL" not in resp.json()["error"]


# --------------------------------------------------------------------------- row 9
def test_a_tiny_png_of_13000_by_13000_pixels_is_skipped_by_name(media, tmp_path, settings):
    import io
    import resource

    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (13000, 13000)).save(buf, "PNG", optimize=True)  # 1-bit: a 13k × 13k PNG of a few KB
    assert len(buf.getvalue()) < 64 * 1024
    src = write_tree(tmp_path / "src", {"huge.png": buf.getvalue(), "ok.png": image_bytes(1)})
    project = empty_project()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = import_images(project=project, options=ImportOptions.from_dict({"source": str(src)}))
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert res.imported == 1
    assert res.skipped == [{"name": "huge.png", "reason": "13000×13000 = 169000000 pixels, more than "
                                                          "LOUPE_MAX_IMAGE_PIXELS=40000000"}]
    assert grown_mib < 100  # never decoded (decoding is 169 MB at one byte per pixel)
    settings.LOUPE_MAX_IMAGE_PIXELS = 63  # the limit is configurable: now the 8×8 one is too large as well
    res = import_images(project=empty_project(name="q"), options=ImportOptions.from_dict({"source": str(src)}))
    assert res.imported == 0 and {s["name"] for s in res.skipped} == {"huge.png", "ok.png"}


# --------------------------------------------------------------------------- found by QA on the running app
@pytest.mark.parametrize("path,body", [
    ("label", {"item_id": 2**64, "label": "cat"}),
    ("skip", {"item_id": 2**64}),
    ("undo", {"item_id": 2**64}),
    ("release", {"item_ids": [2**64]}),
])
def test_an_item_id_too_large_for_the_database_is_a_400(reviewer_client, path, body):
    # SQLite's driver raised OverflowError (a 500) for a JSON integer above 2**63 - 1.
    project, client = reviewer_client
    resp = _post(client, f"/api/projects/{project.pk}/{path}", json.dumps(body).encode())
    assert resp.status_code == 400, resp.content[:300]
    assert "item_id" in resp.json()["error"]


@pytest.mark.parametrize("fmt", [["csv"], {"csv": 1}])
def test_an_export_format_that_is_not_a_string_is_a_400(reviewer_client, fmt):
    project, client = reviewer_client
    resp = _post(client, f"/api/projects/{project.pk}/exports", json.dumps({"format": fmt}).encode())
    assert resp.status_code == 400, resp.content[:300]
    assert "format" in resp.json()["error"]


def test_a_postscript_image_is_refused_before_any_decoder_runs(monkeypatch):
    """EPS is decoded by running Ghostscript on the file (a program interpreter, when installed): the
    format is refused from the header, and no EPS decoder is ever called."""
    from PIL import EpsImagePlugin

    from annotate.services.import_sources import check_image

    called = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: called.append(a))
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "load", lambda self, *a, **k: called.append("load"))
    eps = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\n"
           b"%ImageData: 8 8 8 3 0 1 1 \"beginimage\"\nshowpage\n%%EOF\n")
    with pytest.raises(ValueError, match="format EPS is not allowed"):
        check_image(eps)
    assert called == []
