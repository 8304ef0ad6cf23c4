"""Run under mpirun by test_firal_mpi.py: the sharded matrix-free products and the RELAX
objective, written by rank 0 to the .npz named on the command line.

Usage: mpirun -n K python tests/selection/mpi_products.py OUT.npz
"""
import sys

import numpy as np

from selection.firal.approx import ApproxOracle
from selection.firal.comm import MPIComm, shard_bounds
from selection.firal.hutchinson import factored_probes
from selection.firal.kron import hp_matvec, sigma_matvec
from selection.firal.problem import make_problem
from selection.firal.relax import mirror_descent
from tests.selection.firal_support import synth


def main(out):
    comm = MPIComm()
    Xp, Pp, Xo, Po, _ = synth(n=500, c=4, d=5, m=8, seed=7)
    lo, hi = shard_bounds(len(Xp), comm.size, comm.rank)
    z_all = np.random.default_rng(1).random(len(Xp)) + 0.1
    V = np.random.default_rng(2).normal(size=(3, 3, 6))
    lab = (Xo, Po) if comm.rank == 0 else (None, None)
    prob = make_problem(Xp[lo:hi], Pp[lo:hi], *lab, lam=0.5, comm=comm)
    res = {
        "sigma": sigma_matvec(prob, prob.weights(z_all[lo:hi]), V),
        "hp": hp_matvec(prob, V),
        "probes": factored_probes(prob, 4, np.random.default_rng(3)),
    }
    oracle = ApproxOracle(prob, probes=6, rng=np.random.default_rng(4), resample=True,
                          cg_rtol=1e-8, precond_rows=200)
    z, info = mirror_descent(oracle, prob.n_pool, 10, xp=np, dtype=np.float64, iters=8, step=2.0,
                             step_rule="normalized", tol=0, average=True, comm=comm)
    res["z"] = comm.allgather(z)
    res["objective"] = np.asarray(info["history"])
    if comm.rank == 0:
        np.savez(out, **res)


if __name__ == "__main__":
    main(sys.argv[1])
