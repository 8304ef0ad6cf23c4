"""``python -m selection bench firal``: time and peak memory of ``firal_exact`` vs ``firal``.

Wall time and the process's CPU time (user + system) are both shown: on a shared machine the
wall time includes waiting for a core, while with one BLAS thread (``--threads 1``) the CPU
time is what the run costs.  Every case runs in its own subprocess so that its peak resident memory (``ru_maxrss``) and
its traced peak allocation (``tracemalloc``, which sees NumPy's buffers) belong to that case
alone.  Prints a Markdown table; ``--json`` also writes the raw rows.

Example::

    python -m selection bench firal --n 2000 10000 --c 10 --d 64 --b 50 --strategies firal firal_exact
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time

from ..bench import write_json


def make_data(n: int, c: int, d: int, m: int, seed: int, dtype: str):
    """Synthetic embeddings: c Gaussian clusters in d dims, probabilities from a softmax of a
    random linear model (not degenerate, not uniform), m labeled points covering every class."""
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(c, d)) * (3.0 / np.sqrt(d))
    y = np.concatenate([np.arange(m) % c, rng.integers(0, c, n)])
    X = (centers[y] + rng.normal(size=(n + m, d)) / np.sqrt(d)).astype(dtype)
    W = centers * 2.0 + rng.normal(size=(c, d)) * 0.3
    L = X.astype(np.float64) @ W.T
    L *= 2.0 / L.std()  # moderately confident: the Fisher is not dominated by lambda
    P = np.exp(L - L.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    return X[m:], P[m:], X[:m], P[:m], y[:m]


def batch_fir(spec: dict, batches: dict) -> dict:
    """Exact FIR tr(Sigma_S^-1 H_p) (dense, float64) of each batch, and of 5 random batches."""
    import numpy as np  # noqa: PLC0415

    from .dense import dense_fisher  # noqa: PLC0415
    from .problem import make_problem  # noqa: PLC0415

    Xp, Pp, Xo, Po, _ = make_data(spec["n"], spec["c"], spec["d"], spec["m"], spec["seed"], "float64")
    prob = make_problem(Xp, Pp, Xo, Po, lam=1.0)
    Hp = dense_fisher(prob.Xp, prob.Qp) / prob.n_pool
    base = dense_fisher(prob.Xo, prob.Qo) + np.eye(prob.p)

    def fir(S):
        S = np.asarray(S)
        return float(np.trace(np.linalg.solve(base + dense_fisher(prob.Xp[S], prob.Qp[S]), Hp)))

    out = {k: fir(v) for k, v in batches.items()}
    rng = np.random.default_rng(spec["seed"])
    out["random"] = float(np.mean([fir(rng.choice(spec["n"], spec["b"], replace=False))
                                   for _ in range(5)]))
    return out


def _worker(spec: dict) -> dict:
    import resource  # noqa: PLC0415
    import tracemalloc  # noqa: PLC0415

    from selection import SelectionContext, make_strategy  # noqa: PLC0415

    Xp, Pp, Xo, Po, yo = make_data(spec["n"], spec["c"], spec["d"], spec["m"], spec["seed"],
                                   spec["dtype"])
    with open("/proc/self/statm") as fh:
        rss_before = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    params = dict(spec.get("params") or {})
    if spec["strategy"] == "firal":
        params.setdefault("dtype", spec["dtype"])
    else:
        params.setdefault("memory_budget_mb", spec["budget_mb"])
    strat = make_strategy(spec["strategy"], params)
    if spec.get("trace"):
        tracemalloc.start()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    try:
        sel = strat.select(Xp, Pp, X_labeled=Xo, probs_labeled=Po, y_labeled=yo,
                           batch_size=spec["b"], random_state=spec["seed"],
                           context=SelectionContext(l2=1.0, device=spec["device"]))
    except ValueError as exc:  # firal_exact over budget
        return {"status": "refused", "error": str(exc)}
    seconds = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    traced = tracemalloc.get_traced_memory()[1] if spec.get("trace") else None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    info = sel.info
    its = info.get("cg_iterations") or []
    return {
        "status": "ok", "seconds": seconds, "cpu_seconds": cpu,
        "relax_seconds": info.get("relax_seconds"), "round_seconds": info.get("round_seconds"),
        "oracle_calls": info.get("relax_oracle_calls"),
        "cg_total": info.get("cg_iterations_total"),
        "cg_mean": (sum(its) / len(its)) if its else None, "cg_max": max(its) if its else None,
        "cg_unconverged": info.get("cg_unconverged_solves"),
        "peak_rss_mb": peak / 2**20, "rss_before_mb": rss_before / 2**20,
        "traced_peak_mb": None if traced is None else traced / 2**20,
        "indices": sel.indices.tolist(),
    }


def _run_case(spec: dict, timeout: float, threads: int | None) -> dict:
    env = dict(os.environ)
    if threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "selection.firal.bench", "--worker", json.dumps(spec)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout>{timeout:.0f}s"}
    if out.returncode != 0:
        return {"status": "error", "error": out.stderr.strip().splitlines()[-1:] or [""]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fmt(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def main(argv: list[str] | None = None) -> int:
    if argv is not None and any(a == "--ranks" or a.startswith("--ranks=") for a in argv):
        from .bench_mpi import main as ranks_main  # noqa: PLC0415 - strong scaling over MPI ranks

        return ranks_main(argv)
    ap = argparse.ArgumentParser(prog="python -m selection bench firal", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[2000, 10000], help="pool sizes")
    ap.add_argument("--c", type=int, nargs="+", default=[10], help="numbers of classes")
    ap.add_argument("--d", type=int, nargs="+", default=[64], help="embedding dimensions")
    ap.add_argument("--b", type=int, nargs="+", default=[50], help="batch sizes")
    ap.add_argument("--m", type=int, default=None, help="labeled points (default 2c)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--strategies", nargs="+", default=["firal", "firal_exact"],
                    choices=("firal", "firal_exact"))
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs per case; the median run is shown, with [min-max] wall seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=600, help="seconds per run")
    ap.add_argument("--budget-mb", type=int, default=2048, help="firal_exact memory budget")
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads in the child")
    ap.add_argument("--trace", action="store_true", help="also measure tracemalloc peaks")
    ap.add_argument("--params", default="{}", help="JSON parameters for firal")
    ap.add_argument("--json", default=None, help="write raw rows here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0

    rows = []
    head = ("| n | c | d | b | strategy | total s (CPU s) | RELAX s | ROUND s | RELAX calls | CG its "
            "total (mean/max per solve) | peak RSS MiB (before) | traced MiB | exact/approx time "
            "| same batch | FIR firal / exact / random |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for n, c, d, b in itertools.product(args.n, args.c, args.d, args.b):
        res = {}
        for strat in args.strategies:
            spec = {"n": n, "c": c, "d": d, "b": b, "m": args.m or 2 * c, "seed": args.seed,
                    "dtype": args.dtype, "strategy": strat, "device": args.device,
                    "budget_mb": args.budget_mb, "trace": args.trace,
                    "params": json.loads(args.params) if strat == "firal" else {}}
            runs = [_run_case(spec, args.timeout, args.threads) for _ in range(args.repeats)]
            ok = [r for r in runs if r["status"] == "ok"]
            r = sorted(ok, key=lambda r: r["seconds"])[len(ok) // 2] if ok else runs[0]
            r["times"] = [x["seconds"] for x in ok]
            res[strat] = r
            rows.append({**spec, **r})
        for strat, r in res.items():
            ratio = same = firs = "-"
            if strat == "firal_exact" and r["status"] == "ok" and res.get("firal", {}).get("status") == "ok":
                ratio = f"{r['seconds'] / res['firal']['seconds']:.1f}x"
                same = f"{len(set(r['indices']) & set(res['firal']['indices']))}/{b}"
                fr = batch_fir(spec, {"firal": res["firal"]["indices"], "exact": r["indices"]})
                rows[-1]["fir"] = fr
                firs = f"{fr['firal']:.4g} / {fr['exact']:.4g} / {fr['random']:.4g}"
            if r["status"] != "ok":
                msg = r["status"] + (f": {r.get('error')}" if r.get("error") else "")
                print(f"| {n} | {c} | {d} | {b} | {strat} | {msg[:160]} |" + " |" * 10)
                continue
            cg = "-" if r["cg_total"] is None else (
                f"{r['cg_total']} ({r['cg_mean']:.1f}/{r['cg_max']})")
            spread = (f" [{min(r['times']):.2f}-{max(r['times']):.2f}]"
                      if len(r["times"]) > 1 else "")
            print(f"| {n} | {c} | {d} | {b} | {strat} | {_fmt(r['seconds'])} "
                  f"({_fmt(r['cpu_seconds'])}){spread} | "
                  f"{_fmt(r['relax_seconds'])} | {_fmt(r['round_seconds'])} | "
                  f"{_fmt(r['oracle_calls'])} | {cg} | {r['peak_rss_mb']:.0f} "
                  f"({r['rss_before_mb']:.0f}) | {_fmt(r['traced_peak_mb'], 0)} | {ratio} | {same} | {firs} |",
                  flush=True)
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
