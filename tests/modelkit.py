"""Tiny models built on the spot for the extractor tests (nothing is ever downloaded).

- ``file_reading_torchscript``: the attack from issue 11, a TorchScript model whose forward reads a
  file on the worker with ``torch.from_file`` and raises an error carrying its bytes.
- ``tiny_hf_model``: a randomly initialised DINOv2 / ViT / CLIP / CLIP-vision model with a few
  small layers and an image processor, saved with ``save_pretrained`` (safetensors).
- ``tiny_onnx_model``: a small conv net exported to ONNX, and its torch module for reference.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np


def file_reading_torchscript(dest: Path, secret: Path) -> Path:
    import torch  # noqa: PLC0415  (heavy: only when a model is built)

    n = secret.stat().st_size

    class ReadsAFile(torch.nn.Module):
        def __init__(self, path: str, n: int):
            super().__init__()
            self.path = path
            self.n = n

        def forward(self, x):
            data = torch.from_file(self.path, size=self.n, dtype=torch.uint8)
            vals: list[int] = data.to(torch.int64).tolist()
            s = ""
            for v in vals:
                s += chr(v)
            raise RuntimeError("leak:" + s)
            return x

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(ReadsAFile(str(secret), n)).save(str(dest))
    return dest


def tiny_hf_model(folder: Path, kind: str = "dinov2", *, image_size: int = 32, seed: int = 0) -> Path:
    """Save a tiny random ``kind`` model (dinov2, vit, clip, clip_vision, convnext) and its processor to ``folder``."""
    import torch  # noqa: PLC0415  (heavy: only when a model is built)
    import transformers as tf  # noqa: PLC0415

    torch.manual_seed(seed)
    small = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                 image_size=image_size, patch_size=8)
    if kind == "dinov2":
        model = tf.Dinov2Model(tf.Dinov2Config(**small))
    elif kind == "vit":
        model = tf.ViTModel(tf.ViTConfig(**small))
    elif kind == "clip":
        text = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=64,
                    bos_token_id=0, eos_token_id=1, pad_token_id=1)
        model = tf.CLIPModel(tf.CLIPConfig(text_config=text, vision_config=small, projection_dim=12))
    elif kind == "clip_vision":
        model = tf.CLIPVisionModelWithProjection(tf.CLIPVisionConfig(**small, projection_dim=10))
    elif kind == "convnext":
        model = tf.ConvNextModel(tf.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                                                 image_size=image_size))
    else:
        raise ValueError(kind)
    model.eval()
    model.save_pretrained(str(folder))  # safetensors by default
    processor = tf.ViTImageProcessor(size={"height": image_size, "width": image_size},
                                    image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3])
    processor.save_pretrained(str(folder))
    return folder


def fake_hub_cache(cache, model_id, folder):
    """Lay ``folder`` out as the Hugging Face cache does: models--o--n/{refs/main, snapshots/<rev>/...}."""
    repo = cache / ("models--" + model_id.replace("/", "--"))
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for f in folder.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)


def tiny_onnx_model(dest: Path, *, size: int = 8, dynamic_batch: bool = True, seed: int = 0):
    """Export a small conv net (B, 3, size, size) -> (B, 6) to ``dest``; returns the torch module."""
    import torch  # noqa: PLC0415  (heavy: only when a model is built)

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 6)).eval()
    axes = {"images": {0: "batch"}, "features": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2 if dynamic_batch else 1, 3, size, size),), str(dest), dynamo=False,
                          input_names=["images"], output_names=["features"], dynamic_axes=axes)
    return net


def random_images(n: int, size: tuple[int, int] = (40, 30), seed: int = 0):
    from PIL import Image  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8), "RGB")
            for _ in range(n)]
