"""Agreement statistics against scikit-learn, the published examples and brute force."""
import itertools

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from selection import quality


def test_cohen_kappa_matches_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(0, 4, 60)
        b = np.where(rng.random(60) < 0.6, a, rng.integers(0, 4, 60))
        assert quality.cohen_kappa(a, b, 4) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)


def test_pairwise_kappa_uses_only_shared_items():
    rng = np.random.default_rng(1)
    L = rng.integers(0, 3, (50, 3))
    L[rng.random((50, 3)) < 0.3] = quality.MISSING
    kappa, common = quality.pairwise_cohen_kappa(L, 3)
    both = (L[:, 0] != quality.MISSING) & (L[:, 2] != quality.MISSING)
    assert common[0, 2] == both.sum()
    assert kappa[0, 2] == pytest.approx(cohen_kappa_score(L[both, 0], L[both, 2]))
    assert kappa[2, 0] == kappa[0, 2] and kappa[1, 1] == 1.0


def test_fleiss_kappa_wikipedia_example():
    # Fleiss (1971) worked example as reproduced on Wikipedia: 10 items, 14 raters, 5 classes, kappa = 0.210
    counts = np.array([
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ])
    assert quality.fleiss_kappa(counts) == pytest.approx(0.20993, abs=1e-4)


def test_krippendorff_alpha_published_nominal_example():
    # Krippendorff (2011) "Computing Krippendorff's alpha-reliability", 4 observers x 12 units,
    # values 1..5, missing as '.', nominal alpha = 0.743
    m = quality.MISSING
    A = [0, 1, 2, 2, 1, 0, 3, 0, 1, m, m, m]
    B = [0, 1, 2, 2, 1, 1, 3, 0, 1, 4, m, 2]
    C = [m, 2, 2, 2, 1, 2, 3, 1, 1, 4, 0, m]
    D = [0, 1, 2, 2, 1, 3, 3, 0, 1, 4, 0, m]
    assert quality.krippendorff_alpha(np.array([A, B, C, D]).T, 5) == pytest.approx(0.743, abs=5e-4)


def _alpha_brute(L, c):
    """Pairable values by explicit ordered pairs within units, then 1 - D_o / D_e."""
    pairs, values = [], []
    for row in L:
        v = [x for x in row if x != quality.MISSING]
        if len(v) < 2:
            continue
        values += v
        for i, j in itertools.permutations(range(len(v)), 2):
            pairs.append((v[i] != v[j]) / (len(v) - 1))
    n = len(values)
    do = sum(pairs) / n
    de = sum(a != b for a, b in itertools.permutations(values, 2)) / (n * (n - 1))
    return 1 - do / de


def test_krippendorff_alpha_brute_force_and_fleiss_agree_on_complete_data():
    rng = np.random.default_rng(2)
    for _ in range(5):
        L = rng.integers(0, 3, (12, 4))
        L[rng.random((12, 4)) < 0.25] = quality.MISSING
        assert quality.krippendorff_alpha(L, 3) == pytest.approx(_alpha_brute(L, 3), abs=1e-12)
    # complete data, r raters: alpha = kappa_Fleiss + (1 - kappa_Fleiss) / (n r) (both from the same P_o)
    L = rng.integers(0, 3, (30, 3))
    L[:, 1] = np.where(rng.random(30) < 0.7, L[:, 0], L[:, 1])
    k = quality.fleiss_kappa(quality.item_counts(L, 3))
    assert quality.krippendorff_alpha(L, 3) == pytest.approx(k + (1 - k) / (30 * 3), abs=1e-12)


def test_confusion_vs_reference_counts_each_label_once():
    L = np.array([[0, 1], [1, 1], [2, quality.MISSING], [0, 0]])
    ref = np.array([0, 1, 2, quality.MISSING])
    conf = quality.confusion_vs_reference(L, ref, 3)
    assert conf.sum() == 5
    assert conf[0, 0, 0] == 1 and conf[1, 0, 1] == 1 and conf[0, 2, 2] == 1 and conf[1, 1, 1] == 1


def test_bad_label_matrix_is_rejected():
    with pytest.raises(ValueError, match="outside"):
        quality.krippendorff_alpha(np.array([[0, 5]]), 3)
    with pytest.raises(ValueError, match="2-D"):
        quality.item_counts(np.array([0, 1]), 3)
