"""Feature extractors: images in, one float32 embedding matrix out.

A pure library (no Django).  Every extractor has the same call shape::

    make_extractor("pixels", {"size": 32, "dim": 64}).extract(load, n, progress=cb) -> (n, d) float32

``load(i)`` returns the ``i``-th image as a ``PIL.Image.Image``; images are read in batches so
memory stays bounded by the batch (plus the extractor's own state), and ``progress(fraction,
message)`` is called after every batch.

- ``precomputed``: an uploaded ``.npy`` matrix, checked (2-D, one row per image, finite) and cast.
- ``pixels``: resize, flatten, standardise every feature, PCA to ``dim`` (principal axes of the
  correlation matrix, i.e. PCA of the standardised pixels).
- ``torch``: a TorchScript model file, applied in batches on CUDA when available.

Parameters are declared with :class:`selection.params.Param`, like strategies, so the admin form
and validation come from the same schema.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Callable, ClassVar

import numpy as np

from .params import Param, validate_params

Loader = Callable[[int], Any]  # i -> PIL.Image.Image
Progress = Callable[[float, str], None]

_REGISTRY: dict[str, type["Extractor"]] = {}


def _register(cls: type["Extractor"]) -> type["Extractor"]:
    _REGISTRY[cls.name] = cls
    return cls


def extractor_names() -> list[str]:
    return sorted(_REGISTRY)


def get_extractor(name: str) -> type["Extractor"]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown extractor {name!r}; available: {extractor_names()}") from None


def make_extractor(name: str, params: dict[str, Any] | None = None) -> "Extractor":
    return get_extractor(name)(**(params or {}))


def extractor_schema(name: str) -> list[dict[str, Any]]:
    return [p.as_dict() for p in get_extractor(name).params]


def check_matrix(X: Any, n_rows: int | None = None, *, name: str = "embeddings") -> np.ndarray:
    """Validate an embedding matrix and return it as C-contiguous float32.

    X : (n, d) array.  Raises ``ValueError`` naming the problem: not 2-D, a row count that does not
    match ``n_rows``, a non-numeric dtype, or NaN/inf (with the first bad row).
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, d) matrix; got shape {X.shape}")
    if n_rows is not None and X.shape[0] != n_rows:
        raise ValueError(f"{name} has {X.shape[0]} rows but {n_rows} images need one row each")
    if X.shape[1] < 1:
        raise ValueError(f"{name} has no columns (shape {X.shape})")
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric; got dtype {X.dtype}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{name} contains NaN or inf in {len(bad)} row(s), first at row {int(bad[0])}"
            " (or the values overflow float32)"
        )
    return X


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(n, start + size)


class Extractor:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()

    def __init__(self, **params: Any) -> None:
        self.params_ = validate_params(self.params, params)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params_.items())})"

    def extract(self, load: Loader, n: int, *, progress: Progress | None = None) -> np.ndarray:
        """(n, d) float32 embeddings of images ``load(0) .. load(n-1)``."""
        if n < 1:
            raise ValueError(f"n={n}: there are no images to embed")
        return self._extract(load, n, progress or (lambda f, m: None))

    def _extract(self, load: Loader, n: int, progress: Progress) -> np.ndarray:
        raise NotImplementedError


@_register
class Precomputed(Extractor):
    name = "precomputed"
    description = "An uploaded (n, d) .npy matrix, one row per image in import order."
    params = (Param("path", "str", "", "Path of the .npy file (rows aligned with the images)."),)

    def _extract(self, load, n, progress):
        path = self.params_["path"]
        if not path:
            raise ValueError("extractor 'precomputed' needs parameter 'path' (an .npy file)")
        try:
            X = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read embeddings file {os.path.basename(path)!r}: {exc}") from None
        X = check_matrix(X, n)
        progress(1.0, f"loaded {n} precomputed rows")
        return X


def _pixels(img, size: int, mode: str) -> np.ndarray:
    from PIL import Image  # noqa: PLC0415

    img = img.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32).reshape(-1) / 255.0


@_register
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

    def _extract(self, load, n, progress):
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
            for a, b in _batches(n, bs):
                block = np.stack([_pixels(load(i), size, mode) for i in range(a, b)])
                F[a:b] = block
                s1 += block.sum(axis=0, dtype=np.float64)
                if s2 is not None:
                    b64 = block.astype(np.float64)
                    s2 += b64.T @ b64
                progress(0.8 * b / n, f"read {b}/{n} images")
            mean = s1 / n
            if use_gram:
                var = np.zeros(p)
                for a, b in _batches(n, bs):
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
            for a, b in _batches(n, bs):
                out[a:b] = ((F[a:b].astype(np.float64) - mean) / std) @ V
            progress(1.0, f"projected {n} images to {d} dimensions")
            return out
        finally:
            del F
            if tmp is not None:
                os.unlink(tmp.name)


_NORMALIZE = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "centered": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


@_register
class TorchScript(Extractor):
    """A TorchScript model (``torch.jit.save``) mapping (B, 3, size, size) float images to features.

    Images are converted to RGB, resized, scaled to [0, 1] and normalised with the chosen
    mean/std; the model's output (the first element if it returns a tuple) is flattened per image.
    """

    name = "torch"
    description = "A TorchScript model file; batched, on CUDA when available."
    params = (
        Param("path", "str", "", "Path of the TorchScript file (.pt) the admin uploaded."),
        Param("size", "int", 224, "Input images are resized to size x size.", min=2, max=1024),
        Param("batch", "int", 64, "Images per forward pass.", min=1, max=4096),
        Param("normalize", "str", "imagenet", "Per-channel mean/std normalisation of the [0, 1] input.",
              choices=tuple(_NORMALIZE)),
        Param("device", "str", "auto", "Where the model runs (auto: CUDA when available).",
              choices=("cpu", "cuda", "auto")),
    )

    def _extract(self, load, n, progress):
        import torch  # noqa: PLC0415

        from .backend import torch_device  # noqa: PLC0415

        path = self.params_["path"]
        if not path:
            raise ValueError("extractor 'torch' needs parameter 'path' (a TorchScript .pt file)")
        device = torch_device(self.params_["device"])
        try:
            model = torch.jit.load(path, map_location=device)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ValueError(f"{os.path.basename(path)!r} is not a loadable TorchScript model: {exc}") from None
        model.eval()
        size, bs = self.params_["size"], self.params_["batch"]
        mean, std = (torch.tensor(v, dtype=torch.float32, device=device).view(1, 3, 1, 1)
                     for v in _NORMALIZE[self.params_["normalize"]])
        out: np.ndarray | None = None
        with torch.inference_mode():
            for a, b in _batches(n, bs):
                x = np.stack([_pixels(load(i), size, "RGB").reshape(size, size, 3) for i in range(a, b)])
                t = torch.from_numpy(x).to(device).permute(0, 3, 1, 2)
                y = model((t - mean) / std)
                if isinstance(y, (tuple, list)):
                    y = y[0]
                if not isinstance(y, torch.Tensor) or y.shape[0] != b - a:
                    raise ValueError(
                        f"the TorchScript model must return a tensor with one row per image; "
                        f"got {type(y).__name__} {tuple(getattr(y, 'shape', ()))} for a batch of {b - a}"
                    )
                y = y.reshape(b - a, -1).float().cpu().numpy()
                if out is None:
                    out = np.empty((n, y.shape[1]), dtype=np.float32)
                out[a:b] = y
                progress(b / n, f"embedded {b}/{n} images on {device}")
        assert out is not None
        return check_matrix(out, n, name="model output")


def effective_dim(name: str, params: dict[str, Any]) -> int | None:
    """The output dimension when known without running (pixels), else None."""
    if name != "pixels":
        return None
    p = validate_params(Pixels.params, params)
    feats = p["size"] ** 2 * (3 if p["color"] == "rgb" else 1)
    return int(min(p["dim"], feats))


__all__ = [
    "Extractor", "check_matrix", "extractor_names", "extractor_schema", "get_extractor", "make_extractor",
    "effective_dim",
]
