"""The batched pipeline: resume after a kill from chunked checkpoints, PCA against scikit-learn, the CLI."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from selection.extractors import Checkpoint, ExtractorError, make_extractor
from selection.extractors.pca import PCA
from tests.modelkit import random_images, tiny_onnx_model

pytest.importorskip("onnxruntime")


class Killed(BaseException):
    """Stands in for the worker being killed mid-run (not an Exception: nothing may swallow it)."""


@pytest.fixture
def onnx_model(tmp_path):
    tiny_onnx_model(tmp_path / "m.onnx", size=8)
    return {"path": str(tmp_path / "m.onnx"), "size": 8, "batch": 4, "checkpoint_rows": 8, "workers": 2}


def test_a_killed_run_resumes_after_the_last_finished_chunk(tmp_path, onnx_model):
    imgs = random_images(30, seed=1)
    full = make_extractor("onnx", onnx_model).extract(lambda i: imgs[i], 30)
    ck = Checkpoint(tmp_path / "ck", fingerprint="run-1")

    def dies_at_21(i):
        if i == 21:
            raise Killed
        return imgs[i]

    with pytest.raises(Killed):
        make_extractor("onnx", onnx_model).extract(dies_at_21, 30, checkpoint=ck)
    assert ck.chunks() == [(0, 8), (8, 16)]  # rows 16..20 were not in a finished chunk
    loaded = []
    msgs = []
    X = make_extractor("onnx", onnx_model).extract(lambda i: loaded.append(i) or imgs[i], 30, checkpoint=ck,
                                                   progress=lambda f, m: msgs.append(m))
    assert sorted(loaded) == list(range(16, 30))  # only the unfinished rows were decoded and embedded
    assert any("resumed at row 16" in m for m in msgs)
    np.testing.assert_allclose(X, full, rtol=1e-6, atol=1e-6)


def test_a_checkpoint_of_other_settings_is_not_reused(tmp_path, onnx_model):
    imgs = random_images(12, seed=2)
    ck = Checkpoint(tmp_path / "ck", fingerprint="a")
    make_extractor("onnx", onnx_model).extract(lambda i: imgs[i], 12, checkpoint=ck)
    loaded = []
    make_extractor("onnx", onnx_model).extract(lambda i: loaded.append(i) or imgs[i], 12,
                                               checkpoint=Checkpoint(tmp_path / "ck", fingerprint="b"))
    assert sorted(loaded) == list(range(12))


def test_pca_matches_scikit_learn():
    sk = pytest.importorskip("sklearn.decomposition")
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)) + 3.0).astype(np.float32)
    ours = PCA(5).fit(X, block=64)
    ref = sk.PCA(5, svd_solver="full").fit(X.astype(np.float64))
    np.testing.assert_allclose(ours.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=1e-6)
    Z, R = ours.transform(X), ref.transform(X.astype(np.float64))
    signs = np.sign((Z * R).sum(axis=0))
    np.testing.assert_allclose(Z, R * signs, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="between 1 and d=12"):
        PCA(13).fit(X)


def test_pca_and_l2_options_on_a_model(onnx_model):
    imgs = random_images(20, seed=3)
    base = make_extractor("onnx", onnx_model).extract(lambda i: imgs[i], 20)
    ext = make_extractor("onnx", {**onnx_model, "l2": True, "pca_dim": 3})
    X = ext.extract(lambda i: imgs[i], 20)
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    assert X.shape == (20, 3) and X.dtype == np.float32
    np.testing.assert_allclose(X, PCA(3).fit(unit).transform(unit), rtol=1e-5, atol=1e-6)
    assert ext.pca_ is not None and ext.pca_.components_.shape == (3, 6)
    with pytest.raises(ExtractorError, match="pca_dim=7 is more than the model's 6 dimensions"):
        make_extractor("onnx", {**onnx_model, "pca_dim": 7}).extract(lambda i: imgs[i], 20)


def test_cli_embeds_a_folder_and_writes_the_file_list(tmp_path, onnx_model):
    folder = tmp_path / "photos"
    (folder / "b").mkdir(parents=True)
    imgs = random_images(5, seed=4)
    names = ["b/z.png", "a.png", "b/a.jpg", "c.png", "b/m.png"]
    for name, im in zip(names, imgs, strict=True):
        im.save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out" / "X.npy"
    r = subprocess.run([sys.executable, "-m", "selection", "embed", "--extractor", f"onnx:{onnx_model['path']}",
                        "--param", "size=8", "--param", "batch=2", "--images", str(folder), "--out", str(out),
                        "--checkpoint", str(tmp_path / "ck")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    files = (tmp_path / "out" / "X.files.txt").read_text().splitlines()
    assert files == sorted(names)
    X = np.load(out)
    assert X.shape == (5, 6) and X.dtype == np.float32
    from PIL import Image

    loaded = [Image.open(folder / f) for f in files]
    ref = make_extractor("onnx", {"path": onnx_model["path"], "size": 8}).extract(lambda i: loaded[i], 5)
    np.testing.assert_allclose(X, ref, rtol=1e-5, atol=1e-6)
    assert not (tmp_path / "ck").exists()  # removed once the matrix is written
    r = subprocess.run([sys.executable, "-m", "selection", "embed", "--extractor", "hf:acme/not-cached",
                        "--images", str(folder), "--out", str(out)], capture_output=True, text=True, timeout=120,
                       env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": ""})
    assert r.returncode == 2 and "'acme/not-cached' is not on this worker" in r.stderr
    assert "loupe_fetch_model acme/not-cached" in r.stderr


def test_cli_pixels_matches_the_library(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    imgs = random_images(6, seed=5)
    for i, im in enumerate(imgs):
        im.save(folder / f"{i}.png")
    out = tmp_path / "X.npy"
    r = subprocess.run([sys.executable, "-m", "selection", "embed", "--extractor", "pixels", "--param", "size=8",
                        "--param", "dim=4", "--images", str(folder), "--out", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    from PIL import Image

    loaded = [Image.open(folder / f"{i}.png") for i in range(6)]
    ref = make_extractor("pixels", {"size": 8, "dim": 4}).extract(lambda i: loaded[i], 6)
    np.testing.assert_allclose(np.load(out), ref, rtol=1e-5, atol=1e-5)


def test_cli_killed_with_sigkill_resumes_from_its_checkpoint(tmp_path):
    """A real kill: SIGKILL the embedding process once chunks exist, run it again, get the same matrix."""
    import os
    import signal
    import time

    from PIL import Image

    tiny_onnx_model(tmp_path / "m.onnx", size=32)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, im in enumerate(random_images(300, size=(32, 32), seed=6)):
        im.save(folder / f"{i:03d}.png")
    out, ck = tmp_path / "X.npy", tmp_path / "ck"
    cmd = [sys.executable, "-m", "selection", "embed", "--extractor", f"onnx:{tmp_path / 'm.onnx'}",
           "--param", "size=32", "--param", "batch=2", "--param", "checkpoint_rows=2", "--param", "workers=0",
           "--images", str(folder), "--out", str(out), "--checkpoint", str(ck)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(ck.glob("rows-*.npy"))) < 5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if out.exists():
        pytest.skip("the run finished before it could be killed")
    saved = Checkpoint(ck, fingerprint="")
    done = saved.chunks()
    assert done and done[0][0] == 0
    assert all(saved.load(a, b).shape == (b - a, 6) for a, b in done)  # a kill leaves whole chunks (or a temp)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    resumed = int(r.stderr.split("resumed at row ")[1].split(")")[0])
    assert resumed >= done[-1][1] and resumed % 2 == 0
    loaded = [Image.open(folder / f"{i:03d}.png") for i in range(300)]
    ref = make_extractor("onnx", {"path": str(tmp_path / "m.onnx"), "size": 32}).extract(lambda i: loaded[i], 300)
    np.testing.assert_allclose(np.load(out), ref, rtol=1e-5, atol=1e-6)


def test_prefetch_prepares_the_next_batch_while_the_model_runs():
    """forward(batch k) waits until preprocess(batch k+1) has begun: without prefetch it would wait forever."""
    import threading

    from selection.extractors.pipeline import run_batched

    started = [threading.Event() for _ in range(4)]

    def preprocess(images):
        started[images[0] // 2].set()
        return np.asarray(images, dtype=np.float32).reshape(-1, 1)

    overlapped = []

    def forward(x):
        k = int(x[0, 0]) // 2
        if k + 1 < len(started):
            overlapped.append(started[k + 1].wait(timeout=30))
        return np.hstack([x, 2 * x])

    X = run_batched(lambda i: i, 8, preprocess=preprocess, forward=forward, batch=2, workers=1,
                    progress=lambda f, m: None)
    assert overlapped == [True, True, True]
    np.testing.assert_array_equal(X, np.stack([np.arange(8), 2 * np.arange(8)], axis=1))
