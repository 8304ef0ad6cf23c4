"""The one module that knows about devices.

Everything else in ``selection`` takes its array namespace from its inputs
(``xp = get_array_module(X)``) and never imports CuPy itself.  CuPy is imported
lazily, only when a caller asks for ``device="cuda"`` (or ``"auto"`` on a machine
that has it), so importing ``selection`` on a CPU machine never touches it.
"""
from __future__ import annotations

import sys
from types import ModuleType
from typing import Any, overload

import numpy as np

DEVICES = ("cpu", "cuda", "auto")


def _cupy() -> ModuleType | None:
    """Return the cupy module if it is importable and sees a GPU, else None."""
    try:
        import cupy  # noqa: PLC0415 - lazy on purpose
    except Exception:  # noqa: BLE001 - ImportError, or a CUDA library load failure
        return None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:  # noqa: BLE001 - cupy installed but no driver/device: treat as absent
        return None
    return cupy


def cuda_available() -> bool:
    return _cupy() is not None


def resolve_device(device: str = "cpu") -> str:
    """Map ``cpu`` / ``cuda`` / ``auto`` to the concrete ``cpu`` or ``cuda``.

    ``cuda`` without a usable CuPy raises; ``auto`` falls back to ``cpu``.
    """
    if device not in DEVICES:
        raise ValueError(f"device={device!r} is not one of {DEVICES}")
    if device == "cpu":
        return "cpu"
    if _cupy() is not None:
        return "cuda"
    if device == "cuda":
        raise RuntimeError(
            "device='cuda' was asked for but CuPy with a visible GPU is not available; "
            "install requirements-gpu.txt on a GPU machine or use device='cpu'/'auto'"
        )
    return "cpu"


def get_array_module(*arrays: Any) -> ModuleType:
    """NumPy, or CuPy when any argument is a CuPy array (checked without importing CuPy)."""
    if "cupy" in sys.modules:
        cupy = sys.modules["cupy"]
        for a in arrays:
            if isinstance(a, cupy.ndarray):
                return cupy
    return np


def is_gpu_array(x: Any) -> bool:
    return get_array_module(x) is not np


def asarray(x: Any, device: str = "cpu", dtype: Any = None) -> Any:
    """Put ``x`` on ``device`` (``cpu``/``cuda``/``auto``), converting dtype if given."""
    if x is None:
        return None
    dev = resolve_device(device)
    if dev == "cuda":
        cupy = _cupy()
        assert cupy is not None  # resolve_device answers "cuda" only when cupy sees a GPU
        return cupy.asarray(x, dtype=dtype)
    if is_gpu_array(x):
        x = x.get()
    return np.asarray(x, dtype=dtype)


@overload
def to_numpy(x: None) -> None: ...
@overload
def to_numpy(x: Any) -> np.ndarray: ...
def to_numpy(x: Any) -> np.ndarray | None:
    """Host copy of ``x`` (no copy when it is already a NumPy array); None stays None."""
    if x is None:
        return None
    if is_gpu_array(x):
        return x.get()
    if "torch" in sys.modules and isinstance(x, sys.modules["torch"].Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def to_torch(x: Any):
    """Zero-copy hand-off to torch: NumPy via ``torch.from_numpy``, CuPy via DLPack."""
    import torch  # noqa: PLC0415 - torch is heavy; import where used

    if isinstance(x, torch.Tensor):
        return x
    if is_gpu_array(x):
        return torch.from_dlpack(x)
    return torch.from_numpy(np.ascontiguousarray(x))


def from_torch(t: Any, like: Any = None) -> Any:
    """Zero-copy hand-off from torch: CUDA tensors become CuPy (DLPack), CPU tensors NumPy.

    ``like`` (optional) forces the namespace of another array.
    """
    t = t.detach()
    want_gpu = t.is_cuda if like is None else is_gpu_array(like)
    if want_gpu:
        cupy = _cupy()
        if cupy is None:
            raise RuntimeError("a CUDA tensor was handed over but CuPy is not available")
        return cupy.from_dlpack(t if t.is_cuda else t.cuda())
    return t.cpu().numpy()


def torch_device(device: str = "cpu") -> str:
    """The torch device string for ``cpu``/``cuda``/``auto`` (torch's own CUDA check)."""
    if device not in DEVICES:
        raise ValueError(f"device={device!r} is not one of {DEVICES}")
    if device == "cpu":
        return "cpu"
    import torch  # noqa: PLC0415

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise RuntimeError("device='cuda' was asked for but torch sees no CUDA device")
    return "cpu"
