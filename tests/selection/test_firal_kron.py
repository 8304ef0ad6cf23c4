"""Kronecker matrix-free Fisher products against dense per-point kron sums (issue 4 item 4)."""
import numpy as np
import pytest

from selection.firal.dense import dense_fisher, dense_quad
from selection.firal.kron import block_diag, fisher_matvec, hp_matvec, point_quad, sigma_matvec
from selection.firal.problem import make_problem

from tests.selection.firal_support import kron_fisher, ref_hp, ref_sigma, synth


@pytest.fixture
def small():
    Xp, Pp, Xo, Po, _ = synth(n=120, c=4, d=5, m=7, seed=1)
    z = np.random.default_rng(2).random(len(Xp)) * 0.3
    return Xp, Pp, Xo, Po, z


def test_sigma_matvec_equals_dense_fisher_times_vectors(small):
    Xp, Pp, Xo, Po, z = small
    prob = make_problem(Xp, Pp, Xo, Po, lam=0.7)
    S = ref_sigma(Xo, Po, Xp, Pp, z, 0.7)
    V = np.random.default_rng(3).normal(size=(3, prob.k, prob.d))
    got = sigma_matvec(prob, prob.weights(z), V).reshape(3, -1)
    want = (S @ V.reshape(3, -1).T).T
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_hp_matvec_and_float32(small):
    Xp, Pp, Xo, Po, z = small
    prob = make_problem(Xp, Pp, Xo, Po, lam=1.0, dtype="float32")
    V = np.random.default_rng(4).normal(size=(2, prob.k, prob.d)).astype(np.float32)
    got = hp_matvec(prob, V)
    assert got.dtype == np.float32
    want = (ref_hp(Xp, Pp) @ V.reshape(2, -1).astype(np.float64).T).T
    np.testing.assert_allclose(got.reshape(2, -1), want, rtol=2e-4, atol=2e-5)


def test_matvec_row_chunking_gives_the_same_product(monkeypatch, small):
    Xp, Pp, Xo, Po, z = small
    prob = make_problem(Xp, Pp, Xo, Po, lam=1.0)
    V = np.random.default_rng(5).normal(size=(2, prob.k, prob.d))
    whole = fisher_matvec(prob.X, prob.Q, prob.weights(z), V)
    import selection.firal.kron as kron
    monkeypatch.setattr(kron, "CHUNK_ELEMS", 1)  # 256-row chunks
    Xb = np.tile(prob.X, (3, 1))
    Qb = np.tile(prob.Q, (3, 1))
    wb = np.tile(prob.weights(z), 3)
    np.testing.assert_allclose(fisher_matvec(Xb, Qb, wb, V), 3 * whole, rtol=1e-10)


def test_dense_fisher_block_diag_and_point_quad_match_definitions(small):
    Xp, Pp, Xo, Po, z = small
    prob = make_problem(Xp, Pp, None, None, lam=1.0)
    S = ref_sigma(Xo[:0], Po[:0], Xp, Pp, z, 0.0)
    np.testing.assert_allclose(dense_fisher(prob.X, prob.Q, z), S, atol=1e-10)
    D = block_diag(prob.X, prob.Q, z)
    d = prob.d
    for a in range(prob.k):
        np.testing.assert_allclose(D[a], S[a * d:(a + 1) * d, a * d:(a + 1) * d], atol=1e-10)
    rng = np.random.default_rng(6)
    A = rng.normal(size=(4, prob.k, d))
    B = rng.normal(size=(4, prob.k, d))
    want = np.array([np.mean([A[j].ravel() @ kron_fisher(x, p) @ B[j].ravel() for j in range(4)])
                     for x, p in zip(Xp, Pp)])
    np.testing.assert_allclose(point_quad(prob.X, prob.Q, A, B), want, rtol=1e-9, atol=1e-12)
    M = rng.normal(size=(prob.p, prob.p))
    M = M + M.T
    want = np.array([np.trace(M @ kron_fisher(x, p)) for x, p in zip(Xp, Pp)])
    np.testing.assert_allclose(dense_quad(prob.X, prob.Q, [M])[0], want, rtol=1e-9, atol=1e-9)


def test_intercept_false_uses_bare_features(small):
    Xp, Pp, *_ = small
    prob = make_problem(Xp, Pp, lam=1.0, intercept=False)
    assert prob.d == Xp.shape[1] and prob.p == (Pp.shape[1] - 1) * Xp.shape[1]
