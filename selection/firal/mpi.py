"""Approx-FIRAL over MPI ranks: ``mpirun -n K python -m selection firal-mpi --problem P.npz
--b B --out idx.npy``, and :func:`run_firal_mpi`, which writes the problem, launches that
command and reads the batch back (what the ``firal`` strategy does when
``SelectionContext.ranks`` > 1).

P.npz holds X_pool (n, d), probs_pool (n, c), optionally X_labeled (m, d) and probs_labeled
(m, c), and lam.  Every rank reads its contiguous block of pool rows (rank 0 also the labeled
rows) and runs :func:`selection.firal.approx.approx_firal` with an :class:`MPIComm`: the same
code as one process, the sums over rows finished with allreduce (:mod:`selection.firal.comm`).
With the same seed and parameters the ranks draw the same probes as one process would, so the
batch matches one process's up to the order of floating-point sums.  Rank 0 writes ``--out``
(int64 pool indices) and, with ``--info``, a JSON of timings (per phase, communication).

Device: ``--device cuda`` gives rank r GPU (local rank mod #GPUs) and CuPy arrays; the
collectives then pass device buffers when the MPI is CUDA-aware and stage through the host
otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from .comm import shard_bounds

KEYS = ("X_pool", "probs_pool", "X_labeled", "probs_labeled", "lam")


class MPIRunError(RuntimeError):
    """The MPI job failed (a rank exited non-zero, timed out, or mpirun is missing)."""


def firal_params(params: dict | None) -> dict:
    """The ``firal`` strategy's validated parameters (defaults filled in)."""
    from .. import make_strategy  # noqa: PLC0415

    return dict(make_strategy("firal", dict(params or {})).params_)


THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def threads_per_rank(ranks: int) -> int:
    """BLAS threads for each of ``ranks`` ranks on this host: its cores shared out, at least 1
    (more threads than cores over all ranks only makes them take turns)."""
    return max(1, (os.cpu_count() or 1) // max(1, int(ranks)))


def run_rank(problem: str, b: int, out: str, params: dict | None, seed: int, device: str = "cpu",
             info_path: str | None = None, threads: int | None = None) -> int:
    from threadpoolctl import threadpool_info, threadpool_limits  # noqa: PLC0415 - scikit-learn's dependency

    from .comm import MPIComm  # noqa: PLC0415

    comm = MPIComm()
    threads = threads or threads_per_rank(comm.size)
    with threadpool_limits(limits=threads):   # whatever the environment said: K ranks x threads <= cores
        blas = sorted({int(t["num_threads"]) for t in threadpool_info() if t.get("user_api") == "blas"})
        return _run_rank(comm, problem, b, out, params, seed, device, info_path, blas)


def _run_rank(comm, problem, b, out, params, seed, device, info_path, blas_threads) -> int:
    from .. import backend  # noqa: PLC0415
    from .approx import approx_firal  # noqa: PLC0415
    from .problem import make_problem  # noqa: PLC0415

    p = firal_params(params)
    dev = backend.resolve_device(device)
    if dev == "cuda":
        import cupy  # noqa: PLC0415

        local = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", comm.rank))
        cupy.cuda.Device(local % cupy.cuda.runtime.getDeviceCount()).use()
    t0 = time.perf_counter()
    with np.load(problem, allow_pickle=False) as z:
        n = z["probs_pool"].shape[0]
        lo, hi = shard_bounds(n, comm.size, comm.rank)
        Xp, Pp = z["X_pool"][lo:hi], z["probs_pool"][lo:hi]
        Xo = Po = None
        if comm.rank == 0 and "X_labeled" in z.files and "probs_labeled" in z.files:
            Xo, Po = z["X_labeled"], z["probs_labeled"]
        lam = float(p["lam"]) if p["lam"] is not None else float(z["lam"])

    def move(a):
        return None if a is None else backend.asarray(a, dev)

    prob = make_problem(move(Xp), move(Pp), move(Xo), move(Po), lam=lam,
                        intercept=p["intercept"], dtype=p["dtype"], comm=comm)
    t1 = time.perf_counter()
    cpu0 = time.process_time()
    idx, _z, info = approx_firal(
        prob, b, probes=p["probes"], estimator=p["estimator"], resample=p["probe_resample"],
        cg_rtol=p["cg_rtol"], cg_maxiter=p["cg_maxiter"], relax_iters=p["relax_iters"],
        step=p["step_size"], step_rule=p["step_rule"], relax_tol=p["relax_tol"],
        eta=p["round_eta"], round_candidates=p["round_candidates"],
        round_mass=p.get("round_mass", 1.0), round_steps=p.get("round_steps", 0),
        rng=np.random.default_rng(seed))
    if comm.rank == 0:
        np.save(out, np.asarray(idx, dtype=np.int64))
        if info_path:
            keep = {k: v for k, v in info.items() if k not in {"relax_history", "cg_iterations"}}
            keep.update(load_seconds=t1 - t0, ranks=comm.size, n_local=int(hi - lo),
                        rank0_cpu_seconds=time.process_time() - cpu0, collectives=comm.calls,
                        rank0_comm_cpu_seconds=comm.cpu_seconds,
                        blas_threads=blas_threads, cuda_aware=comm.cuda_aware, device=dev)
            with open(info_path, "w") as fh:
                json.dump(keep, fh, default=float)
    return 0


def mpirun_command(ranks: int, argv: list[str], *, python: str | None = None) -> list[str]:
    """The mpirun command line for ``python -m selection <argv>`` on ``ranks`` ranks.

    ``--oversubscribe``: more ranks than detected slots is allowed (a 2-core box, or a GPU
    worker whose container reports few cores); ``--bind-to none`` leaves the OS to place
    ranks; ``mpi_yield_when_idle``: a rank waiting in a collective yields its core instead of
    spinning (the collectives here are few and large, so the latency costs nothing, and on a
    shared or oversubscribed host a spinning rank steals the core its peer needs);
    ``--allow-run-as-root`` only when running as root (containers).  ``LOUPE_MPIRUN``
    replaces "mpirun" (e.g. a full path or an srun wrapper), ``LOUPE_MPIRUN_ARGS`` adds flags.
    """
    exe = os.environ.get("LOUPE_MPIRUN") or shutil.which("mpirun")
    if not exe:
        raise MPIRunError("mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev, "
                          "then pip install mpi4py): selection_ranks > 1 needs it")
    cmd = [exe, "-n", str(int(ranks)), "--oversubscribe", "--bind-to", "none",
           "--mca", "mpi_yield_when_idle", "1"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    cmd += os.environ.get("LOUPE_MPIRUN_ARGS", "").split()
    return cmd + [python or sys.executable, "-m", "selection"] + list(argv)


def mpi_available() -> str | None:
    """None when mpirun and mpi4py are both present, else the reason they are not."""
    if not (os.environ.get("LOUPE_MPIRUN") or shutil.which("mpirun")):
        return "mpirun not found (Debian: apt-get install openmpi-bin libopenmpi-dev)"
    try:
        import mpi4py  # noqa: F401, PLC0415
    except ImportError:
        return "mpi4py is not installed (pip install -r requirements-mpi.txt)"
    return None


def run_firal_mpi(X_pool, probs_pool, X_labeled, probs_labeled, *, lam: float, b: int, ranks: int,
                  params: dict | None = None, seed: int = 0, device: str = "cpu",
                  timeout: float = 3600.0, workdir: str | None = None,
                  threads: int | None = None) -> tuple[np.ndarray, dict]:
    """Run ``firal-mpi`` on ``ranks`` ranks in a subprocess; returns (pool indices, info).

    ``threads``: BLAS threads per rank (default: this host's cores shared out over the ranks,
    :func:`threads_per_rank`); every rank is held to it, so ranks never oversubscribe the cores.

    Raises :class:`MPIRunError` naming the cause when mpirun is missing, a rank fails (its
    last stderr lines are in the message), the job runs past ``timeout`` seconds (the whole
    job is killed), or the output is missing or malformed.
    """
    from ..backend import to_numpy  # noqa: PLC0415

    reason = mpi_available()
    if reason:
        raise MPIRunError(reason)
    with tempfile.TemporaryDirectory(prefix="loupe-firal-mpi-", dir=workdir) as tmp:
        prob_path = os.path.join(tmp, "problem.npz")
        arrays = {"X_pool": to_numpy(X_pool), "probs_pool": to_numpy(probs_pool),
                  "lam": np.float64(lam)}
        if X_labeled is not None and probs_labeled is not None and len(X_labeled):
            arrays.update(X_labeled=to_numpy(X_labeled), probs_labeled=to_numpy(probs_labeled))
        np.savez(prob_path, **arrays)
        out, info_path = os.path.join(tmp, "idx.npy"), os.path.join(tmp, "info.json")
        argv = ["firal-mpi", "--problem", prob_path, "--b", str(int(b)), "--out", out,
                "--info", info_path, "--seed", str(int(seed)), "--device", device,
                "--params", json.dumps(params or {})]
        threads = int(threads or threads_per_rank(ranks))
        argv += ["--threads", str(threads)]
        cmd = mpirun_command(ranks, argv)
        env = dict(os.environ)
        env.update({var: str(threads) for var in THREAD_VARS})   # before NumPy loads in the rank
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, start_new_session=True)
        try:
            _stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)   # mpirun and every rank it started
            proc.communicate()
            raise MPIRunError(f"the MPI job ({ranks} ranks) ran past its {timeout:.0f} s timeout "
                              "and was stopped") from None
        if proc.returncode != 0:
            lines = (stderr or "").strip().splitlines()
            ours = [ln for ln in lines if ln.startswith("firal-mpi:")]
            tail = "; ".join(dict.fromkeys(ours[:3])) if ours else "\n".join(lines[-6:])
            raise MPIRunError(f"the MPI job ({ranks} ranks) failed with exit status "
                              f"{proc.returncode}: {tail}")
        try:
            idx = np.load(out, allow_pickle=False)
            with open(info_path) as fh:
                info = json.load(fh)
        except (OSError, ValueError) as exc:
            raise MPIRunError(f"the MPI job ({ranks} ranks) wrote no readable result: {exc}") from exc
        if idx.ndim != 1 or len(idx) != b or len(set(idx.tolist())) != b or (
                len(idx) and (idx.min() < 0 or idx.max() >= len(probs_pool))):
            raise MPIRunError(f"the MPI job ({ranks} ranks) returned an invalid batch")
        info["mpi_wall_seconds"] = time.perf_counter() - t0
        return idx.astype(np.int64), info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mpirun -n K python -m selection firal-mpi",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problem", required=True, help=".npz with X_pool, probs_pool, "
                    "[X_labeled, probs_labeled], lam")
    ap.add_argument("--b", type=int, required=True, help="batch size")
    ap.add_argument("--out", required=True, help="where rank 0 writes the int64 indices (.npy)")
    ap.add_argument("--info", default=None, help="where rank 0 writes timings (JSON)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    ap.add_argument("--params", default="{}", help="JSON parameters of the 'firal' strategy")
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS threads per rank (default: the host's cores / ranks, at least 1)")
    args = ap.parse_args(argv)
    try:
        params = json.loads(args.params)
        if not isinstance(params, dict):
            raise ValueError("--params must be a JSON object")
        return run_rank(args.problem, args.b, args.out, params, args.seed, args.device, args.info,
                        threads=args.threads)
    except Exception as exc:  # noqa: BLE001 - a failing rank must take the job down, not hang the others
        import traceback  # noqa: PLC0415

        traceback.print_exc()
        print(f"firal-mpi: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        try:
            from mpi4py import MPI  # noqa: PLC0415

            MPI.COMM_WORLD.Abort(1)
        except ImportError:
            pass
        return 1
