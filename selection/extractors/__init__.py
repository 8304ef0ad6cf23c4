"""Feature extractors: images in, one float32 embedding matrix out.

A pure library (no Django).  Every extractor has the same call shape::

    make_extractor("pixels", {"size": 32, "dim": 64}).extract(load, n, progress=cb) -> (n, d) float32

``load(i)`` returns the ``i``-th image as a ``PIL.Image.Image``; ``progress(fraction, message)`` is
called as batches finish.  Parameters are declared with :class:`selection.params.Param`, like
strategies, so the admin form and validation come from the same schema.

- ``precomputed``, ``pixels`` (:mod:`.simple`): an uploaded matrix; raw pixels + PCA.
- ``hf`` (:mod:`.hf`): a Hugging Face image backbone (safetensors only, no remote code, offline).
- ``onnx`` (:mod:`.onnx_model`): an uploaded ONNX model run by onnxruntime (no custom operators,
  no external data files).
- ``torch`` (:mod:`.torchscript`): retired (TorchScript files are programs); kept so old settings load,
  it never runs and says to export to ONNX.

Batched extractors share :mod:`.pipeline` (prefetch on CPU threads, chunked checkpoints, L2, PCA).
"""
from __future__ import annotations

from . import hf, onnx_model, simple, torchscript  # noqa: F401  (registers the extractors)
from .base import (
    Extractor,
    ExtractorError,
    check_matrix,
    extractor_names,
    extractor_schema,
    get_extractor,
    make_extractor,
)
from .pipeline import Checkpoint
from .simple import effective_dim

__all__ = [
    "Checkpoint", "Extractor", "ExtractorError", "check_matrix", "effective_dim", "extractor_names",
    "extractor_schema", "get_extractor", "make_extractor",
]
