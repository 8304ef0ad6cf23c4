"""An ``hf`` backbone as a trainable ``torch.nn.Module``, and saving a fine-tuned one as a model folder.

Loading goes through the ``hf`` extractor's own checks (safetensors only, no remote code, never a
download: :mod:`selection.extractors.hf`), and the saved folder passes them again, so a fine-tuned
backbone is used for embedding exactly like any other local ``hf`` model folder.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..extractors.hf import check_model_dir, image_representation, load_model, resolve_model_dir

PREPROCESSOR = "preprocessor_config.json"


def _module_class():
    import torch  # noqa: PLC0415

    class HFBackbone(torch.nn.Module):
        """pixel_values (B, 3, H, W) -> (B, d) float32: the same representation the ``hf`` extractor embeds."""

        def __init__(self, model, pooling: str, source: Path):
            super().__init__()
            self.model = model
            self.pooling = pooling
            self.source = source

        def forward(self, x):
            return image_representation(self.model, x, self.pooling).float()

    return HFBackbone


def load_backbone(model: str, *, pooling: str = "auto"):
    """The ``hf`` model ``model`` (id in the local cache or folder) as a float32 trainable module."""
    folder = resolve_model_dir(model)
    cfg = check_model_dir(folder, model)
    net = load_model(folder, cfg).float()
    return _module_class()(net, pooling, folder)


def image_loader(folder: Path, images: Any):
    """``load(indices) -> (k, 3, H, W) float32`` pixel batches of ``images(i) -> PIL image`` via the folder's
    image processor (resize, crop, normalise as the model expects)."""
    from transformers import AutoImageProcessor  # noqa: PLC0415

    processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)

    def load(indices: np.ndarray) -> np.ndarray:
        batch = processor(images=[images(int(i)).convert("RGB") for i in indices], return_tensors="np")
        return np.asarray(batch["pixel_values"], dtype=np.float32)

    return load


def save_backbone(backbone, dest: Path, *, meta: dict[str, Any] | None = None) -> Path:
    """Write the fine-tuned backbone to ``dest`` (config.json + model.safetensors + the source's image
    processor, and ``loupe.json`` with ``meta``); returns ``dest``.  Written to a temporary folder first
    and renamed, so a half-written folder never looks like a model."""
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    backbone.model.save_pretrained(str(tmp), safe_serialization=True)
    shutil.copyfile(Path(backbone.source) / PREPROCESSOR, tmp / PREPROCESSOR)
    (tmp / "loupe.json").write_text(json.dumps(meta or {}, indent=2, default=str))
    check_model_dir(tmp, str(dest))  # what the extractor will demand of it
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest
