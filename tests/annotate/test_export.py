"""Exports: every format read back with an independent reader, predictions, round trips, the job + download."""
from __future__ import annotations

import csv
import hashlib
import json
import zipfile
from urllib.parse import unquote

import numpy as np
import pytest
from django.urls import reverse
from tests.annotate.datakit import class_tree, image_bytes, write_tree
from tests.factories import empty_project, make_user

from annotate import storage
from annotate.models import Annotation, Item, Job, Round
from annotate.services.exports import (FORMATS, LS_LOCAL_PREFIX, ORIGINS_FILE, export_chunks, export_execute,
                                       export_request, export_write)
from annotate.services.imports import ImportOptions, import_images
from annotate.services.review import annotation_correct

pytestmark = pytest.mark.django_db


@pytest.fixture
def labeled(media, tmp_path):
    """A project with 6 images: 4 labeled by two annotators (one corrected by a reviewer), 2 unlabeled."""
    files = {f"imgs/{i}.png": image_bytes(i) for i in range(6)}
    src = write_tree(tmp_path / "src", files)
    project = empty_project(classes=("cat", "dog", "bird"))
    import_images(project=project, options=ImportOptions(source=str(src)))
    ann, ann2, rev = make_user("ann"), make_user("bob"), make_user("rev")
    from tests.factories import add_member

    add_member(project, rev, "reviewer")
    items = {i.original_name: i for i in Item.objects.filter(project=project)}
    Annotation.objects.create(item=items["imgs/0.png"], annotator=ann, label="cat")
    Annotation.objects.create(item=items["imgs/1.png"], annotator=ann, label="dog")
    Annotation.objects.create(item=items["imgs/2.png"], annotator=ann2, label="bird")
    Annotation.objects.create(item=items["imgs/3.png"], annotator=ann2, label="cat")
    annotation_correct(project=project, reviewer=rev, item_id=items["imgs/3.png"].pk, label="dog")
    expected = {"imgs/0.png": "cat", "imgs/1.png": "dog", "imgs/2.png": "bird", "imgs/3.png": "dog"}
    return project, src, expected


def _export(project, fmt, tmp_path, predictions=False):
    path = tmp_path / f"out.{FORMATS[fmt][0]}"
    export_write(project=project, fmt=fmt, path=path, predictions=predictions, chunk=4)  # several chunks
    return path


def test_label_studio_json(labeled, tmp_path):
    project, _, expected = labeled
    tasks = json.loads(_export(project, "label_studio", tmp_path).read_text())
    assert len(tasks) == 6
    got = {}
    for t in tasks:
        assert t["data"]["image"].startswith(LS_LOCAL_PREFIX)
        for a in t["annotations"]:
            (res,) = a["result"]
            assert res["type"] == "choices" and res["from_name"] and res["to_name"] == "image"
            got[unquote(t["data"]["image"][len(LS_LOCAL_PREFIX):])] = res["value"]["choices"][0]
    assert got == expected
    corrected = next(t for t in tasks if unquote(t["data"]["image"]).endswith("imgs/3.png"))
    assert corrected["annotations"][0]["loupe_annotator"] == "rev"


def test_json_min(labeled, tmp_path):
    project, _, expected = labeled
    rows = json.loads(_export(project, "json_min", tmp_path).read_text())
    assert {unquote(r["image"][len(LS_LOCAL_PREFIX):]): r["choice"] for r in rows} == expected
    assert all(r["annotator"] and r["created_at"] for r in rows)


def test_csv(labeled, tmp_path):
    project, _, expected = labeled
    with open(_export(project, "csv", tmp_path), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6
    assert {r["image"]: r["label"] for r in rows if r["label"]} == expected
    assert {r["annotator"] for r in rows if r["label"]} == {"ann", "bob", "rev"}


def test_coco(labeled, tmp_path):
    project, _, expected = labeled
    doc = json.loads(_export(project, "coco", tmp_path).read_text())
    cats = {c["id"]: c["name"] for c in doc["categories"]}
    assert sorted(cats.values()) == ["bird", "cat", "dog"]
    files = {im["id"]: im["file_name"] for im in doc["images"]}
    assert len(files) == 6 and all(im["width"] == 8 for im in doc["images"])
    assert {files[a["image_id"]]: cats[a["category_id"]] for a in doc["annotations"]} == expected


def test_imagefolder_zip(labeled, tmp_path):
    project, src, expected = labeled
    with zipfile.ZipFile(_export(project, "imagefolder", tmp_path)) as zf:
        names = [n for n in zf.namelist() if n != ORIGINS_FILE]
        assert len(names) == 4
        origins = list(csv.DictReader(zf.read(ORIGINS_FILE).decode().splitlines()))
        assert sorted(r["path"] for r in origins) == sorted(names)
        for name in names:
            cls, base = name.split("/")
            original = f"imgs/{base}"
            assert expected[original] == cls
            assert zf.read(name) == (src / original).read_bytes()


def test_parquet(labeled, tmp_path):
    import pyarrow.parquet as pq

    project, _, expected = labeled
    table = pq.read_table(_export(project, "parquet", tmp_path))
    assert {"image", "label", "annotator", "labeled_at", "created_at"} <= set(table.column_names)
    rows = table.to_pylist()
    assert {r["image"]: r["label"] for r in rows if r["label"]} == expected
    assert str(table.schema.field("labeled_at").type) == "timestamp[us, tz=UTC]"
    assert all(r["labeled_at"] is not None for r in rows if r["label"])


def test_predictions_for_unlabeled_items_come_from_the_latest_model(labeled, tmp_path):
    project, _, expected = labeled
    d = 4
    X = np.random.default_rng(0).normal(size=(6, d)).astype(np.float32)
    rel = storage.embedding_relpath(project, "precomputed", 9)
    storage.media_path(rel).parent.mkdir(parents=True, exist_ok=True)
    np.save(storage.media_path(rel), X)
    for r, item in enumerate(Item.objects.filter(project=project).order_by("pk")):
        item.row = r
        item.save(update_fields=["row"])
    project.embedding_file, project.embedding_dim = rel, d
    project.save()
    coef = np.random.default_rng(1).normal(size=(3, d))
    icpt = np.array([0.1, -0.2, 0.0])
    model = storage.models_dir(project) / "round-00001.npz"
    model.parent.mkdir(parents=True, exist_ok=True)
    np.savez(model, coef=coef, intercept=icpt)
    Round.objects.create(project=project, number=1, status=Round.Status.DONE, strategy="margin",
                         model_file=str(model.relative_to(media_root(project))))
    with open(_export(project, "csv", tmp_path, predictions=True), newline="") as fh:
        rows = list(csv.DictReader(fh))
    row_of = dict(Item.objects.values_list("original_name", "row"))
    for r in rows:
        if r["label"]:
            assert r["prediction"] == ""
            continue
        # Reference: scipy's softmax of the linear scores.
        from scipy.special import softmax

        p = softmax(X[row_of[r["image"]]].astype(np.float64) @ coef.T + icpt)
        assert r["prediction"] == project.classes[int(p.argmax())]
        assert float(r["confidence"]) == pytest.approx(p.max(), rel=1e-5)
    tasks = json.loads(_export(project, "label_studio", tmp_path, predictions=True).read_text())
    assert sum(1 for t in tasks if t["predictions"]) == 2


def media_root(project):
    return storage.media_path(".")


@pytest.mark.parametrize("fmt", ["imagefolder", "csv", "label_studio", "coco", "json_min"])
def test_round_trip_import_label_export_import_elsewhere(media, tmp_path, fmt):
    files = class_tree(n_per_class=3, classes=("cat", "dog"))
    src = write_tree(tmp_path / "orig", files)
    first = empty_project(name="first", classes=("cat", "dog"))
    import_images(project=first, options=ImportOptions(source=str(src)))
    labeler = make_user("labeler")
    truth = {}
    for k, item in enumerate(Item.objects.filter(project=first).order_by("pk")):
        if k == 5:
            continue  # one stays unlabeled
        wrong = "dog" if item.original_name.startswith("cat") else "cat"
        label = item.original_name.split("/")[0] if k % 2 else wrong
        Annotation.objects.create(item=item, annotator=labeler, label=label)
        truth[item.checksum] = label
    out = _export(first, fmt, tmp_path)
    second = empty_project(name="second", classes=("cat", "dog"))
    if fmt == "imagefolder":
        opts = ImportOptions(source=str(out), class_folders=True, labels_as="prelabels")
    else:
        opts = ImportOptions(source=str(src), manifest=str(out), labels_as="prelabels")
    import_images(project=second, options=opts)
    got = dict(Annotation.objects.filter(item__project=second).values_list("item__checksum", "label"))
    assert got == truth
    if fmt in ("imagefolder", "json_min"):
        assert Item.objects.filter(project=second).count() == 5  # these formats hold labeled items only
    else:
        assert Item.objects.filter(project=second).count() == 6


def test_chunks_are_bounded_and_cover_every_item_once(labeled):
    project, _, _ = labeled
    sizes, seen = [], []
    for rows in export_chunks(project, chunk=4):
        sizes.append(len(rows))
        seen += [r.item_id for r in rows]
    assert sizes == [4, 2] and seen == sorted(set(seen)) and len(seen) == 6


def test_export_job_writes_a_file_and_reports_progress(labeled, pushes, django_capture_on_commit_callbacks):
    project, _, expected = labeled
    with django_capture_on_commit_callbacks(execute=False) as cbs:
        job = export_request(project=project, fmt="csv", predictions=False)
    assert len(cbs) == 1
    job = export_execute(job_id=str(job.pk))
    assert job.status == Job.Status.DONE and job.result["records"] == 6
    path = storage.media_path(job.result_file)
    assert path.is_file() and path.parent == storage.exports_dir(project).resolve()
    assert hashlib.sha256(path.read_bytes()).hexdigest()
    pushed = pushes.jobs()
    assert pushed[0]["status"] == Job.Status.RUNNING and pushed[-1]["status"] == Job.Status.DONE
    assert pushed[-1]["download"] == reverse("job_download", args=[job.pk])
    with pytest.raises(ValueError, match="export format 'xml' is not one of"):
        export_request(project=project, fmt="xml")


def test_management_commands_import_embed_and_export(media, tmp_path):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    src = write_tree(tmp_path / "src", class_tree(n_per_class=3))
    call_command("import_images", "cmdproj", str(src), "--create", "--class-folders", "--labels-as", "prelabels",
                 "--no-embed")
    project = type(empty_project()).objects.get(name="cmdproj")
    assert project.classes == ["cat", "dog"] and project.items.count() == 6
    call_command("embed_project", "cmdproj", "--extractor", "pixels", "--param", "size=8", "--param", "dim=3")
    project.refresh_from_db()
    assert project.embedding_dim == 3 and storage.load_embeddings(project).shape == (6, 3)
    out = tmp_path / "x.csv"
    call_command("export_project", str(project.pk), "--format", "csv", "--out", str(out))
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["image"]: r["label"] for r in rows} == {name: name.split("/")[0] for name in class_tree(3)}
    with pytest.raises(CommandError, match="escapes the target folder"):
        from tests.annotate.datakit import write_zip

        call_command("import_images", "cmdproj", str(write_zip(tmp_path / "bad.zip", {"../a.png": b"x"})))
    with pytest.raises(CommandError, match="no project 'nope'"):
        call_command("export_project", "nope", "--format", "csv", "--out", str(out))


def test_round_trip_through_the_labeling_api(media, tmp_path, monkeypatch, pushes):
    """Import with embeddings -> a round -> label over the JSON API -> export -> import elsewhere."""
    from django.test import Client

    from annotate.services.rounds import round_execute, round_request

    files = class_tree(n_per_class=6, classes=("cat", "dog"))
    names = sorted(files)
    src = write_tree(tmp_path / "orig", files)
    man = tmp_path / "m.csv"
    man.write_text("image\n" + "\n".join(names) + "\n")
    X = np.random.default_rng(0).normal(size=(len(names), 5)).astype(np.float32)
    np.save(tmp_path / "e.npy", X)
    first = empty_project(name="first", classes=("cat", "dog"), batch_size=8, audit_rate=0.25)
    import_images(project=first, options=ImportOptions(source=str(src), manifest=str(man),
                                                       embeddings=str(tmp_path / "e.npy")))
    labeler = make_user("labeler")
    from tests.factories import add_member

    add_member(first, labeler, "annotator")
    rnd = round_request(project=first, reason="test")
    round_execute(round_id=rnd.pk)
    c = Client()
    c.force_login(labeler)
    leased = c.post(f"/api/projects/{first.pk}/lease", {"n": 8}, content_type="application/json").json()["items"]
    assert len(leased) == 8
    truth = {}
    for it in leased:
        item = Item.objects.get(pk=it["item_id"])
        label = item.original_name.split("/")[0]
        r = c.post(f"/api/projects/{first.pk}/label", {"item_id": item.pk, "label": label},
                   content_type="application/json")
        assert r.status_code == 201, r.content
        truth[item.checksum] = label
    for fmt in ("imagefolder", "label_studio"):
        job = export_execute(job_id=str(export_request(project=first, fmt=fmt).pk))
        out = storage.media_path(job.result_file)
        second = empty_project(name=f"second-{fmt}", classes=())
        opts = (ImportOptions(source=str(out), class_folders=True, labels_as="prelabels") if fmt == "imagefolder"
                else ImportOptions(source=str(src), manifest=str(out), labels_as="prelabels"))
        import_images(project=second, options=opts)
        got = dict(Annotation.objects.filter(item__project=second).values_list("item__checksum", "label"))
        assert got == truth, fmt


def test_only_the_newest_export_files_are_kept(labeled, monkeypatch, pushes):
    import annotate.services.exports as exports

    project, _, _ = labeled
    monkeypatch.setattr(exports, "EXPORTS_KEPT", 2)
    jobs = [export_execute(job_id=str(export_request(project=project, fmt="csv").pk)) for _ in range(3)]
    for j in jobs:
        j.refresh_from_db()
    assert jobs[0].result_file == "" and "file removed" in jobs[0].message
    assert all(storage.media_path(j.result_file).is_file() for j in jobs[1:])
    assert len(list(storage.exports_dir(project).glob("*.csv"))) == 2


def test_prelabels_keep_their_own_origin_in_every_format(media, tmp_path):
    """Imported pre-labels are not a person's labels: every format says so (issue 9)."""
    import pyarrow.parquet as pq

    src = write_tree(tmp_path / "src", class_tree(2, classes=("cat", "dog")))
    project = empty_project(classes=("cat", "dog"))
    import_images(project=project, options=ImportOptions(source=str(src), class_folders=True, labels_as="prelabels"))
    ann = make_user("ann")
    item = Item.objects.filter(project=project).order_by("pk").first()
    Annotation.objects.filter(item=item).update(is_current=False)
    Annotation.objects.create(item=item, annotator=ann, label="dog", origin="suggestion")
    want = {"prelabel": 3, "suggestion": 1}

    def count(origins):
        origins = list(origins)
        return {o: origins.count(o) for o in set(origins)}

    tasks = json.loads(_export(project, "label_studio", tmp_path).read_text())
    anns = [a for t in tasks for a in t["annotations"]]
    assert count(a["loupe_origin"] for a in anns) == want
    assert {a["result"][0]["origin"] for a in anns} == {"prediction"}  # Label Studio's word for a model's answer
    assert count(r["origin"] for r in json.loads(_export(project, "json_min", tmp_path).read_text())) == want
    with open(_export(project, "csv", tmp_path), newline="") as fh:
        assert count(r["origin"] for r in csv.DictReader(fh)) == want
    doc = json.loads(_export(project, "coco", tmp_path).read_text())
    assert count(a["origin"] for a in doc["annotations"]) == want
    assert count(r["origin"] for r in pq.read_table(_export(project, "parquet", tmp_path)).to_pylist()) == want
    with zipfile.ZipFile(_export(project, "imagefolder", tmp_path)) as zf:
        assert count(r["origin"] for r in csv.DictReader(zf.read(ORIGINS_FILE).decode().splitlines())) == want


def test_exports_use_the_consensus_of_overlapped_items(labeled, tmp_path):
    from annotate.services.quality import quality_refresh

    project, _, expected = labeled
    items = {i.original_name: i for i in Item.objects.filter(project=project)}
    # three more annotators label image 0: two say "bird"; the consensus (Dawid-Skene) outvotes the latest "cat"
    for name, lab in (("c1", "bird"), ("c2", "bird"), ("c3", "dog")):
        Annotation.objects.create(item=items["imgs/0.png"], annotator=make_user(name), label=lab)
    quality_refresh(project_id=project.pk)
    assert Item.objects.get(pk=items["imgs/0.png"].pk).consensus_label == "bird"
    with open(_export(project, "csv", tmp_path), newline="") as fh:
        rows = {r["image"]: r["label"] for r in csv.DictReader(fh) if r["label"]}
    assert rows == {**expected, "imgs/0.png": "bird"}
