"""Fine-tuning (LP-FT / FT) on a tiny MLP and a tiny random DINOv2 saved with save_pretrained."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from selection.transfer.finetune import FinetuneConfig, embed, finetune, split_held_out  # noqa: E402


def _blobs(n=120, d=6, c=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    X = (rng.normal(size=(n, d)) + 2.0 * rng.normal(size=(c, d))[y]).astype(np.float32)
    return X, y


def _mlp(d, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))


def test_held_out_split_is_stratified_and_keeps_a_label_of_each_class_for_training():
    y = np.array([0] * 10 + [1] * 5 + [2] * 2)
    tr, val = split_held_out(y, 0.2, 1, np.random.default_rng(0))
    assert sorted(np.concatenate([tr, val])) == list(range(len(y)))
    assert set(y[tr]) == {0, 1, 2} and set(y[val]) == {0, 1, 2}
    assert (y[val] == 0).sum() == 2
    tr, val = split_held_out(np.array([0, 0, 1]), 0.5, 1, np.random.default_rng(0))
    assert len(val) == 0  # class 1 has one label: nothing can be held out


def test_lpft_probe_is_a_logistic_regression_and_fine_tuning_only_keeps_improvements():
    X, y = _blobs()
    net = _mlp(X.shape[1])
    load = lambda idx: X[idx]  # noqa: E731
    res = finetune(net, load, y, 3, config=FinetuneConfig(method="lpft", epochs=5, lr=1e-2, min_val=5))
    assert res.n_val > 0 and res.n_train + res.n_val == len(y)
    assert res.lp_val_accuracy is not None
    assert res.val_accuracy >= res.lp_val_accuracy  # the best state is kept, the probe's included
    # the held-out accuracy reported is that of the returned backbone + head
    F = embed(net, load, len(y), device="cpu")
    pred = (F @ res.head_weight.T + res.head_bias).argmax(1)
    assert res.val_accuracy > 0.8
    assert (pred == y).mean() > 0.8


def test_ft_learns_from_a_zero_head_and_stops_early_without_gains():
    X, y = _blobs(seed=1)
    net = _mlp(X.shape[1], seed=1)
    res = finetune(net, lambda idx: X[idx], y, 3,
                   config=FinetuneConfig(method="ft", epochs=40, lr=1e-2, head_lr=5e-2, patience=2, min_val=5))
    assert res.val_accuracy > 0.8
    assert len(res.history) < 40 and len(res.history) - res.best_epoch == 2  # stopped 2 epochs after the best


def test_bad_configuration_is_a_value_error_naming_the_field():
    with pytest.raises(ValueError, match="method"):
        FinetuneConfig(method="sgd")
    with pytest.raises(ValueError, match="val_share"):
        FinetuneConfig(val_share=1.5)
    with pytest.raises(ValueError, match="two classes"):
        finetune(_mlp(2), lambda i: np.zeros((len(i), 2), np.float32), np.zeros(4, int), 2)


def test_hf_backbone_fine_tunes_saves_and_embeds_through_the_hf_extractor(tmp_path):
    pytest.importorskip("transformers")
    from selection.extractors import make_extractor
    from selection.transfer.hf_backbone import image_loader, load_backbone, save_backbone
    from tests.modelkit import random_images, tiny_hf_model

    src = tiny_hf_model(tmp_path / "src", "dinov2")
    imgs = random_images(16, seed=3)
    y = np.arange(16) % 2
    bb = load_backbone(str(src))
    load = image_loader(src, lambda i: imgs[i])
    before = embed(bb, load, 16, device="cpu")
    res = finetune(bb, load, y, 2, config=FinetuneConfig(method="ft", epochs=2, lr=1e-3, val_share=0.0))
    after = embed(bb, load, 16, device="cpu")
    assert res.best_epoch == 2 and not np.allclose(before, after)  # the backbone itself changed
    out = save_backbone(bb, tmp_path / "ft", meta={"method": "ft"})
    assert (out / "model.safetensors").is_file() and not (tmp_path / "ft.tmp").exists()
    X = make_extractor("hf", {"model": str(out), "device": "cpu", "batch": 8}).extract(lambda i: imgs[i], 16)
    np.testing.assert_allclose(X, after, rtol=1e-4, atol=1e-5)  # the extractor sees the fine-tuned model
