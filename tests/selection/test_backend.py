"""The array backend: device resolution, namespace dispatch, zero-copy torch hand-off."""
import numpy as np
import pytest
import torch

from selection import backend


def test_cpu_and_auto_resolve_without_a_gpu_library():
    assert backend.resolve_device("cpu") == "cpu"
    assert backend.resolve_device("auto") == ("cuda" if backend.cuda_available() else "cpu")
    assert backend.get_array_module(np.zeros(3)) is np
    with pytest.raises(ValueError, match="device='tpu'"):
        backend.resolve_device("tpu")
    with pytest.raises(ValueError, match="device='gpu'"):
        backend.torch_device("gpu")


@pytest.mark.skipif(backend.cuda_available(), reason="checks the error on a machine without CuPy/GPU")
def test_cuda_without_cupy_is_a_clear_error():
    with pytest.raises(RuntimeError, match="CuPy"):
        backend.resolve_device("cuda")
    assert backend.resolve_device("auto") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_torch_cuda_without_device_is_a_clear_error():
    with pytest.raises(RuntimeError, match="CUDA"):
        backend.torch_device("cuda")
    assert backend.torch_device("auto") == "cpu"


def test_torch_hand_off_is_zero_copy_both_ways():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = backend.to_torch(a)
    a[0, 0] = 42.0
    assert t[0, 0].item() == 42.0  # shares memory
    back = backend.from_torch(t)
    assert isinstance(back, np.ndarray) and np.shares_memory(back, a)
    np.testing.assert_array_equal(backend.to_numpy(t), a)


def test_asarray_and_to_numpy_on_host():
    x = backend.asarray([[1, 2]], device="cpu", dtype=np.float32)
    assert x.dtype == np.float32 and backend.to_numpy(x) is x
    assert backend.asarray(None) is None and backend.to_numpy(None) is None


@pytest.mark.gpu
@pytest.mark.skipif(not backend.cuda_available(), reason="no CuPy with a visible GPU on this machine")
def test_cupy_dlpack_round_trip_and_gpu_selection():
    import cupy

    from selection import make_strategy

    x = backend.asarray(np.arange(6, dtype=np.float32).reshape(2, 3), device="cuda")
    assert backend.get_array_module(x) is cupy
    t = backend.to_torch(x)
    assert t.is_cuda
    t[0, 0] = 7.0
    assert float(x[0, 0]) == 7.0  # DLPack shares the buffer
    rng = np.random.default_rng(0)
    X = cupy.asarray(rng.normal(size=(500, 8)).astype(np.float32))
    P = cupy.asarray(rng.dirichlet(np.ones(4), size=500))
    for name in ("margin", "entropy", "power", "badge", "coreset", "cluster_margin"):
        sel = make_strategy(name, {}).select(X, P, X_labeled=X[:4], y_labeled=np.arange(4), batch_size=20,
                                             random_state=0)
        assert isinstance(sel.indices, np.ndarray) and len(np.unique(sel.indices)) == 20
