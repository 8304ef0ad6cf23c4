"""``onnx``: an uploaded ONNX image model run by onnxruntime.

An ONNX file is data (a graph of standard operators and weights), not a program, with two ways
out of that which are refused here before a session is made:

- **external data**: a tensor may name another file (``data_location = EXTERNAL`` with a relative
  ``location``), which onnxruntime would read from the worker's disk.  Every tensor (initialisers,
  sparse initialisers, constant attributes, subgraphs, functions) must be stored inside the file.
- **custom operators**: only the standard domains (``ai.onnx``, ``ai.onnx.ml``) and onnxruntime's
  built-in ``com.microsoft`` kernels are accepted; no custom-op library is ever registered.

What Loupe feeds: one float32 (or float16) tensor, NCHW (batch, 3, size, size) or NHWC
(batch, size, size, 3), RGB scaled to [0, 1] then normalised with the chosen mean/std.  The model
must have exactly one such input; its first output (or the one named by ``output``) must give one
row per image.  Everything is checked against the model's declared shapes up front, with errors
that say what the model declares and what Loupe feeds.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from ..params import Param
from .base import NORMALIZE, ExtractorError, pixels, register
from .pipeline import MODEL_PARAMS, ModelExtractor

log = logging.getLogger(__name__)

ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def _tensors_and_nodes(graph):
    """Every TensorProto and NodeProto in a graph, subgraphs included."""
    tensors = list(graph.initializer)
    tensors += [s.values for s in graph.sparse_initializer] + [s.indices for s in graph.sparse_initializer]
    nodes = list(graph.node)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
            tensors.extend(attr.tensors)
            if attr.HasField("sparse_tensor"):
                tensors += [attr.sparse_tensor.values, attr.sparse_tensor.indices]
            subgraphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
            for g in subgraphs:
                t, n = _tensors_and_nodes(g)
                tensors += t
                nodes += n
    return tensors, nodes


def check_onnx_safe(model_proto, label: str) -> None:
    """ExtractorError if the model refers to external data files or to non-standard operator domains."""
    from onnx import TensorProto  # noqa: PLC0415

    tensors, nodes = _tensors_and_nodes(model_proto.graph)
    for fn in model_proto.functions:
        nodes += list(fn.node)
        for node in fn.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    tensors.append(attr.t)
    if any(t.data_location == TensorProto.EXTERNAL or len(t.external_data) for t in tensors):
        raise ExtractorError(f"{label} keeps weights in external data files; Loupe accepts only a single "
                             "self-contained .onnx file (save it with all tensors inside)")
    local = {fn.domain for fn in model_proto.functions}
    bad = sorted({n.domain for n in nodes if n.domain not in ALLOWED_DOMAINS and n.domain not in local})
    if bad:
        raise ExtractorError(f"{label} uses operators from custom domain(s) {bad[:3]}; only standard ONNX "
                             "operators (and onnxruntime's built-in ones) are allowed")


def _layout(shape, size: int, label: str) -> str:
    """'nchw' or 'nhwc' from a declared input shape; ExtractorError when it cannot take (B, 3, size, size)."""
    if len(shape) != 4:
        raise ExtractorError(f"{label} takes a rank-{len(shape)} input {list(shape)}; Loupe feeds images as "
                             "(batch, 3, size, size) or (batch, size, size, 3)")
    dims = [d if isinstance(d, int) else None for d in shape]
    if dims[1] == 3 or (dims[1] is None and dims[3] != 3):
        layout, hw = "nchw", dims[2:4]
    elif dims[3] == 3:
        layout, hw = "nhwc", dims[1:3]
    else:
        raise ExtractorError(f"{label} takes input {list(shape)}: no axis of 3 colour channels")
    if any(d is not None and d != size for d in hw):
        raise ExtractorError(f"{label} expects {hw[0]} x {hw[1]} images but size={size}; set size to the "
                             "model's input size")
    return layout


@register
class OnnxModel(ModelExtractor):
    name = "onnx"
    description = "An uploaded ONNX image model run by onnxruntime (standard operators, no external files)."
    file_params = ("path",)
    params = (
        Param("path", "str", "", "Path of the .onnx file the admin uploaded."),
        Param("size", "int", 224, "Input images are resized to size x size (the model's input size).",
              min=2, max=2048),
        Param("normalize", "str", "imagenet", "Per-channel mean/std normalisation of the [0, 1] RGB input.",
              choices=tuple(NORMALIZE)),
        Param("output", "str", "", "Name of the output holding the embedding (empty: the first output)."),
    ) + MODEL_PARAMS

    def build(self):
        import onnx  # noqa: PLC0415
        import onnxruntime as ort  # noqa: PLC0415

        path = self.params_["path"]
        if not path:
            raise ExtractorError("extractor 'onnx' needs parameter 'path' (an .onnx file)")
        label = f"ONNX model {os.path.basename(path)!r}"
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            proto = onnx.load_model_from_string(data)
        except OSError:
            raise ExtractorError(f"{label} cannot be read on this worker") from None
        except Exception:  # protobuf DecodeError and friends: not an ONNX file
            log.warning("parsing %s failed", path, exc_info=True)
            raise ExtractorError(f"{label} is not a valid ONNX file") from None
        check_onnx_safe(proto, label)
        del proto
        providers = ["CPUExecutionProvider"]
        if self.params_["device"] != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        elif self.params_["device"] == "cuda":
            raise ExtractorError("device='cuda' was asked for but onnxruntime has no CUDA provider here "
                                 "(install onnxruntime-gpu on a GPU worker)")
        try:
            sess = ort.InferenceSession(data, providers=providers)
        except Exception:  # onnxruntime raises its own Fail/InvalidGraph types
            log.warning("onnxruntime could not load %s", path, exc_info=True)
            raise ExtractorError(f"{label} is not a model onnxruntime can run (invalid graph or unsupported "
                                 "operators; details in the worker log)") from None
        inputs, outputs = sess.get_inputs(), sess.get_outputs()
        if len(inputs) != 1:
            raise ExtractorError(f"{label} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)[:200]}); "
                                 "Loupe feeds exactly one image tensor")
        inp = inputs[0]
        if inp.type not in _FLOAT_TYPES:
            raise ExtractorError(f"{label} takes {inp.type}; Loupe feeds float images (tensor(float) or "
                                 "tensor(float16))")
        size = self.params_["size"]
        layout = _layout(inp.shape, size, label)
        in_dtype = _FLOAT_TYPES[inp.type]
        names = [o.name for o in outputs]
        wanted = self.params_["output"] or names[0]
        if wanted not in names:
            raise ExtractorError(f"{label} has no output {wanted!r}; its outputs are {names[:10]}")
        out = outputs[names.index(wanted)]
        if out.type not in _FLOAT_TYPES and out.type not in ("tensor(double)",):
            raise ExtractorError(f"{label}: output {wanted!r} is {out.type}; an embedding must be float")
        if len(out.shape) < 2:
            raise ExtractorError(f"{label}: output {wanted!r} has shape {list(out.shape)}; Loupe needs one row "
                                 "per image, (batch, d) or (batch, ...)")
        fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
        mean, std = (np.asarray(v, dtype=np.float32).reshape(1, 3, 1, 1) for v in NORMALIZE[self.params_["normalize"]])

        def preprocess(images):
            x = np.stack([pixels(im, size, "RGB").reshape(size, size, 3) for im in images]).transpose(0, 3, 1, 2)
            x = (x - mean) / std
            return x.transpose(0, 2, 3, 1) if layout == "nhwc" else x

        def run(x):
            return sess.run([wanted], {inp.name: np.ascontiguousarray(x, dtype=in_dtype)})[0]

        def forward(x):
            if fixed_batch is None:
                y = run(x)
            else:  # a model exported with a fixed batch: feed it slices of that size, padding the last
                parts = []
                for a in range(0, len(x), fixed_batch):
                    piece = x[a:a + fixed_batch]
                    k = len(piece)
                    if k < fixed_batch:
                        piece = np.concatenate([piece, np.repeat(piece[-1:], fixed_batch - k, axis=0)])
                    parts.append(run(piece)[:k])
                y = np.concatenate(parts)
            if y.shape[0] != len(x):
                raise ExtractorError(f"{label}: output {wanted!r} has {y.shape[0]} rows for {len(x)} images; "
                                     "the first axis must be the batch")
            return y.reshape(len(x), -1).astype(np.float32)

        return preprocess, forward, "+".join(p.replace("ExecutionProvider", "") for p in sess.get_providers())
