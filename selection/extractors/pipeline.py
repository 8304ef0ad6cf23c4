"""Batched model inference over many images: prefetch, chunked checkpoints, L2 and PCA.

:class:`ModelExtractor` is the base of every extractor that runs a network (``hf``, ``onnx``).
A subclass says how to build two functions, ``preprocess(images) -> (B, ...) float32`` (CPU, NumPy)
and ``forward(batch) -> (B, d)`` (the model), and this module does the rest:

- **Prefetch** (what a PyTorch DataLoader with workers does): ``workers`` CPU threads decode and
  preprocess the next batches while the model runs the current one.  PIL's decoders and resizers
  and NumPy release the GIL, so threads overlap real work; results are consumed in order, so the
  output does not depend on thread timing.
- **Chunked checkpoints**: every ``checkpoint_rows`` rows the finished rows are written to a chunk
  file (temporary name, then an atomic rename).  A job killed midway and started again with the same
  :class:`Checkpoint` (same fingerprint: same extractor, parameters and images) loads the chunks it
  has and carries on after the last one.
- **Post-processing**: optional L2 normalisation of each row, then optional PCA to ``pca_dim``
  (:class:`selection.extractors.pca.PCA`); the fitted PCA is kept on the extractor as ``pca_`` so
  the caller can store it with the embedding version.
"""
from __future__ import annotations

import json
import shutil
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..params import Param
from .base import Extractor, ExtractorError, Loader, Progress, check_matrix
from .pca import PCA

Preprocess = Callable[[list[Any]], np.ndarray]
Forward = Callable[[np.ndarray], np.ndarray]

DEVICE_CHOICES = ("auto", "cpu", "cuda")

MODEL_PARAMS: tuple[Param, ...] = (
    Param("batch", "int", 32, "Images per forward pass.", min=1, max=4096),
    Param("workers", "int", 2, "CPU threads that decode and preprocess the next batches while the model runs.",
          min=0, max=64),
    Param("device", "str", "auto", "Where the model runs (auto: CUDA when the worker has it).",
          choices=DEVICE_CHOICES),
    Param("l2", "bool", False, "L2-normalise every embedding (common for CLIP-style models)."),
    Param("pca_dim", "int", 0, "Reduce to this many principal components (0 = keep every dimension). "
          "FIRAL's cost grows with d squared, its ROUND with d cubed.", min=0, max=8192),
    Param("checkpoint_rows", "int", 2048, "Rows per checkpoint chunk: a killed job resumes after the last "
          "finished chunk.", min=1, max=10_000_000),
)


class Checkpoint:
    """Finished row chunks of one embedding run, kept in ``folder`` under a fingerprint.

    ``fingerprint`` must change whenever the rows would (extractor, parameters, image list); a
    folder holding another fingerprint is emptied.  Chunks are ``rows-<a>-<b>.npy`` (float32),
    written to a temporary name first and renamed, so a kill never leaves half a chunk.
    """

    def __init__(self, folder: str | Path, fingerprint: str) -> None:
        self.folder = Path(folder)
        self.fingerprint = str(fingerprint)

    def _meta(self) -> Path:
        return self.folder / "checkpoint.json"

    def open(self, n: int) -> None:
        meta = None
        if self._meta().is_file():
            try:
                meta = json.loads(self._meta().read_text())
            except (OSError, ValueError):
                meta = None
        if not meta or meta.get("fingerprint") != self.fingerprint or meta.get("n") != n:
            self.clear()
            self.folder.mkdir(parents=True, exist_ok=True)
            self._meta().write_text(json.dumps({"fingerprint": self.fingerprint, "n": n}))

    def chunks(self) -> list[tuple[int, int]]:
        """Finished (a, b) row ranges, sorted."""
        out = []
        for f in self.folder.glob("rows-*-*.npy"):
            try:
                a, b = (int(v) for v in f.stem.split("-")[1:3])
            except ValueError:
                continue
            out.append((a, b))
        return sorted(out)

    def load(self, a: int, b: int) -> np.ndarray:
        return np.load(self.folder / f"rows-{a}-{b}.npy", allow_pickle=False)

    def save(self, a: int, b: int, rows: np.ndarray) -> None:
        tmp = self.folder / f"partial-{a}-{b}.npy"
        np.save(tmp, np.ascontiguousarray(rows, dtype=np.float32))
        tmp.replace(self.folder / f"rows-{a}-{b}.npy")

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _resume(checkpoint: Checkpoint | None, n: int) -> tuple[int, list[np.ndarray]]:
    """Rows [0, start) already done and their chunks, read from a checkpoint (contiguous prefix only)."""
    if checkpoint is None:
        return 0, []
    checkpoint.open(n)
    start, parts = 0, []  # type: tuple[int, list[np.ndarray]]
    for a, b in checkpoint.chunks():
        if a != start or b > n:
            break
        try:
            rows = checkpoint.load(a, b)
        except (OSError, ValueError):
            break
        if rows.ndim != 2 or rows.shape[0] != b - a or (parts and rows.shape[1] != parts[0].shape[1]):
            break
        parts.append(rows)
        start = b
    return start, parts


def run_batched(load: Loader, n: int, *, preprocess: Preprocess, forward: Forward, batch: int, workers: int,
                progress: Progress, checkpoint: Checkpoint | None = None, checkpoint_rows: int = 2048,
                where: str = "cpu") -> np.ndarray:
    """(n, d) float32: ``forward(preprocess([load(i) for i in batch]))`` over all rows, in order.

    With ``workers`` > 0 the next ``workers + 1`` batches are decoded and preprocessed on a thread
    pool while the current one runs.  ``checkpoint_rows`` is rounded up to a multiple of ``batch``.
    """
    start, parts = _resume(checkpoint, n)
    resumed = start
    if start >= n:
        progress(1.0, f"all {n} rows were in the checkpoint")
        return np.concatenate(parts).astype(np.float32, copy=False)
    chunk = max(batch, -(-checkpoint_rows // batch) * batch)
    out: np.ndarray | None = None
    if parts:
        out = np.empty((n, parts[0].shape[1]), dtype=np.float32)
        out[:start] = np.concatenate(parts)
    del parts

    def prepare(a: int, b: int) -> np.ndarray:
        return preprocess([load(i) for i in range(a, b)])

    spans = [(a, min(n, a + batch)) for a in range(start, n, batch)]
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="loupe-prefetch") if workers else None
    pending: deque = deque()
    chunk_start = start
    t0 = time.monotonic()
    try:
        it = iter(spans)
        for _ in range(workers + 1 if pool is not None else 0):
            span = next(it, None)
            if span is not None and pool is not None:
                pending.append((span, pool.submit(prepare, *span)))
        for span in spans:
            if pool is not None:
                (a, b), fut = pending.popleft()
                x = fut.result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(prepare, *nxt)))
            else:
                a, b = span
                x = prepare(a, b)
            y = np.asarray(forward(x))
            if y.shape[0] != b - a:
                raise ExtractorError(f"the model returned {y.shape[0]} rows for a batch of {b - a} images")
            y = y.reshape(b - a, -1)
            if out is None:
                out = np.empty((n, y.shape[1]), dtype=np.float32)
            elif y.shape[1] != out.shape[1]:
                raise ExtractorError(f"the model returned {y.shape[1]} features per image after {out.shape[1]} "
                                     "earlier (a checkpoint of another model?)")
            out[a:b] = y
            if checkpoint is not None and (b - chunk_start >= chunk or b == n):
                checkpoint.save(chunk_start, b, out[chunk_start:b])
                chunk_start = b
            rate = (b - resumed) / max(time.monotonic() - t0, 1e-9)
            note = f", resumed at row {resumed}" if resumed else ""
            progress(b / n, f"embedded {b}/{n} images on {where} ({rate:.1f} images/s{note})")
    finally:
        if pool is not None:
            for _, fut in pending:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
    assert out is not None
    return out


class ModelExtractor(Extractor):
    """Base of the network extractors: subclasses implement :meth:`build`."""

    pca_: PCA | None = None

    def torch_device(self) -> str:
        """``cpu`` or ``cuda`` for the ``device`` parameter; ExtractorError when CUDA is asked for and absent."""
        from ..backend import torch_device  # noqa: PLC0415

        try:
            return torch_device(self.params_["device"])
        except RuntimeError:
            raise ExtractorError("device='cuda' was asked for but this worker has no CUDA device; "
                                 "use device 'auto' or 'cpu'") from None

    def build(self) -> tuple[Preprocess, Forward, str]:
        """(preprocess, forward, where) for this extractor's model; ``where`` names the device for messages."""
        raise NotImplementedError

    def _extract(self, load: Loader, n: int, progress: Progress, checkpoint: Any) -> np.ndarray:
        p = self.params_
        preprocess, forward, where = self.build()
        X = run_batched(load, n, preprocess=preprocess, forward=forward, batch=p["batch"], workers=p["workers"],
                        progress=lambda f, m: progress(0.97 * f, m), checkpoint=checkpoint,
                        checkpoint_rows=p["checkpoint_rows"], where=where)
        X = check_matrix(X, n, name="model output")
        return self.postprocess(X, progress)

    def postprocess(self, X: np.ndarray, progress: Progress) -> np.ndarray:
        """Optional L2 normalisation, then optional PCA (fitted here, kept as ``pca_``)."""
        if self.params_.get("l2"):
            norms = np.linalg.norm(X, axis=1, keepdims=True)
            X = X / np.maximum(norms, 1e-12)
        k = self.params_.get("pca_dim") or 0
        self.pca_ = None
        if k:
            if k > X.shape[1]:
                raise ExtractorError(f"pca_dim={k} is more than the model's {X.shape[1]} dimensions; "
                                     f"choose at most {X.shape[1]} (or 0 for no PCA)")
            progress(0.98, f"PCA from {X.shape[1]} to {k} dimensions")
            self.pca_ = PCA(k).fit(X)
            X = self.pca_.transform(X)
        progress(1.0, f"{X.shape[0]} embeddings of {X.shape[1]} dimensions")
        return np.ascontiguousarray(X, dtype=np.float32)
