"""``torch``: TorchScript, retired.  Loupe no longer loads TorchScript files.

A TorchScript archive is a program: loading it deserialises code, and ``forward`` may call any
TorchScript operator, including ones that read files on the worker (``torch.from_file``; the attack
in issue 11).  No uploaded file may run code on a server, so this extractor never imports torch nor
opens its file.  It stays registered so that a project a superuser configured with it earlier keeps
its settings, its file and its embeddings (rounds, labeling and exports go on as before).  Computing
embeddings with it again is refused (``Extractor.extract`` checks ``retired``) with
:data:`RETIRED_MESSAGE`, which says what to do instead: export the model to ONNX and choose ``onnx``
(checked to be self-contained, standard operators only).
"""
from __future__ import annotations

from ..params import Param
from .base import NORMALIZE, Extractor, register
from .pipeline import MODEL_PARAMS

RETIRED_MESSAGE = (
    "TorchScript models are no longer accepted: a TorchScript file is a program and could run code on the "
    "server. Export the model to ONNX (torch.onnx.export(model, torch.zeros(1, 3, size, size), 'model.onnx')) "
    "and choose the 'onnx' extractor; the embeddings already computed stay in use until then"
)


@register
class TorchScript(Extractor):
    name = "torch"
    description = "TorchScript (retired: export the model to ONNX and choose 'onnx')."
    retired = RETIRED_MESSAGE
    file_params = ("path",)
    # The old parameters, so a project's stored settings still validate (and show) as they were saved.
    params = (
        Param("path", "str", "", "Path of the TorchScript file (.pt) uploaded earlier; no longer run."),
        Param("size", "int", 224, "Input images are resized to size x size.", min=2, max=1024),
        Param("normalize", "str", "imagenet", "Per-channel mean/std normalisation of the [0, 1] input.",
              choices=tuple(NORMALIZE)),
    ) + MODEL_PARAMS
