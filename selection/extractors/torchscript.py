"""``torch``: a TorchScript model file.  **It runs code**: a TorchScript program can call any
TorchScript operator, including ones that read files (``torch.from_file``) on the worker.

Kept for operators who trust the file; the app lets only superusers choose it and warns that it
runs code (``runs_code = True``).  TorchScript is also deprecated in recent torch; prefer ``hf``
(safetensors weights, no code) or ``onnx``.  Images are converted to RGB, resized, scaled to
[0, 1] and normalised with the chosen mean/std; the output (the first element of a tuple) is
flattened per image.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from ..params import Param
from .base import NORMALIZE, ExtractorError, pixels, register
from .pipeline import MODEL_PARAMS, ModelExtractor

log = logging.getLogger(__name__)


@register
class TorchScript(ModelExtractor):
    name = "torch"
    description = "A TorchScript model file. RUNS CODE from the file on the worker: superusers only."
    runs_code = True
    file_params = ("path",)
    params = (
        Param("path", "str", "", "Path of the TorchScript file (.pt) the admin uploaded."),
        Param("size", "int", 224, "Input images are resized to size x size.", min=2, max=1024),
        Param("normalize", "str", "imagenet", "Per-channel mean/std normalisation of the [0, 1] input.",
              choices=tuple(NORMALIZE)),
    ) + MODEL_PARAMS

    def build(self):
        import torch  # noqa: PLC0415

        path = self.params_["path"]
        if not path:
            raise ExtractorError("extractor 'torch' needs parameter 'path' (a TorchScript .pt file)")
        device = self.torch_device()
        try:
            model = torch.jit.load(path, map_location=device)
        except (RuntimeError, ValueError, OSError):
            log.warning("torch.jit.load(%r) failed", path, exc_info=True)
            raise ExtractorError(f"{os.path.basename(path)!r} is not a loadable TorchScript model") from None
        model.eval()
        size = self.params_["size"]
        mean, std = (np.asarray(v, dtype=np.float32).reshape(1, 3, 1, 1) for v in NORMALIZE[self.params_["normalize"]])

        def preprocess(images):
            x = np.stack([pixels(im, size, "RGB").reshape(size, size, 3) for im in images]).transpose(0, 3, 1, 2)
            return (x - mean) / std

        def forward(x):
            with torch.inference_mode():
                y = model(torch.from_numpy(np.ascontiguousarray(x)).to(device))
            if isinstance(y, (tuple, list)):
                y = y[0]
            if not isinstance(y, torch.Tensor):
                raise ExtractorError("the TorchScript model must return a tensor with one row per image; "
                                     f"got {type(y).__name__}")
            return y.reshape(y.shape[0], -1).float().cpu().numpy()

        return preprocess, forward, device
