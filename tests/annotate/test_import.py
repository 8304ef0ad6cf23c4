"""Imports: folders, zips, manifests (path, file://, http://), labels, embeddings, bad input."""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
from functools import partial

import numpy as np
import pytest
from tests.annotate.datakit import class_tree, db_snapshot, image_bytes, media_files, write_tree, write_zip
from tests.factories import empty_project, make_user

from annotate import storage
from annotate.models import Annotation, Item, Job
from annotate.services.imports import ImportOptions, ImportRejected, import_execute, import_images, import_request

pytestmark = pytest.mark.django_db


def run(project, **opts):
    return import_images(project=project, options=ImportOptions.from_dict(opts))


def test_folder_with_class_folders_as_ground_truth_imports_every_format(media, tmp_path):
    files = class_tree(n_per_class=5)  # png, jpg, webp, bmp, tiff in both classes
    src = write_tree(tmp_path / "src", files)
    (src / "dog" / "nested").mkdir()
    (src / "dog" / "nested" / "deep.png").write_bytes(image_bytes(99))  # recursive
    project = empty_project(classes=())
    res = run(project, source=str(src), class_folders=True, labels_as="ground_truth")
    assert res.imported == 11 and res.skipped_count == 0
    project.refresh_from_db()
    assert project.classes == ["cat", "dog"]
    items = {i.original_name: i for i in Item.objects.filter(project=project)}
    assert set(items) == set(files) | {"dog/nested/deep.png"}
    for name, data in files.items():
        item = items[name]
        assert item.ground_truth == name.split("/")[0]
        assert item.checksum == hashlib.sha256(data).hexdigest()
        stored = storage.media_path(item.file)
        assert stored.read_bytes() == data and (item.width, item.height) == (8, 8)
    assert not Annotation.objects.exists()  # ground truth is kept apart from annotations
    assert not (storage.project_dir(project) / "staging").exists() or not any(
        (storage.project_dir(project) / "staging").iterdir())


def test_zip_with_prelabels_creates_annotations_and_rerun_is_idempotent(media, tmp_path):
    files = class_tree(n_per_class=2, classes=("a", "b"))
    z = write_zip(tmp_path / "in.zip", files)
    user = make_user("admin1")
    project = empty_project(classes=("a", "b"))
    res = import_images(project=project, options=ImportOptions(source=str(z), class_folders=True,
                                                               labels_as="prelabels"), user=user)
    assert res.imported == 4
    labels = {a.item.original_name: a.label for a in Annotation.objects.select_related("item")}
    assert labels == {name: name.split("/")[0] for name in files}
    assert set(Annotation.objects.values_list("annotator__username", flat=True)) == {"admin1"}
    before = db_snapshot(project)
    again = import_images(project=project, options=ImportOptions(source=str(z), class_folders=True,
                                                                 labels_as="prelabels"), user=user)
    assert again.imported == 0 and again.already_present == 4
    assert db_snapshot(project) == before


def test_class_folders_skip_a_folder_that_wraps_everything(media, tmp_path):
    from annotate.services.imports import class_labels

    assert class_labels(["top/cat/1.png", "top/dog/2.png", "top/dog/sub/3.png"]) == ["cat", "dog", "dog"]
    assert class_labels(["cat/1.png", "x.png"]) == ["cat", ""]
    assert class_labels(["a/b/1.png"]) == ["b"]
    z = write_zip(tmp_path / "wrapped.zip", {f"export/{k}": v for k, v in class_tree(2).items()})
    project = empty_project(classes=())
    run(project, source=str(z), class_folders=True)
    assert sorted(set(Item.objects.values_list("ground_truth", flat=True))) == ["cat", "dog"]


def test_corrupt_and_non_image_files_are_reported_by_name_and_skipped(media, tmp_path):
    good = image_bytes(1)
    src = write_tree(tmp_path / "src", {
        "ok.png": good,
        "broken.jpg": image_bytes(2, ".jpg")[:40],  # truncated JPEG
        "fake.png": b"this is text pretending to be a png",
        "notes.txt": b"hello",
        "copy.png": good,  # same bytes as ok.png
    })
    project = empty_project()
    res = run(project, source=str(src))
    assert res.imported == 1
    reasons = {s["name"]: s["reason"] for s in res.skipped}
    # Files are visited in sorted order: copy.png comes first, so ok.png is the duplicate.
    assert set(reasons) == {"broken.jpg", "fake.png", "notes.txt", "ok.png"}
    assert "corrupt" in reasons["broken.jpg"] or "identify" in reasons["broken.jpg"]
    assert "identify" in reasons["fake.png"]
    assert "not an image file" in reasons["notes.txt"]
    assert reasons["ok.png"] == "duplicate of 'copy.png' (same SHA-256)"
    assert Item.objects.count() == 1


def test_path_traversing_zip_is_rejected_and_changes_nothing(media, tmp_path):
    project = empty_project()
    run(project, source=str(write_zip(tmp_path / "ok.zip", {"cat/x.png": image_bytes(5)})))
    before, files_before = db_snapshot(project), media_files(media)
    evil = write_zip(tmp_path / "evil.zip", {"cat/y.png": image_bytes(6), "../../escape.png": image_bytes(7)})
    with pytest.raises(ImportRejected, match=r"zip entry '../../escape.png' escapes the target folder"):
        run(project, source=str(evil))
    abs_evil = write_zip(tmp_path / "abs.zip", {"/etc/evil.png": image_bytes(8)})
    with pytest.raises(ImportRejected, match="escapes the target folder"):
        run(project, source=str(abs_evil))
    assert db_snapshot(project) == before and media_files(media) == files_before
    assert not (tmp_path / "escape.png").exists()


def test_size_limits_reject_zip_bombs_and_skip_huge_images(media, tmp_path, settings):
    project = empty_project()
    settings.LOUPE_MAX_UPLOAD_BYTES = 5000
    bomb = write_zip(tmp_path / "bomb.zip", {"a.png": image_bytes(1), "zeros.bin": b"\0" * 100_000})
    with pytest.raises(ImportRejected, match="would unpack to .* more than LOUPE_MAX_UPLOAD_BYTES=5000"):
        run(project, source=str(bomb))
    settings.LOUPE_MAX_UPLOAD_BYTES = 10**9
    settings.LOUPE_MAX_IMAGE_BYTES = 300
    big = image_bytes(2, size=64)
    assert len(big) > 300
    res = run(project, source=str(write_tree(tmp_path / "s", {"small.png": image_bytes(3, size=2), "big.png": big})))
    assert res.imported == 1 and res.skipped == [{"name": "big.png",
                                                  "reason": "larger than LOUPE_MAX_IMAGE_BYTES=300 bytes"}]


def _csv(rows):
    return "image,label\n" + "".join(f"{a},{b}\n" for a, b in rows)


def test_csv_manifest_with_labels_against_a_folder(media, tmp_path):
    files = {f"x/{i}.png": image_bytes(i) for i in range(4)}
    src = write_tree(tmp_path / "src", files)
    man = tmp_path / "m.csv"
    man.write_text(_csv([("x/2.png", "dog"), ("x/0.png", "cat"), ("x/missing.png", "cat")]))
    project = empty_project()
    res = run(project, source=str(src), manifest=str(man))
    assert res.imported == 2
    gt = dict(Item.objects.values_list("original_name", "ground_truth"))
    assert gt == {"x/2.png": "dog", "x/0.png": "cat"}
    reasons = {s["name"]: s["reason"] for s in res.skipped}
    assert "not found" in reasons["x/missing.png"]
    assert reasons["x/1.png"] == "not listed in the manifest"


@pytest.mark.parametrize("ref", ["../../etc/passwd", "/etc/passwd", "x/../../outside.png"])
def test_a_manifest_path_outside_the_source_is_skipped_by_name_and_the_rest_imported(media, tmp_path, ref):
    """Found by QA: one such row rejected the whole import as "zip entry ... escapes the target folder;
    the archive is rejected" (the archive was fine; the manifest named a path outside it)."""
    src = write_tree(tmp_path / "src", {"x/0.png": image_bytes(0)})
    man = tmp_path / "m.csv"
    man.write_text(_csv([("x/0.png", "cat"), (ref, "dog")]))
    res = run(empty_project(), source=str(src), manifest=str(man))
    assert res.imported == 1
    assert res.skipped == [{"name": ref, "reason": "cannot be read: it points outside the source folder/zip "
                                                   "(manifest paths are relative to it)"}]


def test_csv_manifest_whose_label_column_has_another_name_is_refused_not_imported_without_labels(media, tmp_path):
    src = write_tree(tmp_path / "src", {"a.png": image_bytes(1), "b.png": image_bytes(2)})
    man = tmp_path / "m.csv"
    man.write_text("filename,klass\na.png,cat\nb.png,dog\n")
    project = empty_project()
    before, files = db_snapshot(project), media_files(media)
    with pytest.raises(ImportRejected, match=r"column 'klass' is not a label column; name the label column one of"):
        run(project, source=str(src), manifest=str(man))
    assert db_snapshot(project) == before and media_files(media) == files
    man.write_text("filename,target\na.png,cat\nb.png,dog\n")  # a recognised name imports the labels
    assert run(project, source=str(src), manifest=str(man)).imported == 2
    assert dict(Item.objects.values_list("original_name", "ground_truth")) == {"a.png": "cat", "b.png": "dog"}


def test_json_manifest_without_source_resolves_paths_next_to_it(media, tmp_path):
    write_tree(tmp_path / "imgs", {"a.png": image_bytes(1), "b.jpg": image_bytes(2, ".jpg")})
    man = tmp_path / "list.json"
    man.write_text(json.dumps([{"image": "imgs/a.png", "label": "cat"}, {"path": "imgs/b.jpg", "class": "dog"}]))
    project = empty_project()
    res = run(project, manifest=man.as_uri(), labels_as="prelabels")  # a file:// URL
    assert res.imported == 2
    assert dict(Annotation.objects.values_list("item__original_name", "label")) == {"imgs/a.png": "cat",
                                                                                   "imgs/b.jpg": "dog"}


@pytest.fixture
def http_dir(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_manifest_and_images_over_http(media, http_dir):
    root, base = http_dir
    write_tree(root, {"i/a.png": image_bytes(1), "i/b.png": image_bytes(2)})
    (root / "m.csv").write_text(_csv([(f"{base}/i/a.png", "cat"), (f"{base}/i/b.png", "dog")]))
    project = empty_project()
    res = run(project, manifest=f"{base}/m.csv")
    assert res.imported == 2
    assert sorted(Item.objects.values_list("ground_truth", flat=True)) == ["cat", "dog"]
    with pytest.raises(ImportRejected, match=r"cannot fetch manifest .*/nope.csv.*HTTP 404"):
        run(project, manifest=f"{base}/nope.csv")
    with pytest.raises(ImportRejected, match="cannot fetch manifest 'http://127.0.0.1:9/m.csv'"):
        run(project, manifest="http://127.0.0.1:9/m.csv")  # nothing listens on port 9


def test_unknown_class_in_manifest_is_rejected_and_changes_nothing(media, tmp_path):
    src = write_tree(tmp_path / "src", {"a.png": image_bytes(1), "b.png": image_bytes(2)})
    man = tmp_path / "m.csv"
    man.write_text(_csv([("a.png", "cat"), ("b.png", "zebra")]))
    project = empty_project()
    before, files = db_snapshot(project), media_files(media)
    with pytest.raises(ImportRejected, match=r"unknown class 'zebra' \(for 'b.png'\); the project's classes are"):
        run(project, source=str(src), manifest=str(man))
    assert db_snapshot(project) == before and media_files(media) == files


def test_embeddings_aligned_with_manifest_set_rows_and_a_new_version(media, tmp_path):
    src = write_tree(tmp_path / "src", {f"{i}.png": image_bytes(i) for i in range(3)})
    src.joinpath("bad.png").write_bytes(b"junk")
    man = tmp_path / "m.csv"
    man.write_text(_csv([("2.png", ""), ("bad.png", ""), ("0.png", ""), ("1.png", "")]))
    X = np.arange(12, dtype=np.float32).reshape(4, 3) + 0.5
    np.save(tmp_path / "e.npy", X)
    project = empty_project()
    res = run(project, source=str(src), manifest=str(man), embeddings=str(tmp_path / "e.npy"))
    assert res.imported == 3 and [s["name"] for s in res.skipped] == ["bad.png"]
    project.refresh_from_db()
    assert (project.extractor, project.embedding_version, project.embedding_dim) == ("precomputed", 1, 3)
    E = storage.load_embeddings(project)
    manifest_row = {"2.png": 0, "0.png": 2, "1.png": 3}
    for item in Item.objects.filter(project=project):
        np.testing.assert_array_equal(E[item.row], X[manifest_row[item.original_name]])
    # A second import appends rows in a new version; the old rows keep their values.
    src2 = write_tree(tmp_path / "src2", {"9.png": image_bytes(9)})
    np.save(tmp_path / "e2.npy", np.full((1, 3), 7.0, dtype=np.float32))
    run(project, source=str(src2), embeddings=str(tmp_path / "e2.npy"))
    project.refresh_from_db()
    E2 = storage.load_embeddings(project)
    assert project.embedding_version == 2 and E2.shape == (4, 3)
    assert np.array_equal(E2[Item.objects.get(original_name="9.png").row], [7, 7, 7])
    assert np.array_equal(E2[:3], E)


@pytest.mark.parametrize("matrix, message", [
    (np.zeros((3, 2), np.float32), "has 3 rows but 2 images need one row each"),
    (np.zeros(2, np.float32), "must be a 2-D"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN or inf in 1 row"),
    (np.array([[1.0, 2.0], [np.inf, 1.0]]), "NaN or inf in 1 row.*first at row 1"),
])
def test_bad_embeddings_are_rejected_and_change_nothing(media, tmp_path, matrix, message):
    src = write_tree(tmp_path / "src", {"a.png": image_bytes(1), "b.png": image_bytes(2)})
    np.save(tmp_path / "e.npy", matrix)
    project = empty_project()
    before, files = db_snapshot(project), media_files(media)
    with pytest.raises(ImportRejected, match=message):
        run(project, source=str(src), embeddings=str(tmp_path / "e.npy"))
    assert db_snapshot(project) == before and media_files(media) == files


def test_embedding_dimension_must_match_the_project(media, tmp_path):
    project = empty_project()
    np.save(tmp_path / "e.npy", np.ones((1, 4), np.float32))
    run(project, source=str(write_tree(tmp_path / "a", {"a.png": image_bytes(1)})), embeddings=str(tmp_path / "e.npy"))
    np.save(tmp_path / "e5.npy", np.ones((1, 5), np.float32))
    before = db_snapshot(project)
    with pytest.raises(ImportRejected, match="embeddings have 5 columns but the project's embeddings have 4, "
                                             "and one project cannot mix two kinds of embeddings"):
        run(project, source=str(write_tree(tmp_path / "b", {"b.png": image_bytes(2)})),
            embeddings=str(tmp_path / "e5.npy"))
    assert db_snapshot(project) == before


def _pixels_project(tmp_path):
    """Three images embedded with the demo's ``pixels`` extractor (the project's own embeddings)."""
    from annotate.services.embeddings import embeddings_compute

    project = empty_project()
    run(project, source=str(write_tree(tmp_path / "first", {f"{i}.png": image_bytes(i) for i in range(3)})))
    embeddings_compute(project=project, extractor="pixels", params={"size": 8, "dim": 5})
    project.refresh_from_db()
    assert (project.extractor, project.embedding_version) == ("pixels", 1)
    return project


def test_own_embeddings_for_only_new_images_of_a_pixels_project_say_what_to_do(media, tmp_path):
    """Found by QA: after the demo-style ``pixels`` embeddings, an import with its own .npy was refused with
    no way forward.  Rows for the new images only cannot join pixel rows: the answer says so and how to
    switch (every image again, with a row each) or to import without the .npy."""
    project = _pixels_project(tmp_path)
    np.save(tmp_path / "e.npy", np.ones((1, 4), np.float32))
    before, files = db_snapshot(project), media_files(media)
    with pytest.raises(ImportRejected) as err:
        run(project, source=str(write_tree(tmp_path / "new", {"9.png": image_bytes(9)})),
            embeddings=str(tmp_path / "e.npy"))
    msg = str(err.value)
    assert msg.startswith("the project's embeddings come from extractor 'pixels', and one project cannot mix")
    assert "import every image of the project again" in msg and "lacks 3 of the project's 3 images" in msg
    assert "Or import without the .npy" in msg
    assert db_snapshot(project) == before and media_files(media) == files


def test_own_embeddings_for_every_image_replace_the_pixels_embeddings(media, tmp_path):
    """The whole project again (the three images it has, recognised by content) plus a new one, with one
    .npy row each: the imported matrix becomes the project's embeddings (precomputed, a new version),
    every item pointing at its own row of it, and the job's message says what was replaced."""
    project = _pixels_project(tmp_path)
    ids = dict(Item.objects.filter(project=project).values_list("original_name", "id"))
    src = write_tree(tmp_path / "all", {f"{i}.png": image_bytes(i) for i in (9, 2, 0, 1)})  # sorted: 0 1 2 9
    X = np.arange(16, dtype=np.float32).reshape(4, 4) * 10 + 1
    np.save(tmp_path / "e.npy", X)
    res = run(project, source=str(src), embeddings=str(tmp_path / "e.npy"))
    assert (res.imported, res.already_present) == (1, 3)
    assert res.embeddings_replaced == ("replaced the project's 'pixels' embeddings (5 columns) with the imported "
                                       "ones (4 columns), version 2")
    project.refresh_from_db()
    assert (project.extractor, project.embedding_version, project.embedding_dim) == ("precomputed", 2, 4)
    E = storage.load_embeddings(project)
    assert E.shape == (4, 4)
    file_row = {"0.png": 0, "1.png": 1, "2.png": 2, "9.png": 3}  # the image files in sorted path order
    for item in Item.objects.filter(project=project):
        np.testing.assert_array_equal(E[item.row], X[file_row[item.original_name]])
    assert {n: i for n, i in Item.objects.filter(project=project).values_list("original_name", "id")
            if n != "9.png"} == ids  # the same items, not copies
    assert sorted(Item.objects.filter(project=project).values_list("row", flat=True)) == [0, 1, 2, 3]


def test_own_embeddings_of_another_width_replace_precomputed_ones_when_they_cover_every_image(media, tmp_path):
    project = empty_project()
    src = write_tree(tmp_path / "a", {"a.png": image_bytes(1)})
    np.save(tmp_path / "e4.npy", np.ones((1, 4), np.float32))
    run(project, source=str(src), embeddings=str(tmp_path / "e4.npy"))
    np.save(tmp_path / "e5.npy", np.full((1, 5), 3.0, np.float32))
    res = run(project, source=str(src), embeddings=str(tmp_path / "e5.npy"))  # the same image, 5 columns
    assert (res.imported, res.already_present) == (0, 1)
    project.refresh_from_db()
    assert (project.embedding_version, project.embedding_dim) == (2, 5)
    assert np.array_equal(storage.load_embeddings(project), np.full((1, 5), 3.0, np.float32))


def test_failure_while_moving_files_rolls_back_rows_and_files(media, tmp_path, monkeypatch):
    import annotate.services.imports as imports

    src = write_tree(tmp_path / "src", {f"{i}.png": image_bytes(i) for i in range(4)})
    project = empty_project()
    before, files = db_snapshot(project), media_files(media)
    real_replace, calls = imports.os.replace, []

    def flaky(a, b):
        calls.append(a)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_replace(a, b)

    monkeypatch.setattr(imports.os, "replace", flaky)
    with pytest.raises(OSError, match="No space left"):
        run(project, source=str(src))
    assert db_snapshot(project) == before and media_files(media) == files


def test_import_job_records_progress_result_and_queues_embedding(media, tmp_path, django_capture_on_commit_callbacks,
                                                                  pushes):
    src = write_tree(tmp_path / "src", {"a.png": image_bytes(1), "b.txt": b"x"})
    project = empty_project()
    user = make_user("boss")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = import_request(project=project, options={"source": str(src)}, user=user)
    assert len(callbacks) == 1 and job.status == Job.Status.QUEUED
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = import_execute(job_id=str(job.pk))
    assert job.status == Job.Status.DONE and job.result["imported"] == 1
    reason = "not an image file (allowed: jpg, png, webp, bmp, tiff)"
    assert job.result["skipped"] == [{"name": "b.txt", "reason": reason}]
    emb = Job.objects.get(pk=job.result["embedding_job"])
    assert emb.kind == Job.Kind.EMBED and emb.params["extractor"] == "pixels" and len(callbacks) == 1
    pushed = [(j["status"], j["progress"]) for j in pushes.jobs()]
    assert pushed[0][0] == Job.Status.RUNNING and pushed[-1] == (Job.Status.DONE, 1.0)
    assert pushes.of("stats.updated")[-1]["stats"]["totals"]["items"] == 1

    bad = import_request(project=project, options={"source": str(write_zip(tmp_path / "e.zip", {"../x.png": b""}))})
    before = db_snapshot(project)
    bad = import_execute(job_id=str(bad.pk))
    assert bad.status == Job.Status.FAILED and "escapes the target folder" in bad.error
    assert db_snapshot(project) == before


def test_bad_options_are_named(media, tmp_path):
    with pytest.raises(ImportRejected, match="labels_as='maybe' is not one of"):
        ImportOptions.from_dict({"source": str(tmp_path), "labels_as": "maybe"})
    with pytest.raises(ImportRejected, match="nothing to import"):
        ImportOptions.from_dict({})
    with pytest.raises(ImportRejected, match="does not exist"):
        ImportOptions.from_dict({"source": str(tmp_path / "nope")})


def test_without_server_paths_a_manifest_may_not_reach_outside(media, tmp_path, http_dir):
    write_tree(tmp_path / "secret", {"s.png": image_bytes(3)})
    up = media / "uploads" / "u1"
    up.mkdir(parents=True)
    src = write_zip(up / "src.zip", {"a.png": image_bytes(1)})
    project = empty_project()
    man = up / "m.csv"
    for ref in [str(tmp_path / "secret" / "s.png"), "../secret/s.png", (tmp_path / "secret" / "s.png").as_uri()]:
        man.write_text(_csv([("a.png", "cat"), (ref, "cat")]))
        with pytest.raises(ImportRejected, match="names a file on the server"):
            run(project, manifest=str(man), server_paths=False)
    # Server paths as the source or the manifest itself, and URLs of internal hosts, are refused too.
    with pytest.raises(ImportRejected, match="only an uploaded zip may be the source"):
        run(project, source=str(tmp_path / "secret"), server_paths=False)
    outside = tmp_path / "m2.csv"
    outside.write_text(_csv([("a.png", "cat")]))
    with pytest.raises(ImportRejected, match="only http\\(s\\):// URLs"):
        run(project, source=str(src), manifest=str(outside), server_paths=False)
    root, base = http_dir
    write_tree(root, {"i/a.png": image_bytes(5)})
    (root / "m.csv").write_text(_csv([(f"{base}/i/a.png", "cat")]))
    with pytest.raises(ImportRejected, match="is 127.0.0.1, not a public address"):
        run(project, manifest=f"{base}/m.csv", server_paths=False)
    man.write_text(_csv([(f"{base}/i/a.png", "cat")]))
    res = run(project, manifest=str(man), server_paths=False)  # an uploaded manifest naming an internal URL
    assert res.imported == 0 and "not a public address" in res.skipped[0]["reason"]
    assert not Item.objects.exists()
    man.write_text(_csv([("a.png", "cat")]))
    assert run(project, source=str(src), manifest=str(man), server_paths=False).imported == 1


def test_admin_import_page_for_a_project_admin_offers_uploads_only(media, tmp_path):
    from tests.factories import add_member
    from django.test import Client

    project = empty_project()
    boss = make_user("boss")
    add_member(project, boss, "admin")
    c = Client()
    c.force_login(boss)
    page = c.get(f"/admin/annotate/project/{project.pk}/import/").content.decode()
    assert 'name="zip_file"' in page and 'name="folder"' not in page
    r = c.post(f"/admin/annotate/project/{project.pk}/import/", {"manifest_url": "/etc/passwd",
                                                                 "labels_as": "ground_truth"})
    assert r.status_code == 400 and "only http(s):// URLs are allowed" in r.content.decode()
    r = c.post(f"/admin/annotate/project/{project.pk}/import/", {"manifest_url": "http://169.254.169.254/x.csv",
                                                                 "labels_as": "ground_truth"})
    assert r.status_code == 400 and "not a public address" in r.content.decode()
    assert not Job.objects.exists()
    z = write_zip(tmp_path / "up.zip", {"cat/a.png": image_bytes(1)})
    with open(z, "rb") as fh:
        r = c.post(f"/admin/annotate/project/{project.pk}/import/", {"zip_file": fh, "class_folders": "on",
                                                                     "labels_as": "ground_truth"})
    assert r.status_code == 302
    job = Job.objects.get()
    assert job.params["server_paths"] is False and job.params["class_folders"] is True
    job = import_execute(job_id=str(job.pk))
    assert job.status == Job.Status.DONE and job.result["imported"] == 1
    assert not storage.media_path(job.params["cleanup_dir"]).exists()  # the upload is removed afterwards


def test_import_stands_when_the_embedding_job_cannot_be_queued(media, tmp_path, monkeypatch, pushes):
    project = empty_project(extractor="onnx")  # no model file uploaded yet
    source = str(write_tree(tmp_path / "s", {"a.png": image_bytes(1)}))
    job = import_request(project=project, options={"source": source})
    job = import_execute(job_id=str(job.pk))
    assert job.status == Job.Status.DONE and job.result["imported"] == 1
    assert "embeddings not computed: extractor 'onnx' needs a model file" in job.message
    assert Item.objects.filter(project=project).count() == 1
