"""``python -m selection bench``: time and peak memory per strategy as n, c, d and b grow.

Every case runs in its own subprocess, so its numbers belong to it alone: ``seconds`` is the
wall time of ``select`` (inputs already built, after a warm-up call on a 500-row slice),
``traced_MiB`` the peak of memory allocated during a second ``select`` as seen by
``tracemalloc`` (NumPy's buffers included), ``rss_GiB`` the
process's peak resident set (``ru_maxrss``: inputs + interpreter + work).  Inputs: Gaussian
clusters as float32 embeddings, float64 class probabilities from a softmax of random logits
(as the head returns them), and ``m`` labeled points covering every class.

Cluster-Margin is timed twice per case: the first call clusters the whole set
(``cluster_s``) and selects; the second call finds the clustering in memory, so its time is
the per-round step (``round_s``; what a worker pays each round after the first).  A third,
untimed call clusters again under tracemalloc for ``traced_MiB``.

The machine's load average is printed with the table: on a shared 2-core machine a loaded
moment can multiply BLAS-heavy timings several times (OpenBLAS threads competing).

``python -m selection bench firal ...`` hands over to FIRAL's own benchmark.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time

DEFAULT_STRATEGIES = ("random", "least_confidence", "margin", "entropy", "power", "softmax", "softrank",
                      "badge", "coreset", "cluster_margin")
# strategies whose cost grows like n * b (one pass over the pool per pick): large grids are skipped
_QUADRATIC = {"badge", "coreset"}


def make_inputs(n: int, c: int, d: int, m: int, seed: int = 0):
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    n_centers = max(c, 32)
    centers = rng.standard_normal((n_centers, d)).astype(np.float32) * 3
    X = np.empty((n + m, d), dtype=np.float32)
    for s in range(0, n + m, 1 << 16):
        k = min(1 << 16, n + m - s)
        X[s:s + k] = centers[rng.integers(n_centers, size=k)] + rng.standard_normal((k, d), dtype=np.float32)
    P = np.empty((n, c), dtype=np.float64)
    for s in range(0, n, 1 << 16):
        k = min(1 << 16, n - s)
        L = rng.standard_normal((k, c)) * 2.0
        L -= L.max(axis=1, keepdims=True)
        np.exp(L, out=L)
        L /= L.sum(axis=1, keepdims=True)
        P[s:s + k] = L
    y_lab = np.arange(m) % c
    return X[m:], P, X[:m], y_lab


def run_case(spec: dict) -> dict:
    """Inside the child process: build inputs, time ``select`` once (twice for cluster_margin)."""
    import resource  # noqa: PLC0415
    import tracemalloc  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    from . import SelectionContext, make_strategy  # noqa: PLC0415

    X, P, XL, yL = make_inputs(spec["n"], spec["c"], spec["d"], spec["m"])
    strat = make_strategy(spec["strategy"], spec.get("params") or {})
    ctx = SelectionContext(X_all=X, pool_index=None, l2=1.0, embedding_version=f"bench-{spec['n']}-{spec['d']}")
    kw = dict(X_labeled=XL, y_labeled=yL, batch_size=spec["b"], random_state=0, context=ctx)
    out = dict(spec)
    rss_inputs = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    # warm-up on a slice (lazy imports, first-call costs), without the context's clustering
    k = min(len(X), 500)
    strat.select(X[:k], P[:k], **{**kw, "batch_size": min(spec["b"], k // 2), "context": None})
    if spec["strategy"] == "cluster_margin":
        # call 1 clusters and selects, call 2 is a round with the clustering in memory; call 3
        # clusters again under tracemalloc (which slows the many small NumPy allocations of the
        # linkage loop, so it is not timed)
        from .strategies import cluster_margin as cm  # noqa: PLC0415

        t0 = time.perf_counter()
        sel = strat.select(X, P, **kw)
        out["seconds"] = time.perf_counter() - t0
        out["cluster_s"] = sel.info.get("cluster_seconds")
        out["clusters"] = sel.info.get("clustering", {}).get("n_clusters")
        out["path"] = sel.info.get("clustering", {}).get("path")
        t1 = time.perf_counter()
        sel2 = strat.select(X, P, **{**kw, "random_state": 1})
        out["round_s"] = time.perf_counter() - t1
        assert sel2.info["clustering"]["source"] == "memory"
        cm._MEMO.clear()
        tracemalloc.start()
        strat.select(X, P, **kw)
        out["traced_MiB"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    else:
        t0 = time.perf_counter()
        sel = strat.select(X, P, **kw)
        out["seconds"] = time.perf_counter() - t0
        if out["seconds"] < 30:  # a second, traced call for the working memory
            tracemalloc.start()
            strat.select(X, P, **kw)
            out["traced_MiB"] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
    out["rss_GiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out["rss_inputs_GiB"] = rss_inputs
    out["unique"] = bool(len(np.unique(sel.indices)) == spec["b"])
    return out


def _child(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "selection.bench", "--_case", json.dumps(spec)]
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timeout after {timeout:.0f} s"}
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["?"]
        return {**spec, "error": f"exit {res.returncode}: {tail[0][:120]}"}
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - t0
    return out


def _combine(reps: list[dict]) -> dict:
    """Median of the timings over repeats (and the fastest), the largest memory peaks."""
    import statistics  # noqa: PLC0415

    bad = [r for r in reps if "error" in r]
    if bad:
        return bad[0]
    out = dict(reps[0])
    for k in ("seconds", "round_s", "cluster_s", "wall_s"):
        vals = [r[k] for r in reps if r.get(k) is not None]
        if vals:
            out[k] = statistics.median(vals)
    if len(reps) > 1:
        out["min_s"] = min(r["seconds"] for r in reps)
        if any("round_s" in r for r in reps):
            out["min_round_s"] = min(r["round_s"] for r in reps)
    for k in ("traced_MiB", "rss_GiB"):
        vals = [r[k] for r in reps if r.get(k) is not None]
        if vals:
            out[k] = max(vals)
    out["repeats"] = len(reps)
    return out


def _fmt(v, nd=3):
    if v is None or v == "":
        return ""
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def write_json(path: str | None, rows: list[dict]) -> None:
    """The rows as JSON to ``path`` (--json), when one is given."""
    if path:
        with open(path, "w") as fh:
            json.dump(rows, fh, indent=1)


def table(rows: list[dict]) -> str:
    cols = ["strategy", "n", "c", "d", "b", "seconds", "min_s", "round_s", "min_round_s", "cluster_s", "clusters",
            "traced_MiB", "rss_GiB", "error"]
    cols = [c for c in cols if any(r.get(c) not in (None, "") for r in rows)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c), 1 if c == "traced_MiB" else 3) for c in cols) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m selection bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES))
    p.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--c", type=int, nargs="+", default=[10, 100])
    p.add_argument("--d", type=int, nargs="+", default=[64])
    p.add_argument("--b", type=int, nargs="+", default=[100, 1000, 10_000])
    p.add_argument("--m", type=int, default=1000, help="labeled points (default 1000)")
    p.add_argument("--params", default="", help="JSON dict: strategy name -> parameter overrides")
    p.add_argument("--max-nb", type=float, default=2e8,
                   help="skip badge/coreset cases with n*b above this (their cost is O(n b (c+d)))")
    p.add_argument("--timeout", type=float, default=600, help="seconds per case (default 600)")
    p.add_argument("--repeat", type=int, default=1, help="run each case this many times (fresh processes); "
                   "report the median time, the fastest (min_s) and the largest memory peaks")
    p.add_argument("--quick", action="store_true", help="small grid: n 10k/100k, c 10, d 64, b 100/1000")
    p.add_argument("--json", default="", help="also write the rows to this JSON file")
    p.add_argument("--_case", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "firal":
        try:
            from .firal.bench import main as firal_main  # noqa: PLC0415
        except ImportError as exc:
            print(f"'bench firal' needs selection.firal.bench, which is not available here ({exc})", file=sys.stderr)
            return 2
        return firal_main(argv[1:]) or 0
    args = build_parser().parse_args(argv)
    if args._case:
        print(json.dumps(run_case(json.loads(args._case))))
        return 0
    if args.quick:
        args.n, args.c, args.d, args.b = [10_000, 100_000], [10], [64], [100, 1000]
    from . import strategy_names  # noqa: PLC0415

    names = [s for s in args.strategies.split(",") if s]
    unknown = sorted(set(names) - set(strategy_names()))
    if unknown:
        print(f"unknown strategies {unknown}; available: {strategy_names()}", file=sys.stderr)
        return 2
    params = json.loads(args.params) if args.params else {}
    rows = []
    grid = [(s, n, c, d, b) for s, n, c, d, b in itertools.product(names, args.n, args.c, args.d, args.b)
            if b < n and not (s in _QUADRATIC and n * b > args.max_nb)]
    for i, (s, n, c, d, b) in enumerate(grid):
        spec = {"strategy": s, "n": n, "c": c, "d": d, "b": b, "m": args.m, "params": params.get(s, {})}
        print(f"[{i + 1}/{len(grid)}] {s} n={n} c={c} d={d} b={b}", file=sys.stderr, flush=True)
        row = _combine([_child(spec, args.timeout) for _ in range(args.repeat)])
        rows.append(row)
        print("    " + ", ".join(f"{k}={_fmt(row.get(k))}" for k in
                                 ("seconds", "round_s", "cluster_s", "traced_MiB", "rss_GiB", "error") if k in row),
              file=sys.stderr, flush=True)
    print(table(rows))
    print(f"\nload average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} CPUs)")
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
