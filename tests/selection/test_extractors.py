"""Feature extractors against independent references (scikit-learn PCA, a hand-computed linear model)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from selection.extractors import check_matrix, extractor_names, get_extractor, make_extractor


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


def test_torchscript_is_retired_and_never_opens_its_file(tmp_path, monkeypatch):
    """Old settings still validate (so a project keeps them), but extracting refuses before any file or
    torch is touched, and says to export to ONNX."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "m.pt"
    path.write_bytes(b"PK\x03\x04 a TorchScript archive is a zip")  # never opened, so any bytes do

    def boom(*a, **k):
        raise AssertionError("torch.jit.load must never be called")

    monkeypatch.setattr(torch.jit, "load", boom)
    ext = make_extractor("torch", {"path": str(path), "size": 4, "normalize": "centered", "device": "cpu"})
    assert ext.params_["size"] == 4 and get_extractor("torch").retired
    opened = []
    with pytest.raises(ValueError, match="TorchScript models are no longer accepted.*Export the model to ONNX"):
        ext.extract(lambda i: opened.append(i), 3)
    assert opened == []
