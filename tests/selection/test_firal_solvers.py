"""PCG, block-Jacobi and the Hutchinson estimators against dense references (issue 4 item 4)."""
import numpy as np
import pytest

from selection.firal.approx import ApproxOracle
from selection.firal.hutchinson import gamma_sqrt_apply
from selection.firal.kron import block_diag, sigma_matvec
from selection.firal.pcg import BlockJacobi, pcg
from selection.firal.problem import make_problem

from tests.selection.firal_support import ref_hp, ref_sigma, synth


def _setup(seed=0, n=150, c=4, d=5):
    Xp, Pp, Xo, Po, _ = synth(n=n, c=c, d=d, m=6, seed=seed)
    z = np.random.default_rng(seed + 10).random(n) * 10 / n
    return Xp, Pp, Xo, Po, z


def test_pcg_matches_dense_solve_for_every_right_hand_side():
    Xp, Pp, Xo, Po, z = _setup()
    prob = make_problem(Xp, Pp, Xo, Po, lam=0.5)
    S = ref_sigma(Xo, Po, Xp, Pp, z, 0.5)
    w = prob.weights(z)
    B = np.random.default_rng(1).normal(size=(5, prob.k, prob.d))
    B[3] *= 1e-3  # columns of very different size converge on their own schedule
    D = block_diag(prob.X, prob.Q, w) + 0.5 * np.eye(prob.d)
    X, info = pcg(lambda V: sigma_matvec(prob, w, V), B, BlockJacobi.from_blocks(D),
                  rtol=1e-11, maxiter=500)
    assert info["converged"]
    want = np.linalg.solve(S, B.reshape(5, -1).T).T
    np.testing.assert_allclose(X.reshape(5, -1), want, rtol=1e-8, atol=1e-10)
    _, plain = pcg(lambda V: sigma_matvec(prob, w, V), B, None, rtol=1e-11, maxiter=500)
    assert info["iterations"] <= plain["iterations"]


def test_block_jacobi_applies_the_inverse_of_the_diagonal_blocks():
    rng = np.random.default_rng(2)
    G = rng.normal(size=(3, 4, 4))
    D = G @ G.transpose(0, 2, 1) + np.eye(4)
    R = rng.normal(size=(2, 3, 4))
    got = BlockJacobi.from_blocks(D)(R)
    for a in range(3):
        np.testing.assert_allclose(got[:, a], np.linalg.solve(D[a], R[:, a].T).T, rtol=1e-10)


def test_gamma_factor_squares_to_gamma():
    rng = np.random.default_rng(3)
    P = rng.dirichlet(np.ones(5), size=4)
    Q, qc = P[:, :4], P[:, 4]
    eye = np.broadcast_to(np.eye(4), (4, 4, 4)).copy()  # L_i applied to the unit vectors
    L = gamma_sqrt_apply(Q, qc, eye).transpose(0, 2, 1)
    for i in range(4):
        np.testing.assert_allclose(L[i] @ L[i].T, np.diag(Q[i]) - np.outer(Q[i], Q[i]), atol=1e-12)


@pytest.mark.parametrize("estimator", ["factored", "two-sided"])
def test_hutchinson_trace_and_gradient_converge_to_exact(estimator):
    Xp, Pp, Xo, Po, z = _setup(seed=4, n=80, c=3, d=3)
    prob = make_problem(Xp, Pp, Xo, Po, lam=1.0)
    S = ref_sigma(Xo, Po, Xp, Pp, z, 1.0)
    Hp = ref_hp(Xp, Pp)
    Si = np.linalg.inv(S)
    f_ex = np.trace(Si @ Hp)
    from tests.selection.firal_support import kron_fisher
    g_ex = -np.array([np.trace(Si @ Hp @ Si @ kron_fisher(x, p)) for x, p in zip(Xp, Pp)])
    errs = []
    for s in (8, 128, 2048):
        fe, ge = [], []
        for seed in range(3):
            o = ApproxOracle(prob, probes=s, rng=np.random.default_rng(seed), estimator=estimator,
                             cg_rtol=1e-10, cg_maxiter=500)
            f, g = o(z)
            fe.append(abs(f - f_ex) / f_ex)
            ge.append(np.linalg.norm(g - g_ex) / np.linalg.norm(g_ex))
        errs.append((np.mean(fe), np.mean(ge)))
    (f8, g8), (f128, g128), (f2k, g2k) = errs
    assert g2k < g128 < g8 and f2k < f8
    assert f2k < 0.02 and g2k < 0.05
