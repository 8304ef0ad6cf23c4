"""Approx-FIRAL over MPI ranks (issue 17): under ``mpirun -n 2`` and ``-n 3`` (CPU) the
sharded products equal the dense reference, RELAX follows the single-process run, and the
batch is the single-process ``firal`` batch with the same seed.

Needs OpenMPI's mpirun and mpi4py: skipped with the reason when either is missing, a failure
under LOUPE_REQUIRE_SERVICES=1 (CI installs both).
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from selection import make_strategy
from selection.firal.approx import ApproxOracle
from selection.firal.hutchinson import factored_probes
from selection.firal.mpi import MPIRunError, mpi_available, mpirun_command, run_firal_mpi, threads_per_rank
from selection.firal.problem import make_problem
from selection.firal.relax import mirror_descent

from tests.selection.firal_support import ref_fir, ref_hp, ref_sigma, synth

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_REASON = mpi_available()
if _REASON and os.environ.get("LOUPE_REQUIRE_SERVICES") == "1":
    raise RuntimeError(f"LOUPE_REQUIRE_SERVICES=1 but MPI is unavailable: {_REASON}")
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"MPI tests: {_REASON}")


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.parametrize("ranks", [2, 3])
def test_sharded_products_and_relax_match_one_process(tmp_path, ranks):
    out = tmp_path / "res.npz"
    cmd = mpirun_command(ranks, [])[:-3] + [sys.executable, os.path.join(ROOT, "tests", "selection",
                                                                        "mpi_products.py"), str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=_env(), cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    res = np.load(out)
    Xp, Pp, Xo, Po, _ = synth(n=500, c=4, d=5, m=8, seed=7)
    z_all = np.random.default_rng(1).random(len(Xp)) + 0.1
    V = np.random.default_rng(2).normal(size=(3, 3, 6))
    # the products against the dense np.kron reference
    S = ref_sigma(Xo, Po, Xp, Pp, z_all, 0.5)
    want = (S @ V.reshape(3, -1).T).T.reshape(V.shape)
    np.testing.assert_allclose(res["sigma"], want, rtol=1e-10, atol=1e-10)
    Hp = ref_hp(Xp, Pp)
    np.testing.assert_allclose(res["hp"], (Hp @ V.reshape(3, -1).T).T.reshape(V.shape),
                               rtol=1e-10, atol=1e-12)
    # probes: the same signs per row as one process
    prob1 = make_problem(Xp, Pp, Xo, Po, lam=0.5)
    np.testing.assert_allclose(res["probes"], factored_probes(prob1, 4, np.random.default_rng(3)),
                               rtol=1e-10, atol=1e-12)
    # RELAX (sampled preconditioner, resampled probes): objective path and z as one process
    oracle = ApproxOracle(prob1, probes=6, rng=np.random.default_rng(4), resample=True,
                          cg_rtol=1e-8, precond_rows=200)
    z1, info1 = mirror_descent(oracle, 500, 10, xp=np, dtype=np.float64, iters=8, step=2.0,
                               step_rule="normalized", tol=0, average=True)
    np.testing.assert_allclose(res["objective"], info1["history"], rtol=1e-6)
    np.testing.assert_allclose(res["z"], z1, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("ranks", [2, 3])
def test_mpi_batch_matches_single_process_firal(ranks):
    Xp, Pp, Xo, Po, yo = synth(n=1500, c=5, d=6, m=10, seed=3)
    yo = np.arange(len(Xo)) % 5          # every class seen: no cold-start picks
    params = {"dtype": "float64", "round_candidates": 150, "round_mass": 1.0, "lam": 1.0}
    one = make_strategy("firal", params).select(Xp, Pp, X_labeled=Xo, probs_labeled=Po,
                                                y_labeled=yo, batch_size=10, random_state=5)
    idx, info = run_firal_mpi(Xp, Pp, Xo, Po, lam=1.0, b=10, ranks=ranks, params=params, seed=5,
                              timeout=240, threads=1 if ranks == 3 else None)
    assert info["ranks"] == ranks and info["round_candidates"] == 150
    # every rank holds its BLAS to its share of the cores (never ranks x cores threads)
    assert info["blas_threads"] == [1 if ranks == 3 else threads_per_rank(2)]
    if sorted(idx.tolist()) != sorted(one.indices.tolist()):   # float sum order may differ
        f1 = ref_fir(Xo, Po, Xp, Pp, one.indices, 1.0)
        fk = ref_fir(Xo, Po, Xp, Pp, idx, 1.0)
        assert abs(fk / f1 - 1) < 0.005, (f1, fk)
    else:
        assert idx.tolist() == one.indices.tolist()      # same picks in the same order


def test_a_failing_rank_fails_the_job_with_its_reason():
    Xp, Pp, Xo, Po, _ = synth(n=60, c=3, d=4, m=6, seed=1)
    with pytest.raises(MPIRunError, match="dtype"):
        run_firal_mpi(Xp, Pp, Xo, Po, lam=1.0, b=5, ranks=2, params={"dtype": "float16"},
                      timeout=120)


def test_the_strategy_runs_over_ranks_when_the_context_asks():
    from selection import SelectionContext

    Xp, Pp, Xo, Po, _ = synth(n=800, c=4, d=5, m=8, seed=2)
    yo = np.arange(len(Xo)) % 4
    params = {"dtype": "float64", "round_candidates": 100}
    strat = make_strategy("firal", params)
    one = strat.select(Xp, Pp, X_labeled=Xo, probs_labeled=Po, y_labeled=yo, batch_size=8,
                       random_state=1, context=SelectionContext(l2=2.0))
    two = strat.select(Xp, Pp, X_labeled=Xo, probs_labeled=Po, y_labeled=yo, batch_size=8,
                       random_state=1, context=SelectionContext(l2=2.0, ranks=2))
    assert one.info.get("ranks") == 1 and two.info["ranks"] == 2 and two.info["lam"] == 2.0
    assert len(set(two.indices.tolist())) == 8
    f1 = ref_fir(Xo, Po, Xp, Pp, one.indices, 2.0)
    f2 = ref_fir(Xo, Po, Xp, Pp, two.indices, 2.0)
    rand = np.mean([ref_fir(Xo, Po, Xp, Pp, r.choice(800, 8, replace=False), 2.0)
                    for r in map(np.random.default_rng, range(3))])
    # both are FIRAL batches of one problem (the probe seeds differ): close, and better than random
    assert abs(f2 / f1 - 1) < 0.05 and f2 < rand, (f1, f2, rand)


def test_bench_ranks_prints_one_row_per_rank_count(capsys):
    from selection.firal.bench import main

    assert main(["--ranks", "1", "2", "--n", "600", "--c", "3", "--d", "4", "--b", "5"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| 1 ") or ln.startswith("| 2 ")]
    assert len(rows) == 2, rows
    cells = [r.strip("|").split("|") for r in rows]
    assert cells[0][4].strip() == "1.00x" and cells[0][-1].strip() == "yes"
    assert re.fullmatch(r"yes|[0-5]/5", cells[1][-1].strip()), cells[1]
