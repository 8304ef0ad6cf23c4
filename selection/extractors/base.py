"""The extractor registry, the base class and the checks every extractor's output goes through.

Error policy: an :class:`ExtractorError` carries a message Loupe wrote itself (it names the
problem and what to do, never the bytes of a file or a third-party traceback), so the app may show
it to users.  Any other exception from inside an extractor is a bug or a hostile file, and the app
shows only a generic text with a reference to its log (``annotate.services.embeddings``).
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np

from ..params import Param, validate_params

Loader = Callable[[int], Any]  # i -> PIL.Image.Image
Progress = Callable[[float, str], None]

_REGISTRY: dict[str, type["Extractor"]] = {}


class ExtractorError(ValueError):
    """A problem the user can fix (bad parameter, missing model, wrong model shape); safe to show."""


def register(cls: type["Extractor"]) -> type["Extractor"]:
    _REGISTRY[cls.name] = cls
    return cls


def extractor_names() -> list[str]:
    return sorted(_REGISTRY)


def get_extractor(name: str) -> type["Extractor"]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ExtractorError(f"unknown extractor {name!r}; available: {extractor_names()}") from None


def make_extractor(name: str, params: dict[str, Any] | None = None) -> "Extractor":
    return get_extractor(name)(**(params or {}))


def extractor_schema(name: str) -> list[dict[str, Any]]:
    return [p.as_dict() for p in get_extractor(name).params]


def check_matrix(X: Any, n_rows: int | None = None, *, name: str = "embeddings") -> np.ndarray:
    """Validate an embedding matrix and return it as C-contiguous float32.

    X : (n, d) array.  Raises ``ExtractorError`` naming the problem: not 2-D, a row count that does
    not match ``n_rows``, a non-numeric dtype, or NaN/inf (with the first bad row).
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ExtractorError(f"{name} must be a 2-D (n, d) matrix; got shape {X.shape}")
    if n_rows is not None and X.shape[0] != n_rows:
        raise ExtractorError(f"{name} has {X.shape[0]} rows but {n_rows} images need one row each")
    if X.shape[1] < 1:
        raise ExtractorError(f"{name} has no columns (shape {X.shape})")
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise ExtractorError(f"{name} must be numeric; got dtype {X.dtype}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ExtractorError(
            f"{name} contains NaN or inf in {len(bad)} row(s), first at row {int(bad[0])}"
            " (or the values overflow float32)"
        )
    return X


def batches(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(n, start + size)


NORMALIZE = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "centered": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def pixels(img, size: int, mode: str) -> np.ndarray:
    """Image -> flat float32 pixels in [0, 1], resized (bilinear) to size x size in ``mode``."""
    from PIL import Image  # noqa: PLC0415

    img = img.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32).reshape(-1) / 255.0


class Extractor:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    #: Non-empty for an extractor that is kept only so stored settings still load (``torch``): it
    #: never runs, and this text (why, and what to use instead) is the error everyone gets.
    retired: ClassVar[str] = ""
    #: Parameters naming a file on the worker (the admin form turns them into uploads).
    file_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **params: Any) -> None:
        try:
            self.params_ = validate_params(self.params, params)
        except ExtractorError:
            raise
        except ValueError as exc:  # our own parameter messages: safe to show
            raise ExtractorError(f"extractor {self.name!r}: {exc}") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params_.items())})"

    def extract(self, load: Loader, n: int, *, progress: Progress | None = None,
                checkpoint: Any = None) -> np.ndarray:
        """(n, d) float32 embeddings of images ``load(0) .. load(n-1)``.

        ``checkpoint`` (a :class:`selection.extractors.pipeline.Checkpoint`) lets batched model
        extractors keep finished chunks on disk and resume after a kill; others ignore it.
        """
        if self.retired:
            raise ExtractorError(self.retired)
        if n < 1:
            raise ExtractorError(f"n={n}: there are no images to embed")
        return self._extract(load, n, progress or (lambda f, m: None), checkpoint)

    def _extract(self, load: Loader, n: int, progress: Progress, checkpoint: Any) -> np.ndarray:
        raise NotImplementedError
