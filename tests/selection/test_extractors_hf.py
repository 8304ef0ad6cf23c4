"""Extractor 'hf' on tiny random models saved on the spot: output = the model called directly, offline only.

Each reference calls the image processor and the model by hand (no Loupe code) and picks the
standard representation: DINOv2 ``pooler_output``, ViT the CLS token of ``last_hidden_state``, CLIP
``get_image_features``, CLIP-vision-with-projection ``image_embeds``, ConvNeXt ``pooler_output``.
"""
from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from selection.extractors import ExtractorError, make_extractor
from tests.modelkit import fake_hub_cache, random_images, tiny_hf_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

KINDS = ("dinov2", "vit", "clip", "clip_vision", "convnext")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection attempt fails the test: nothing is ever downloaded here."""
    def refuse(*a, **k):
        raise AssertionError("a test tried to open a network connection")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {k: tiny_hf_model(root / k, k) for k in KINDS}


def _reference(folder, kind, images):
    proc = transformers.AutoImageProcessor.from_pretrained(str(folder))
    cls = transformers.CLIPVisionModelWithProjection if kind == "clip_vision" else transformers.AutoModel
    model = cls.from_pretrained(str(folder)).eval()
    pv = proc(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        if kind == "clip":
            return model.get_image_features(pixel_values=pv).pooler_output.numpy()
        out = model(pixel_values=pv)
    if kind == "clip_vision":
        return out.image_embeds.numpy()
    if kind == "vit":
        return out.last_hidden_state[:, 0].numpy()
    return out.pooler_output.reshape(len(images), -1).numpy()


@pytest.mark.parametrize("kind", KINDS)
def test_output_is_the_models_own_representation(models, kind):
    imgs = random_images(7, seed=1)
    X = make_extractor("hf", {"model": str(models[kind]), "batch": 3, "device": "cpu", "workers": 2}).extract(
        lambda i: imgs[i], 7)
    ref = _reference(models[kind], kind, imgs)
    assert X.dtype == np.float32 and X.shape == ref.shape
    np.testing.assert_allclose(X, ref, rtol=1e-4, atol=1e-5)


def test_deterministic_across_batch_sizes_and_prefetch_threads(models):
    imgs = random_images(9, seed=2)
    runs = [make_extractor("hf", {"model": str(models["dinov2"]), "batch": b, "workers": w, "device": "cpu"})
            .extract(lambda i: imgs[i], 9) for b, w in ((4, 0), (4, 0), (2, 3), (9, 1))]
    np.testing.assert_array_equal(runs[0], runs[1])
    for other in runs[2:]:
        np.testing.assert_allclose(other, runs[0], rtol=1e-5, atol=1e-6)


def test_l2_option_normalises_rows(models):
    imgs = random_images(5, seed=3)
    base = make_extractor("hf", {"model": str(models["clip"]), "device": "cpu"}).extract(lambda i: imgs[i], 5)
    X = make_extractor("hf", {"model": str(models["clip"]), "device": "cpu", "l2": True}).extract(
        lambda i: imgs[i], 5)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(X, base / np.linalg.norm(base, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_pooling_can_be_chosen(models):
    imgs = random_images(3, seed=4)
    mean = make_extractor("hf", {"model": str(models["vit"]), "pooling": "mean", "device": "cpu"}).extract(
        lambda i: imgs[i], 3)
    model = transformers.AutoModel.from_pretrained(str(models["vit"])).eval()
    pv = transformers.AutoImageProcessor.from_pretrained(str(models["vit"]))(images=imgs, return_tensors="pt")
    with torch.no_grad():
        ref = model(**pv).last_hidden_state.mean(dim=1).numpy()
    np.testing.assert_allclose(mean, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ExtractorError, match="image_embeds"):
        make_extractor("hf", {"model": str(models["vit"]), "pooling": "image_embeds", "device": "cpu"}).extract(
            lambda i: imgs[i], 3)


def test_a_model_id_is_read_from_the_cache_and_a_missing_one_is_named(models, tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    fake_hub_cache(cache, "acme/tiny-dino", models["dinov2"])
    imgs = random_images(2, seed=5)
    X = make_extractor("hf", {"model": "acme/tiny-dino", "device": "cpu"}).extract(lambda i: imgs[i], 2)
    np.testing.assert_allclose(X, _reference(models["dinov2"], "dinov2", imgs), rtol=1e-4, atol=1e-5)
    with pytest.raises(ExtractorError) as err:
        make_extractor("hf", {"model": "acme/not-here", "device": "cpu"}).extract(lambda i: imgs[i], 2)
    msg = str(err.value)
    assert "'acme/not-here' is not on this worker" in msg and str(cache) in msg
    assert "python manage.py loupe_fetch_model acme/not-here" in msg and "models--acme--not-here" in msg
    assert "absolute path" in msg


def test_pickled_weights_and_remote_code_are_refused(models, tmp_path):
    imgs = random_images(1)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for f in models["vit"].iterdir():
        if f.suffix != ".safetensors":
            (pickled / f.name).write_bytes(f.read_bytes())
    (pickled / "pytorch_model.bin").write_bytes(b"not even read")
    with pytest.raises(ExtractorError, match=r"no safetensors weights \(found pytorch_model.bin"):
        make_extractor("hf", {"model": str(pickled)}).extract(lambda i: imgs[i], 1)
    remote = tmp_path / "remote"
    remote.mkdir()
    for f in models["vit"].iterdir():
        (remote / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((remote / "config.json").read_text())
    cfg.update(model_type="evil_vision", auto_map={"AutoModel": "modeling_evil.EvilModel"})
    (remote / "config.json").write_text(json.dumps(cfg))
    (remote / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ExtractorError, match="not built into the installed transformers"):
        make_extractor("hf", {"model": str(remote)}).extract(lambda i: imgs[i], 1)
    with pytest.raises(ExtractorError, match="does not exist"):
        make_extractor("hf", {"model": str(tmp_path / "nope")}).extract(lambda i: imgs[i], 1)
    with pytest.raises(ExtractorError, match="needs parameter 'model'"):
        make_extractor("hf", {}).extract(lambda i: imgs[i], 1)


@pytest.mark.gpu
def test_cuda_float16_is_close_to_cpu(models):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    imgs = random_images(6, seed=6)
    cpu = make_extractor("hf", {"model": str(models["dinov2"]), "device": "cpu"}).extract(lambda i: imgs[i], 6)
    ext = make_extractor("hf", {"model": str(models["dinov2"]), "device": "cuda"})
    gpu = ext.extract(lambda i: imgs[i], 6)
    assert gpu.dtype == np.float32
    np.testing.assert_allclose(gpu, cpu, rtol=2e-2, atol=2e-2)


def test_cuda_asked_for_without_a_gpu_is_a_clear_error(models):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ExtractorError, match="device='cuda' was asked for but this worker has no CUDA device"):
        make_extractor("hf", {"model": str(models["vit"]), "device": "cuda"}).extract(
            lambda i: random_images(1)[0], 1)
