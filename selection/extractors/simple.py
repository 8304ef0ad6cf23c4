"""The two extractors without a model: ``precomputed`` (an uploaded matrix) and ``pixels``.

- ``precomputed``: an uploaded ``.npy`` matrix, checked (2-D, one row per image, finite) and cast;
  read with ``allow_pickle=False`` (a pickled ``.npy`` could run code).
- ``pixels``: resize, flatten, standardise every feature, PCA to ``dim`` (principal axes of the
  correlation matrix, i.e. PCA of the standardised pixels).
"""
from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from ..params import Param, validate_params
from .base import Extractor, ExtractorError, batches, check_matrix, pixels, register


@register
class Precomputed(Extractor):
    name = "precomputed"
    description = "An uploaded (n, d) .npy matrix, one row per image in import order."
    params = (Param("path", "str", "", "Path of the .npy file (rows aligned with the images)."),)
    file_params = ("path",)

    def _extract(self, load, n, progress, checkpoint):
        path = self.params_["path"]
        if not path:
            raise ExtractorError("extractor 'precomputed' needs parameter 'path' (an .npy file)")
        try:
            X = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            # The reader's own message may quote the file's header: name the file, not its bytes.
            raise ExtractorError(f"cannot read embeddings file {os.path.basename(path)!r}: not a readable "
                                 ".npy matrix (pickled object arrays are refused)") from None
        X = check_matrix(X, n)
        progress(1.0, f"loaded {n} precomputed rows")
        return X


@register
class Pixels(Extractor):
    """Resize, flatten, standardise, PCA.

    PCA is computed from the correlation matrix of the standardised pixel features
    (eigenvectors of C = D^-1/2 Σ D^-1/2, Jolliffe, *Principal Component Analysis*, 2nd ed., §2.3),
    accumulated batch by batch as Σ x xᵀ so that only one (p, p) matrix is held; when there are
    fewer images than features the thin SVD of the standardised (n, p) matrix is used instead.
    Component signs are fixed (largest loading positive) so results are reproducible.
    """

    name = "pixels"
    description = "Raw pixels: resize, flatten, standardise, PCA to dim."
    params = (
        Param("size", "int", 32, "Images are resized to size x size pixels.", min=4, max=256),
        Param("dim", "int", 64, "Number of principal components kept (at most the number of pixel features).",
              min=1, max=4096),
        Param("color", "str", "rgb", "Use colour (rgb) or luminance only (gray).", choices=("rgb", "gray")),
        Param("batch", "int", 256, "Images decoded per batch.", min=1, max=65536),
    )

    def _extract(self, load, n, progress, checkpoint):
        size, mode = self.params_["size"], ("RGB" if self.params_["color"] == "rgb" else "L")
        p = size * size * (3 if mode == "RGB" else 1)
        d = min(self.params_["dim"], p)
        # The raw features are kept once (RAM if small, else a temporary memory-mapped file).
        tmp = None
        if n * p * 4 <= 512 * 1024**2:
            F = np.empty((n, p), dtype=np.float32)
        else:
            tmp = tempfile.NamedTemporaryFile(prefix="loupe-pixels-", suffix=".f32", delete=False)
            tmp.close()
            F = np.memmap(tmp.name, dtype=np.float32, mode="w+", shape=(n, p))
        try:
            s1 = np.zeros(p, dtype=np.float64)
            use_gram = n < p
            s2 = None if use_gram else np.zeros((p, p), dtype=np.float64)
            bs = self.params_["batch"]
            for a, b in batches(n, bs):
                block = np.stack([pixels(load(i), size, mode) for i in range(a, b)])
                F[a:b] = block
                s1 += block.sum(axis=0, dtype=np.float64)
                if s2 is not None:
                    b64 = block.astype(np.float64)
                    s2 += b64.T @ b64
                progress(0.8 * b / n, f"read {b}/{n} images")
            mean = s1 / n
            if use_gram:
                var = np.zeros(p)
                for a, b in batches(n, bs):
                    var += ((F[a:b].astype(np.float64) - mean) ** 2).sum(axis=0)
                var /= max(n - 1, 1)
            else:
                cov = (s2 - n * np.outer(mean, mean)) / max(n - 1, 1)
                var = np.clip(np.diag(cov).copy(), 0.0, None)
            std = np.sqrt(var)
            std[std < 1e-8] = 1.0  # constant pixels carry no information; leave them at 0
            progress(0.85, "computing principal components")
            if use_gram:
                Z = (F[:].astype(np.float64) - mean) / std
                _, _, Vt = np.linalg.svd(Z, full_matrices=False)
                V = Vt[:d].T
            else:
                corr = cov / np.outer(std, std)
                w, vecs = np.linalg.eigh(corr)
                V = vecs[:, np.argsort(w)[::-1][:d]]
            # Deterministic signs: the largest-magnitude loading of each component is positive.
            flip = np.sign(V[np.abs(V).argmax(axis=0), np.arange(V.shape[1])])
            V = V * np.where(flip == 0, 1.0, flip)
            if V.shape[1] < d:  # fewer components than asked (n < d): pad with zero columns
                V = np.hstack([V, np.zeros((p, d - V.shape[1]))])
            out = np.empty((n, d), dtype=np.float32)
            for a, b in batches(n, bs):
                out[a:b] = ((F[a:b].astype(np.float64) - mean) / std) @ V
            progress(1.0, f"projected {n} images to {d} dimensions")
            return out
        finally:
            del F
            if tmp is not None:
                os.unlink(tmp.name)


def effective_dim(name: str, params: dict[str, Any]) -> int | None:
    """The output dimension when known without running (pixels), else None."""
    if name != "pixels":
        return None
    p = validate_params(Pixels.params, params)
    feats = p["size"] ** 2 * (3 if p["color"] == "rgb" else 1)
    return int(min(p["dim"], feats))


