"""Feature extractors against independent references (scikit-learn PCA, a hand-computed linear model)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from selection.extractors import check_matrix, extractor_names, make_extractor


def _images(n, size=6, seed=0):
    rng = np.random.default_rng(seed)
    arrs = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    return [Image.fromarray(a, "RGB") for a in arrs], arrs


def test_registry_has_the_three_extractors():
    assert {"precomputed", "pixels", "torch"} <= set(extractor_names())
    with pytest.raises(ValueError, match="unknown extractor 'nope'"):
        make_extractor("nope")


@pytest.mark.parametrize("n", [40, 200])  # n < p (thin SVD path) and n > p (correlation-matrix path)
def test_pixels_matches_standardised_sklearn_pca(n):
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    imgs, arrs = _images(n, size=6)  # p = 6*6*3 = 108 features
    seen = []
    X = make_extractor("pixels", {"size": 6, "dim": 5, "batch": 16}).extract(
        lambda i: imgs[i], n, progress=lambda f, m: seen.append(f)
    )
    assert X.shape == (n, 5) and X.dtype == np.float32
    raw = arrs.reshape(n, -1).astype(np.float64) / 255.0
    std = raw.std(axis=0, ddof=1)
    Z = (raw - raw.mean(axis=0)) / std
    ref = PCA(n_components=5, svd_solver="full").fit_transform(Z)
    # Same components up to sign: compare column by column with the sign aligned.
    for j in range(5):
        s = np.sign(ref[:, j] @ X[:, j])
        np.testing.assert_allclose(X[:, j], s * ref[:, j], rtol=1e-3, atol=1e-3)
    assert seen == sorted(seen) and seen[-1] == 1.0
    # StandardScaler uses ddof=0; scaling by a constant does not change the principal directions.
    assert np.allclose(StandardScaler().fit_transform(raw).std(axis=0), 1.0)


def test_pixels_is_deterministic_and_handles_gray_and_constant_pixels():
    imgs, _ = _images(30, size=5, seed=1)
    imgs[0] = Image.new("RGB", (9, 4), (10, 10, 10))  # a different size is resized
    a = make_extractor("pixels", {"size": 5, "dim": 3, "color": "gray"}).extract(lambda i: imgs[i], 30)
    b = make_extractor("pixels", {"size": 5, "dim": 3, "color": "gray"}).extract(lambda i: imgs[i], 30)
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all()
    flat = [Image.new("L", (5, 5), 7) for _ in range(4)]
    c = make_extractor("pixels", {"size": 5, "dim": 2}).extract(lambda i: flat[i], 4)
    np.testing.assert_array_equal(c, 0.0)  # no variance: every image sits at the origin


def test_pixels_rejects_out_of_range_params():
    with pytest.raises(ValueError, match="'dim'=0 is below the minimum"):
        make_extractor("pixels", {"dim": 0})
    with pytest.raises(ValueError, match="'color'='cmyk' is not one of"):
        make_extractor("pixels", {"color": "cmyk"})


def test_precomputed_checks_shape_rows_and_nan(tmp_path):
    good = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.save(tmp_path / "good.npy", good)
    X = make_extractor("precomputed", {"path": str(tmp_path / "good.npy")}).extract(lambda i: None, 4)
    assert X.dtype == np.float32 and np.array_equal(X, good.astype(np.float32))
    with pytest.raises(ValueError, match="has 4 rows but 5 images"):
        make_extractor("precomputed", {"path": str(tmp_path / "good.npy")}).extract(lambda i: None, 5)
    bad = good.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf in 1 row.*first at row 2"):
        check_matrix(bad, 4)
    with pytest.raises(ValueError, match="must be a 2-D"):
        check_matrix(np.zeros(4), 4)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="cannot read embeddings file 'junk.npy'"):
        make_extractor("precomputed", {"path": str(tmp_path / "junk.npy")}).extract(lambda i: None, 1)


def test_torchscript_model_output_equals_hand_computation(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 7))
    path = tmp_path / "m.pt"
    torch.jit.script(lin).save(str(path))
    imgs, arrs = _images(10, size=4, seed=3)
    seen = []
    X = make_extractor("torch", {"path": str(path), "size": 4, "batch": 3, "normalize": "centered",
                                 "device": "cpu"}).extract(lambda i: imgs[i], 10,
                                                           progress=lambda f, m: seen.append((f, m)))
    # Independent reference: NCHW input in [-1, 1], then W x + b by hand.
    x = (arrs.astype(np.float64) / 255.0 - 0.5) / 0.5
    x = x.transpose(0, 3, 1, 2).reshape(10, -1)
    W = lin[1].weight.detach().numpy().astype(np.float64)
    b = lin[1].bias.detach().numpy().astype(np.float64)
    np.testing.assert_allclose(X, x @ W.T + b, rtol=1e-4, atol=1e-4)
    assert sum(m.startswith("embedded") for _, m in seen) == 4  # ceil(10 / 3) batches
    assert [f for f, _ in seen] == sorted(f for f, _ in seen) and seen[-1][0] == 1.0


def test_torch_bad_model_file_is_a_clear_error(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="'bad.pt' is not a loadable TorchScript model"):
        make_extractor("torch", {"path": str(tmp_path / "bad.pt"), "device": "cpu"}).extract(lambda i: None, 1)


@pytest.mark.gpu
def test_torchscript_on_cuda_matches_cpu(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten())
    path = tmp_path / "m.pt"
    torch.jit.script(model).save(str(path))
    imgs, _ = _images(9, size=16, seed=5)
    params = {"path": str(path), "size": 16, "batch": 4}
    cpu = make_extractor("torch", {**params, "device": "cpu"}).extract(lambda i: imgs[i], 9)
    gpu = make_extractor("torch", {**params, "device": "cuda"}).extract(lambda i: imgs[i], 9)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=1e-5)
