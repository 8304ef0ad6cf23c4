"""``hf``: a Hugging Face image backbone (DINOv2, CLIP, SigLIP, ViT, ConvNeXt, ResNet, ...) by id or folder.

Loaded with ``transformers`` (``AutoModel`` + ``AutoImageProcessor``) under three rules that keep
a model file from running code on the worker and the worker off the network:

- **safetensors only** (``use_safetensors=True``): ``pytorch_model.bin`` is a pickle, and
  unpickling runs code; a folder without ``*.safetensors`` weights is refused with that reason.
- **no remote code** (``trust_remote_code=False``): the architecture must be one built into the
  installed ``transformers`` (its ``model_type`` is in ``CONFIG_MAPPING``).
- **never a download**: an id is looked up in the local Hugging Face cache only
  (``local_files_only=True``); a missing model is an :class:`ExtractorError` that names it and
  says how to bring it (``python manage.py loupe_fetch_model <id>`` or ``python -m selection
  fetch <id>`` on a machine with network, then copy the cache folder, or give a local folder).

The embedding is the model's standard image representation (``pooling="auto"``): the projected
image embedding for CLIP-like models (``get_image_features`` / ``image_embeds``), the CLS token of
the last (layer-normalised) hidden state for ViT-like transformers (DINOv2's ``pooler_output`` is
that same token), and the pooled output for convolutional nets (ConvNeXt, ResNet: global average
pool).  On CUDA the model runs in float16 and the output is cast back to float32.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np

from ..params import Param
from .base import ExtractorError, register
from .pipeline import MODEL_PARAMS, ModelExtractor

log = logging.getLogger(__name__)

POOLING = ("auto", "cls", "pooler", "mean", "image_embeds")
_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def hub_cache_dir() -> str:
    from huggingface_hub import constants  # noqa: PLC0415

    return str(constants.HF_HUB_CACHE)


def missing_model_message(model: str) -> str:
    folder = "models--" + model.replace("/", "--")
    return (
        f"model {model!r} is not on this worker: it is not in the Hugging Face cache ({hub_cache_dir()}) and "
        "Loupe never downloads at run time. Bring it in one of three ways: run "
        f"'python manage.py loupe_fetch_model {model}' (or 'python -m selection fetch {model}') on a machine "
        f"with network and copy the folder {folder} from its cache into this cache folder; run that command "
        "here if this machine has network; or put the model folder (config.json, *.safetensors, "
        "preprocessor_config.json) on the worker and give its absolute path as the model."
    )


def is_local_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or Path(model).expanduser().is_dir()


def resolve_model_dir(model: str) -> Path:
    """The local folder holding ``model`` (an absolute folder, or an id found in the HF cache)."""
    model = (model or "").strip()
    if not model:
        raise ExtractorError("extractor 'hf' needs parameter 'model': a Hugging Face model id "
                             "(e.g. facebook/dinov2-small) or the path of a local model folder")
    if is_local_path(model):
        folder = Path(model).expanduser()
        if not folder.is_dir():
            raise ExtractorError(f"model folder {model!r} does not exist on this worker")
        return folder
    if not _ID.fullmatch(model) or ".." in model:
        raise ExtractorError(f"{model!r} is neither a Hugging Face model id (owner/name) nor a folder path")
    from huggingface_hub import snapshot_download  # noqa: PLC0415
    from huggingface_hub.errors import LocalEntryNotFoundError  # noqa: PLC0415

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except LocalEntryNotFoundError:
        raise ExtractorError(missing_model_message(model)) from None


def check_model_dir(folder: Path, model: str) -> dict:
    """The parsed ``config.json`` of a model folder that passes the safety rules, else ExtractorError."""
    from transformers import CONFIG_MAPPING  # noqa: PLC0415

    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise ExtractorError(f"model {model!r} has no config.json; is it a transformers model folder?")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        raise ExtractorError(f"model {model!r}: config.json is not valid JSON") from None
    if not isinstance(cfg, dict):
        raise ExtractorError(f"model {model!r}: config.json is not a JSON object")
    kind = cfg.get("model_type")
    if kind not in CONFIG_MAPPING:
        raise ExtractorError(f"model {model!r} has model_type {str(kind)[:60]!r}, which is not built into the "
                             "installed transformers; Loupe never runs a model's own code (trust_remote_code)")
    if not any(folder.glob("*.safetensors")):
        found = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt*"))
        why = f" (found {', '.join(found[:3])}: pickled weights, which can run code)" if found else ""
        raise ExtractorError(f"model {model!r} has no safetensors weights{why}; Loupe loads safetensors only. "
                             "Use a revision that ships model.safetensors, or convert the weights.")
    if not (folder / "preprocessor_config.json").is_file():
        raise ExtractorError(f"model {model!r} has no preprocessor_config.json (the image processor: size, "
                             "crop, mean and std); add one for this model")
    return cfg


def load_model(folder: Path, cfg: dict):
    """The model, by the folder's own architecture when it is a built-in ``...WithProjection`` class."""
    import transformers  # noqa: PLC0415

    common = {"use_safetensors": True, "trust_remote_code": False, "local_files_only": True}
    for arch in cfg.get("architectures") or []:
        cls = getattr(transformers, str(arch), None) if str(arch).endswith("WithProjection") else None
        if cls is not None:
            return cls.from_pretrained(str(folder), **common)  # AutoModel would drop the projection
    return transformers.AutoModel.from_pretrained(str(folder), **common)


def image_representation(model, pixel_values, pooling: str = "auto"):
    """(B, d) tensor: the model's standard image embedding for ``pooling`` (see the module docstring)."""
    import torch  # noqa: PLC0415

    if pooling in ("auto", "image_embeds") and hasattr(model, "get_image_features"):
        out = model.get_image_features(pixel_values=pixel_values)
        return out if isinstance(out, torch.Tensor) else out.pooler_output
    out = model(pixel_values=pixel_values)
    embeds = getattr(out, "image_embeds", None)
    if pooling in ("auto", "image_embeds") and embeds is not None:
        return embeds
    if pooling == "image_embeds":
        raise ExtractorError("pooling='image_embeds' needs a CLIP-like model with an image projection")
    hidden = getattr(out, "last_hidden_state", None)
    pooled = getattr(out, "pooler_output", None)
    if pooling == "mean" and hidden is not None:
        return hidden.mean(dim=1) if hidden.ndim == 3 else hidden.flatten(2).mean(dim=2)
    if pooling == "cls" or (pooling == "auto" and hidden is not None and hidden.ndim == 3):
        if hidden is None or hidden.ndim != 3:
            raise ExtractorError("pooling='cls' needs a transformer with a token sequence")
        return hidden[:, 0]
    if pooled is None:
        raise ExtractorError("this model has no pooled output; choose pooling 'cls' or 'mean'")
    return pooled.reshape(pooled.shape[0], -1)


@register
class HuggingFace(ModelExtractor):
    name = "hf"
    description = "A Hugging Face image backbone by id or local folder (safetensors only, no remote code, offline)."
    params = (
        Param("model", "str", "", "Model id in the local Hugging Face cache (e.g. facebook/dinov2-small) or "
              "the absolute path of a model folder; never downloaded at run time."),
        Param("pooling", "str", "auto", "Which output is the embedding (auto: image_embeds for CLIP, CLS token "
              "for ViT/DINOv2, pooled output for conv nets).", choices=POOLING),
        Param("precision", "str", "auto", "auto: float16 on CUDA, float32 on CPU.", choices=("auto", "fp32")),
    ) + MODEL_PARAMS

    def build(self):
        import torch  # noqa: PLC0415
        from transformers import AutoImageProcessor  # noqa: PLC0415

        model_name = self.params_["model"]
        folder = resolve_model_dir(model_name)
        cfg = check_model_dir(folder, model_name)
        device = self.torch_device()
        dtype = torch.float16 if device == "cuda" and self.params_["precision"] == "auto" else torch.float32
        try:
            model = load_model(folder, cfg)
            processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True,
                                                           trust_remote_code=False)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError):
            log.warning("loading %s from %s failed", model_name, folder, exc_info=True)
            raise ExtractorError(f"model {model_name!r} could not be loaded by transformers (see the worker "
                                 "log); check that its files are complete") from None
        model.to(device=device, dtype=dtype).eval()
        pooling = self.params_["pooling"]

        def preprocess(images):
            batch = processor(images=[im.convert("RGB") for im in images], return_tensors="np")
            return np.asarray(batch["pixel_values"], dtype=np.float32)

        def forward(x):
            with torch.inference_mode():
                t = torch.from_numpy(np.ascontiguousarray(x)).to(device=device, dtype=dtype)
                return image_representation(model, t, pooling).float().cpu().numpy()

        where = f"{device} ({'float16' if dtype == torch.float16 else 'float32'})"
        return preprocess, forward, where
