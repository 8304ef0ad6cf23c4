"""Data sets: digits, the Gaussian-mixture generator and the .npy loader."""
import numpy as np
import pytest

from selection.datasets import digits, gaussian_mixture, load_dataset, load_npy


def test_digits_is_the_bundled_set_scaled():
    ds = digits()
    assert ds.X.shape == (1797, 64) and ds.X.dtype == np.float32
    assert ds.X.min() == 0 and ds.X.max() == 1 and ds.n_classes == 10
    assert set(np.unique(ds.y)) == set(range(10))


def test_gmm_shapes_reproducibility_and_imbalance():
    a = gaussian_mixture(20_000, 5, 8, imbalance=16, spread=2, seed=3)
    b = gaussian_mixture(20_000, 5, 8, imbalance=16, spread=2, seed=3)
    np.testing.assert_array_equal(a.X, b.X)
    assert a.X.dtype == np.float32 and a.X.shape == (20_000, 8)
    counts = np.bincount(a.y, minlength=5)
    # priors 16^(-k/4): largest / smallest = 16, consecutive ratio 2
    assert 12 < counts[0] / counts[4] < 21
    assert np.all(np.diff(counts) < 0)
    # noise is unit variance around each class mean
    within = np.concatenate([a.X[a.y == k] - a.X[a.y == k].mean(0) for k in range(5)])
    assert abs(within.var() - 1) < 0.05


def test_gmm_spread_controls_separation():
    from sklearn.linear_model import LogisticRegression
    accs = []
    for spread in (0.5, 4.0):
        ds = gaussian_mixture(3000, 4, 16, spread=spread, seed=0)
        accs.append(LogisticRegression(max_iter=500).fit(ds.X[:2000], ds.y[:2000]).score(ds.X[2000:], ds.y[2000:]))
    assert accs[0] < 0.8 < 0.97 < accs[1]


def test_npy_loader_maps_string_labels(tmp_path):
    X = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", np.array(["cat", "dog", "cat", "emu", "dog", "cat"]))
    ds = load_dataset(f"npy:{tmp_path / 'X.npy'},{tmp_path / 'y.npy'}")
    assert ds.class_names == ["cat", "dog", "emu"]
    np.testing.assert_array_equal(ds.y, [0, 1, 0, 2, 1, 0])
    np.testing.assert_array_equal(ds.X, X)


@pytest.mark.parametrize("X,y,match", [
    (np.zeros(5), np.zeros(5, int), "2-D"),
    (np.zeros((5, 2)), np.arange(4), "4 labels but the embeddings have 5"),
    (np.full((3, 2), np.nan), np.arange(3), "NaN"),
    (np.zeros((3, 2)), np.array([0.5, 1, 2]), "non-integer"),
    (np.zeros((3, 2)), np.zeros(3, int), "at least 2"),
])
def test_npy_loader_errors_name_the_problem(tmp_path, X, y, match):
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    with pytest.raises(ValueError, match=match):
        load_npy(str(tmp_path / "X.npy"), str(tmp_path / "y.npy"))


def test_missing_file_and_bad_specs(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_npy(str(tmp_path / "nope.npy"), str(tmp_path / "y.npy"))
    with pytest.raises(ValueError, match="not 'digits'"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="bad option"):
        load_dataset("gmm:k=3")
    with pytest.raises(ValueError, match="imbalance"):
        load_dataset("gmm:imbalance=0.5")
