"""RELAX (mirror descent) and ROUND (FTRL, dense and block-diagonal) (issue 4 item 4)."""
import numpy as np

from selection.firal.approx import ApproxOracle
from selection.firal.exact import ExactOracle
from selection.firal.problem import make_problem
from selection.firal.relax import mirror_descent
from selection.firal.round import round_blockdiag, round_dense, solve_nu

from tests.selection.firal_support import kron_fisher, ref_sigma, synth


def test_mirror_descent_finds_the_closed_form_minimiser():
    # min sum a_i / z_i on {z >= 0, sum z = b}: z_i = b sqrt(a_i) / sum sqrt(a)  (Lagrange).
    a = np.random.default_rng(0).random(50) + 0.1
    oracle = lambda z: (float((a / z).sum()), -a / z ** 2)  # noqa: E731
    z, info = mirror_descent(oracle, 50, 5, xp=np, dtype=np.float64, iters=400, step=1.0,
                             step_rule="adaptive", tol=0)
    want = 5 * np.sqrt(a) / np.sqrt(a).sum()
    np.testing.assert_allclose(z, want, rtol=1e-3)
    assert np.all(np.diff(info["history"]) <= 0)


def test_exact_relax_decreases_the_objective_and_stays_on_the_simplex():
    Xp, Pp, Xo, Po, _ = synth(n=200, c=4, d=4, m=6, seed=1)
    prob = make_problem(Xp, Pp, Xo, Po, lam=1.0)
    oracle = ExactOracle(prob)
    z, info = mirror_descent(oracle, 200, 8, xp=np, dtype=np.float64, iters=40, step=1.0,
                             step_rule="adaptive", tol=0)
    h = info["history"]
    assert np.all(np.diff(h) <= 1e-12) and h[-1] < 0.9 * h[0]
    assert z.min() >= 0 and abs(z.sum() - 8) < 1e-9
    # the reported objective is tr(Sigma_z^-1 H_p) computed from the definition
    S = ref_sigma(Xo, Po, Xp, Pp, z, 1.0)
    Hp = sum(kron_fisher(x, p) for x, p in zip(Xp, Pp)) / len(Xp)
    assert abs(np.trace(np.linalg.solve(S, Hp)) - h[-1]) < 1e-9 * h[-1]


def test_approx_relax_reaches_the_exact_objective_within_a_few_percent():
    gaps = []
    for seed in range(3):
        Xp, Pp, Xo, Po, _ = synth(n=600, c=5, d=6, m=10, seed=seed)
        prob = make_problem(Xp, Pp, Xo, Po, lam=1.0)
        exact = ExactOracle(prob)
        _, ex = mirror_descent(exact, 600, 15, xp=np, dtype=np.float64, iters=60, step=1.0,
                               step_rule="adaptive", tol=0)
        approx = ApproxOracle(prob, probes=10, rng=np.random.default_rng(seed), resample=True,
                              cg_rtol=1e-2)
        za, _ = mirror_descent(approx, 600, 15, xp=np, dtype=np.float64, iters=20, step=2.0,
                               step_rule="normalized", tol=0, average=True)
        gaps.append(exact.objective(za) / ex["objective"] - 1)
    assert max(gaps) < 0.05, gaps
    assert min(gaps) > -1e-6  # the exact optimum is a lower bound


def test_solve_nu_normalises_the_trace():
    rng = np.random.default_rng(2)
    for mu in (np.zeros(7), rng.random(50) * 10 - 0.5, np.array([1e-9, 3.0, 1e4])):
        nu = solve_nu(mu)
        assert nu > -mu.min()
        assert abs(np.sum((nu + mu) ** -2.0) - 1) < 1e-10


def test_blockdiag_round_equals_dense_round_when_the_fisher_is_one_block():
    # c = 2: the Fisher has a single d x d block, so the block-diagonal ROUND is exact and
    # must choose exactly the points the dense ROUND chooses.
    Xp, Pp, Xo, Po, _ = synth(n=150, c=2, d=5, m=4, seed=3)
    prob = make_problem(Xp, Pp, Xo, Po, lam=0.5)
    z = np.random.default_rng(4).dirichlet(np.ones(150)) * 12
    dense, _ = round_dense(prob, z, 12)
    block, _ = round_blockdiag(prob, z, 12)
    np.testing.assert_array_equal(dense, block)
    assert len(set(dense.tolist())) == 12


def test_blockdiag_state_after_rank_one_updates_equals_dense_blocks():
    Xp, Pp, Xo, Po, _ = synth(n=100, c=4, d=3, m=5, seed=5)
    lam, b = 0.8, 7
    prob = make_problem(Xp, Pp, Xo, Po, lam=lam)
    z = np.full(100, b / 100)
    idx, info = round_blockdiag(prob, z, b, eta=3.0, return_state=True)
    Linv, B = info["state"]
    d = prob.d
    Sig = ref_sigma(Xo, Po, Xp, Pp, z, lam)
    zS = np.zeros(100)
    zS[idx] = 1
    SigS = ref_sigma(Xo, Po, Xp, Pp, zS, lam)   # H_o + lam I + sum_{i in S} H_i, dense
    for a in range(prob.k):
        blk = slice(a * d, (a + 1) * d)
        # the whitening inverts the Cholesky factor of Sigma*'s diagonal block
        np.testing.assert_allclose(Linv[a] @ Sig[blk, blk] @ Linv[a].T, np.eye(d), atol=1e-9)
        # b rank-one (+ C/b) updates accumulate to eta * W_a (Sigma_S)_aa W_a^T
        np.testing.assert_allclose(B[a], 3.0 * Linv[a] @ SigS[blk, blk] @ Linv[a].T,
                                   rtol=1e-9, atol=1e-9)


def test_mass_candidates_keeps_the_fewest_top_weights_holding_the_share():
    from selection.firal.round import mass_candidates

    z = np.array([0.5, 5.0, 0.5, 3.0, 1.0])          # sorted: 5, 3, 1, .5, .5 (sum 10)
    assert mass_candidates(z, 1, 0.95, 0) == 4      # 5 + 3 + 1 + .5 = 9.5 >= 9.5
    assert mass_candidates(z, 1, 0.5, 0) == 2       # at least 2b
    assert mass_candidates(z, 1, 0.95, 3) == 3      # the cap wins
    assert mass_candidates(z, 2, 0.9, 0) == 4       # 5 + 3 + 1 = 9 holds 90% (3 points), but 2b = 4
    assert mass_candidates(z, 1, 1.0, 0) == 5


def test_blockdiag_round_with_a_mass_share_and_several_picks_per_step():
    Xp, Pp, Xo, Po, _ = synth(n=200, c=4, d=3, m=5, seed=6)
    prob = make_problem(Xp, Pp, Xo, Po, lam=0.7)
    z = np.random.default_rng(7).dirichlet(np.full(200, 0.3)) * 10
    one, info1 = round_blockdiag(prob, z, 10)
    assert info1["steps"] == 10 and info1["candidates"] == 200
    # the share leaves out the smallest weights, and ROUND picks only from the rest
    cut, info_m = round_blockdiag(prob, z, 10, mass=0.9)
    keep = np.argsort(-z)[:info_m["candidates"]]
    assert 20 <= info_m["candidates"] < 200 and set(cut.tolist()) <= set(keep.tolist())
    # two picks per step: half the steps; the first pick is the same, the second is the
    # step's runner-up, and the batch has no repeats
    two, info2 = round_blockdiag(prob, z, 10, per_step=2)
    assert info2["steps"] == 5 and len(set(two.tolist())) == 10
    assert two[0] == one[0] and info2["gains"][1] <= info2["gains"][0]
