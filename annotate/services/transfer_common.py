"""What the alignment and final-model jobs share: the labeled set, item images, fine-tuning settings."""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from selection.transfer.finetune import FinetuneConfig

from .. import selectors, storage
from ..models import Item, Project

#: Fine-tuning settings a project may set (``Project.finetune_params``); the rest are Loupe's.
FINETUNE_KEYS = ("method", "epochs", "lr", "head_lr", "batch_size", "val_share", "patience", "weight_decay")


def finetune_config(params: dict[str, Any] | None, *, seed: int = 0) -> FinetuneConfig:
    """A validated :class:`FinetuneConfig` from a project's ``finetune_params``; ValueError naming the problem."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(FINETUNE_KEYS))
    if unknown:
        raise ValueError(f"unknown fine-tuning setting(s) {unknown}; allowed: {list(FINETUNE_KEYS)}")
    types = {f.name: f.type for f in fields(FinetuneConfig)}
    clean: dict[str, Any] = {}
    for key, value in params.items():
        cast = {"int": int, "float": float, "str": str}[str(types[key])]
        try:
            clean[key] = cast(value)
        except (TypeError, ValueError):
            raise ValueError(f"fine-tuning setting {key}={value!r} is not a valid {types[key]}") from None
    return FinetuneConfig(**clean, seed=seed)


@dataclass
class LabeledSet:
    item_ids: list[int]
    files: list[str]
    y: np.ndarray  # (n,) int64 class indices
    classes: list[str]

    def image(self, i: int):
        from PIL import Image  # noqa: PLC0415

        with Image.open(storage.media_path(self.files[i])) as im:
            im.load()
            return im.copy()


def labeled_set(project: Project, item_ids: list[int] | None = None) -> LabeledSet:
    """The project's labeled items (final labels within its classes), in id order."""
    classes = list(project.classes)
    index = {c: k for k, c in enumerate(classes)}
    labels = selectors.labeled_item_labels(project=project)
    ids = sorted(i for i, lab in labels.items() if lab in index and (item_ids is None or i in item_ids))
    files = dict(Item.objects.filter(pk__in=ids).values_list("id", "file"))
    return LabeledSet(ids, [files[i] for i in ids], np.array([index[labels[i]] for i in ids], dtype=np.int64),
                      classes)


def hf_model_of(project: Project) -> tuple[str, str]:
    """(model, pooling) of a project on the ``hf`` extractor; ValueError otherwise."""
    if project.extractor != "hf":
        raise ValueError(f"fine-tuning needs a project on the 'hf' extractor (a pretrained backbone); project "
                         f"{project.pk} uses {project.extractor!r}")
    params = project.extractor_params or {}
    model = str(params.get("model") or "").strip()
    if not model:
        raise ValueError(f"project {project.pk} has no 'hf' model configured")
    return model, str(params.get("pooling") or "auto")


def pretrained_of(model: str) -> str:
    """The pretrained backbone a model started from: Loupe's fine-tuned folders record it in ``loupe.json``."""
    meta = Path(model) / "loupe.json"
    if meta.is_file():
        try:
            base = json.loads(meta.read_text()).get("base_model")
        except (OSError, ValueError):
            base = None
        if isinstance(base, str) and base:
            return base
    return model
