"""The demo project command and the admin/token commands."""
import io

import numpy as np
from selection import DEFAULT_PARAMS, DEFAULT_STRATEGY
import pytest
from django.core.management import call_command
from PIL import Image

from annotate import storage
from annotate.models import ApiToken, Item, Project, QueueEntry, Round

pytestmark = pytest.mark.django_db


def run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def snapshot(project):
    files = sorted(storage.images_dir(project).iterdir())
    return (
        list(Item.objects.filter(project=project).order_by("id").values()),
        list(Round.objects.filter(project=project).values("id", "status")),
        QueueEntry.objects.filter(project=project).count(),
        [(f.name, f.stat().st_mtime_ns) for f in files],
        storage.media_path(project.embedding_file).stat().st_mtime_ns,
    )


def test_the_demo_builds_the_digits_project_once(settings):
    from sklearn.datasets import load_digits

    settings.LOUPE_EMBEDDED_WORKER = True  # run the first round inline, as in the embedded default
    run("loupe_demo", "--limit", "60", "--size", "64")
    project = Project.objects.get()
    assert project.classes == ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0"]
    digits = load_digits()
    items = list(Item.objects.filter(project=project).order_by("row"))
    assert [i.row for i in items] == list(range(60))
    assert (project.counts.items, project.counts.embedded) == (60, 60)  # kept totals (services/item_counts.py)
    assert [i.ground_truth for i in items] == [str(t) for t in digits.target[:60]]
    # embeddings: the pixels standardised per pixel, computed independently here
    X = np.load(storage.media_path(project.embedding_file))
    raw = digits.images[:60].reshape(60, -1)
    sd = raw.std(0)
    ref = (raw - raw.mean(0)) / np.where(sd == 0, 1, sd)
    np.testing.assert_allclose(X, ref, atol=1e-5)
    assert X.dtype == np.float32 and project.embedding_dim == 64
    # images: upscaled, dark ink where the digit has ink
    img = np.asarray(Image.open(storage.media_path(items[0].file)))
    assert img.shape == (64, 64)
    block = img[::8, ::8]  # nearest-neighbour: one 8x8 block per source pixel
    np.testing.assert_array_equal(block < 128, digits.images[0] > 8)
    # the first round (cold start) filled the queue
    rnd = Round.objects.get(project=project)
    assert rnd.status == "done" and rnd.entries.count() == project.batch_size
    # a new project starts on the library's default; the round says which strategy 'auto' used
    assert project.strategy == DEFAULT_STRATEGY == "auto" and project.strategy_params == DEFAULT_PARAMS
    assert rnd.metrics["sub_strategy"] == "typiclust" and rnd.strategy_used == "auto → typiclust"
    before = snapshot(project)
    assert "nothing changed" in run("loupe_demo", "--limit", "60", "--size", "64")
    assert snapshot(project) == before


def test_loupe_admin_never_changes_an_existing_password(django_user_model):
    out = run("loupe_admin", "--username", "boss", "--password", "first-pass-123")
    assert "first-pass-123" in out
    out = run("loupe_admin", "--username", "boss", "--password", "other-pass-456")
    assert "unchanged" in out and "other-pass-456" not in out
    user = django_user_model.objects.get(username="boss")
    assert user.is_superuser and user.check_password("first-pass-123")


def test_loupe_token_prints_a_key_stored_only_as_a_hash(make_user):
    from annotate.services.tokens import token_user

    user = make_user("bot")
    key = run("loupe_token", "bot", "--quiet").strip()
    assert token_user(key=key) == user
    tok = ApiToken.objects.get()
    assert key not in (tok.key_hash, tok.prefix) and key.startswith(tok.prefix)
    ApiToken.objects.update(revoked=True)
    assert token_user(key=key) is None
