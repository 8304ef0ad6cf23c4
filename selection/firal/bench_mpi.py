"""``python -m selection bench firal --ranks 1 2 ...``: strong scaling of Approx-FIRAL over
MPI ranks (:mod:`selection.firal.mpi`).

One synthetic problem (the ``bench firal`` data) is written once; for each rank count the
``firal-mpi`` job runs ``--repeats`` times through ``mpirun`` (1 rank too, so every row pays
the same start-up) with ``--threads`` BLAS threads per rank (default 1: K ranks use K cores).
Rank 0's timings are shown: RELAX and ROUND wall seconds, and the part of each spent in
collectives (which includes waiting for the slowest rank), the job's wall time including
start-up and reading the problem, the speed-up of RELAX+ROUND over the first rank count, and
whether the batch equals the first rank count's.  Rank 0's CPU seconds (user + system),
with the part spent inside collectives (polling while it waits), show the work per rank apart
from waiting for a core: on a shared machine the wall time includes the time the rank was
runnable but not running.  "work CPU ratio" is the first row's rank-0 CPU outside collectives
over this row's: the speed-up the split of the work allows on idle cores (it leaves out the
latency of the collectives themselves, microseconds each on one host).

Example::

    python -m selection bench firal --ranks 1 2 --n 100000 --c 10 --d 64 --b 100
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

def main(argv: list[str] | None = None) -> int:

    from .bench import make_data  # noqa: PLC0415
    from .mpi import MPIRunError, run_firal_mpi  # noqa: PLC0415

    ap = argparse.ArgumentParser(prog="python -m selection bench firal --ranks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, nargs="+", required=True, help="MPI rank counts")
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--c", type=int, default=10)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--b", type=int, default=100)
    ap.add_argument("--m", type=int, default=None, help="labeled points (default 2c)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="runs per rank count (median shown)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads per rank (every rank count, "
                    "the 1-rank baseline too, so K ranks use K cores)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--params", default="{}", help="JSON parameters of the 'firal' strategy")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json", default=None, help="write raw rows here")
    args = ap.parse_args(argv)
    m = args.m or 2 * args.c
    Xp, Pp, Xo, Po, _ = make_data(args.n, args.c, args.d, m, args.seed, "float32")
    params = json.loads(args.params)
    print(f"n={args.n} c={args.c} d={args.d} b={args.b} m={m}, {args.threads} BLAS thread(s) per "
          f"rank, device {args.device}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}")
    head = ("| ranks | RELAX s (comm s) | ROUND s (comm s) | RELAX+ROUND s | speed-up | job wall s "
            "| rank-0 CPU s (in collectives) | work CPU ratio | BLAS threads/rank | collectives | CG its "
            "| same batch as first |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1), flush=True)
    rows, first = [], None
    with tempfile.TemporaryDirectory(prefix="loupe-bench-mpi-") as tmp:
        for k in args.ranks:
            runs = []
            for _ in range(args.repeats):
                try:
                    idx, info = run_firal_mpi(Xp, Pp, Xo, Po, lam=1.0, b=args.b, ranks=k,
                                              params=params, seed=args.seed, device=args.device,
                                              timeout=args.timeout, workdir=tmp, threads=args.threads)
                except MPIRunError as exc:
                    print(f"| {k} | failed: {str(exc)[:200]} |" + " |" * 10, flush=True)
                    break
                info["indices"] = idx.tolist()
                runs.append(info)
            if not runs:
                continue
            r = sorted(runs, key=lambda x: x["relax_seconds"] + x["round_seconds"])[len(runs) // 2]
            core = r["relax_seconds"] + r["round_seconds"]
            work = r["rank0_cpu_seconds"] - r["rank0_comm_cpu_seconds"]
            if first is None:
                first = (core, r["indices"], work)
            same = "yes" if r["indices"] == first[1] else (
                f"{len(set(r['indices']) & set(first[1]))}/{args.b}")
            print(f"| {k} | {r['relax_seconds']:.2f} ({r['comm_relax_seconds']:.2f}) | "
                  f"{r['round_seconds']:.2f} ({r['comm_round_seconds']:.2f}) | {core:.2f} | "
                  f"{first[0] / core:.2f}x | {r['mpi_wall_seconds']:.2f} | "
                  f"{r['rank0_cpu_seconds']:.2f} ({r['rank0_comm_cpu_seconds']:.2f}) | "
                  f"{first[2] / work:.2f}x | {','.join(map(str, r['blas_threads']))} | "
                  f"{r['collectives']} | {r['cg_iterations_total']} | {same} |", flush=True)
            rows.append({"ranks": k, "runs": runs})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1, default=float)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
