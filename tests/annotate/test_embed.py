"""Embedding jobs: a new version per run, rows in id order, caches invalidated, bad extractors named."""
from __future__ import annotations

import numpy as np
import pytest
from tests.annotate.datakit import imported_project
from PIL import Image

from annotate import storage
from annotate.models import Item, Job
from annotate.services.embeddings import embedding_execute, embedding_request, embeddings_compute
from selection.extractors import make_extractor

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(media, tmp_path):
    return imported_project(tmp_path, 12)


def test_pixels_embedding_sets_rows_and_matches_the_extractor(project):
    version = embeddings_compute(project=project, extractor="pixels", params={"size": 8, "dim": 5})
    project.refresh_from_db()
    assert (version, project.embedding_version, project.embedding_dim, project.extractor) == (1, 1, 5, "pixels")
    assert project.embedding_file == storage.embedding_relpath(project, "pixels", 1)
    E = storage.load_embeddings(project)
    items = list(Item.objects.filter(project=project).order_by("pk"))
    assert [i.row for i in items] == list(range(12))
    # Independent path: run the library extractor on the stored files in id order.
    imgs = [Image.open(storage.media_path(i.file)).convert("RGB") for i in items]
    ref = make_extractor("pixels", {"size": 8, "dim": 5}).extract(lambda k: imgs[k], len(imgs))
    np.testing.assert_allclose(E, ref, rtol=1e-5, atol=1e-5)


def test_changing_the_extractor_writes_a_new_version_and_drops_caches(project):
    embeddings_compute(project=project, extractor="pixels", params={"size": 8, "dim": 5})
    cache = storage.cache_dir(project) / "cluster-margin" / "pixels-v1"
    cache.mkdir(parents=True)
    (cache / "clusters.npy").write_bytes(b"x")
    embeddings_compute(project=project, extractor="pixels", params={"size": 8, "dim": 3, "color": "gray"})
    embeddings_compute(project=project, extractor="pixels", params={"size": 6, "dim": 2})
    project.refresh_from_db()
    assert project.embedding_version == 3 and project.embedding_dim == 2
    assert not cache.exists()
    files = sorted(p.name for p in (storage.project_dir(project) / "embeddings").glob("*.npy"))
    assert files == ["pixels-v2.npy", "pixels-v3.npy"]  # the previous version is kept for a running round
    assert storage.load_embeddings(project).shape == (12, 2)


def test_bad_extractor_requests_are_named(project, monkeypatch, pushes):
    with pytest.raises(ValueError, match="unknown extractor 'clip'"):
        embedding_request(project=project, extractor="clip", params={})
    with pytest.raises(ValueError, match="'dim'=0 is below the minimum"):
        embedding_request(project=project, extractor="pixels", params={"dim": 0})
    with pytest.raises(ValueError, match="needs a model file"):
        embedding_request(project=project, extractor="onnx", params={})
    with pytest.raises(ValueError, match="TorchScript models are no longer accepted"):
        embedding_request(project=project, extractor="torch", params={})
    job = embedding_request(project=project, extractor="onnx", params={"path": "projects/none.onnx"})
    job = embedding_execute(job_id=str(job.pk))
    assert job.status == Job.Status.FAILED and "none.onnx" in job.error, job.error
    project.refresh_from_db()
    assert project.embedding_version == 0


def test_configuring_a_new_extractor_re_embeds_and_the_defaults_change_nothing(project, make_user,
                                                                               django_capture_on_commit_callbacks):
    """The rule lives in the service (services.projects), so a script gets it as the admin form does."""
    from annotate.services.projects import project_configure

    admin = make_user("boss", superuser=True)
    embeddings_compute(project=project, extractor="pixels", params={})
    project.refresh_from_db()
    before = (project.extractor, project.extractor_params)
    explicit_defaults = make_extractor("pixels", {}).params_
    project.extractor_params = dict(explicit_defaults)  # {} and the defaults are the same settings
    assert project_configure(project=project, user=admin, previous=before).reembed_job is None
    assert not Job.objects.filter(kind=Job.Kind.EMBED).exists()
    project.extractor_params = {**explicit_defaults, "size": explicit_defaults["size"] // 2}
    with django_capture_on_commit_callbacks(execute=False):
        res = project_configure(project=project, user=admin, previous=before)
    assert res.reembed_job is not None and res.reembed_error == ""
    assert res.reembed_job.params == {"extractor": "pixels", "params": project.extractor_params}
