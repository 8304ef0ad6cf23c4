"""Exact score values on hand-made probabilities."""
import numpy as np
import pytest

from selection.scores import entropy_scores, get_score, least_confidence_scores, margin_scores, top_b

P = np.array([
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.0],
    [0.6, 0.3, 0.1],
    [1 / 3, 1 / 3, 1 / 3],
    [0.2, 0.7, 0.1],
])


def test_least_confidence_values():
    np.testing.assert_allclose(least_confidence_scores(P), [0.0, 0.5, 0.4, 2 / 3, 0.3], atol=1e-15)


def test_margin_values():
    # 1 - (p1 - p2)
    np.testing.assert_allclose(margin_scores(P), [0.0, 1.0, 0.7, 1.0, 0.5], atol=1e-15)


def test_entropy_values():
    expected = [0.0, np.log(2), -(0.6 * np.log(0.6) + 0.3 * np.log(0.3) + 0.1 * np.log(0.1)), np.log(3),
                -(0.2 * np.log(0.2) + 0.7 * np.log(0.7) + 0.1 * np.log(0.1))]
    np.testing.assert_allclose(entropy_scores(P), expected, rtol=1e-12, atol=1e-15)


def test_scores_keep_float32_and_match_float64():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(7), size=1000)
    for f in (least_confidence_scores, margin_scores, entropy_scores):
        s32 = f(p.astype(np.float32))
        assert s32.dtype == np.float32
        np.testing.assert_allclose(s32, f(p), atol=1e-5)


def test_margin_against_full_sort_over_chunks(monkeypatch):
    import selection.scores as sc
    monkeypatch.setattr(sc, "_rows", lambda p: 7)  # exercise the chunk boundaries
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(5), size=50)
    srt = np.sort(p, axis=1)
    np.testing.assert_allclose(sc.margin_scores(p), 1 - (srt[:, -1] - srt[:, -2]), atol=1e-15)
    np.testing.assert_allclose(sc.entropy_scores(p), -(p * np.log(p)).sum(1), rtol=1e-12)


def test_top_b_is_the_largest_in_order():
    s = np.array([0.1, 0.9, 0.5, 0.9, 0.3, 0.7])
    np.testing.assert_array_equal(top_b(s, 3), [1, 3, 5])  # tie 0.9: lower index first
    np.testing.assert_array_equal(top_b(s, 6), [1, 3, 5, 2, 4, 0])


def test_bad_shapes_and_names():
    with pytest.raises(ValueError, match="shape"):
        margin_scores(np.ones(3))
    with pytest.raises(ValueError, match="score='bogus'"):
        get_score("bogus")
