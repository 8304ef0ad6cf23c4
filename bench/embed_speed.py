"""Embedding speed of the recommended backbones through Loupe's real code path (extractor ``hf``).

No weights can be downloaded here, so each model is built from the **same configuration as the
published checkpoint** (layers, widths, heads, patch size, input size, image processor) with random
weights, saved with ``save_pretrained`` (safetensors) and then embedded exactly as a worker would:
``make_extractor("hf", {"model": <folder>, ...}).extract(...)`` over JPEG files decoded from disk
(640 x 480 photos of noise), batch 32, two prefetch threads; the time includes loading the
model, as in a job.  Wall time depends on what else the machine runs; CPU seconds per image much
less so.  Speed does not depend on the weights' values, so images/s carries over to the real
checkpoint; the embedding quality does not.

    nice -n 10 .venv/bin/python bench/embed_speed.py [--images 64] [--models dinov2-small,clip-b32]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import transformers as tf
from PIL import Image

from selection.extractors import make_extractor

IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
CLIP_NORM = {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}


def _models():
    """name -> (published id, model factory, processor factory), configs as in each checkpoint's config.json."""
    def vit_like(cfg_cls, model_cls, **cfg):
        return lambda: model_cls(cfg_cls(**cfg))

    bit = lambda: tf.BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},  # noqa: E731
                                       **IMAGENET)
    clip = lambda: tf.CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},  # noqa: E731
                                         **CLIP_NORM)
    vitp = lambda: tf.ViTImageProcessor(size={"height": 224, "width": 224},  # noqa: E731
                                        image_mean=[0.5] * 3, image_std=[0.5] * 3)
    convp = lambda: tf.ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875, **IMAGENET)  # noqa: E731
    clip_vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=224, patch_size=32, projection_dim=512)
    return {
        "dinov2-small": ("facebook/dinov2-small", vit_like(
            tf.Dinov2Config, tf.Dinov2Model, hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
            patch_size=14, image_size=518), bit),
        "dinov2-base": ("facebook/dinov2-base", vit_like(
            tf.Dinov2Config, tf.Dinov2Model, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            patch_size=14, image_size=518), bit),
        "clip-b32": ("openai/clip-vit-base-patch32",
                     lambda: tf.CLIPVisionModelWithProjection(tf.CLIPVisionConfig(**clip_vision)), clip),
        "vit-b16": ("google/vit-base-patch16-224-in21k", vit_like(
            tf.ViTConfig, tf.ViTModel, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            patch_size=16, image_size=224), vitp),
        "convnext-tiny": ("facebook/convnext-tiny-224", vit_like(
            tf.ConvNextConfig, tf.ConvNextModel, hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 9, 3]), convp),
        "resnet-50": ("microsoft/resnet-50", vit_like(
            tf.ResNetConfig, tf.ResNetModel, layer_type="bottleneck", depths=[3, 4, 6, 3],
            hidden_sizes=[256, 512, 1024, 2048], embedding_size=64), convp),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, nargs="+", default=[2])
    ap.add_argument("--models", default=",".join(_models()))
    o = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(o.images):
            p = Path(tmp) / f"{i:04d}.jpg"
            Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(p, quality=90)
            files.append(p)

        def load(i):
            with Image.open(files[i]) as im:
                im.load()
                return im.copy()

        print("| model (config of) | d | parameters | workers | images/s (wall) | CPU s per image |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        table = _models()
        for name in o.models.split(","):
            model_id, make_model, make_proc = table[name]
            folder = Path(tmp) / name
            torch.manual_seed(0)
            model = make_model().eval()
            n_params = sum(p.numel() for p in model.parameters())
            model.save_pretrained(str(folder))
            make_proc().save_pretrained(str(folder))
            del model
            for workers in o.workers:
                ext = make_extractor("hf", {"model": str(folder), "device": "cpu", "batch": o.batch,
                                            "workers": workers})
                ext.extract(load, min(4, o.images))  # warm-up: load, first allocations
                t0, c0 = time.perf_counter(), time.process_time()
                X = ext.extract(load, o.images)
                dt, cpu = time.perf_counter() - t0, time.process_time() - c0
                print(f"| {name} ({model_id}) | {X.shape[1]} | {n_params / 1e6:.1f} M | {workers} | "
                      f"{o.images / dt:.2f} | {cpu / o.images:.2f} |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
