"""``python -m selection simulate``: an oracle active-learning loop and its learning curves.

For each seed the data set is split (stratified) into a pool and a held-out test set; an
initial set is drawn uniformly from the pool (the Cluster-Margin paper's seed set); then each
round fits the same :class:`~selection.head.LogisticHead` the app uses (warm start from the
previous round), scores the test set, and asks the strategy for the next batch of the
unlabeled pool, whose true labels the oracle reveals.  Every strategy sees the same splits
and initial sets for a given seed.

Strategies are registry names with optional parameter overrides::

    --strategies random,margin,cluster_margin:km_ratio=1.25,cluster_margin

(``name:key=value[:key=value]``; a bare ``key=value`` item after a ``name:...`` item also
belongs to it).  The Selection context carries the whole pool split as ``X_all``, the pool
row of every unlabeled item, the head's L2 and an embedding version per split, so
Cluster-Margin clusters once per seed and reuses it across rounds.

Outputs: a CSV of every (strategy, seed, round) row, a printed table (accuracy mean +- sd
at each label count, area under the curve, labels saved vs random) and a PNG plot.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class StrategySpec:
    label: str
    name: str
    params: dict[str, Any]


def parse_strategies(text: str) -> list[StrategySpec]:
    """Parse ``name[:k=v[:k=v]]`` items separated by commas (see module docstring)."""
    from . import make_strategy  # noqa: PLC0415

    specs: list[list[str]] = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        if "=" in item and ":" not in item:
            if not specs:
                raise ValueError(f"--strategies: {item!r} has no strategy name before it")
            specs[-1].append(item)
        else:
            specs.append(item.split(":"))
    out = []
    for parts in specs:
        name, kvs = parts[0], parts[1:]
        params: dict[str, Any] = {}
        for kv in kvs:
            key, eq, val = kv.partition("=")
            if not eq or not key:
                raise ValueError(f"--strategies: {kv!r} in {':'.join(parts)!r} is not key=value")
            params[key] = None if val.lower() in {"none", ""} else val
        strat = make_strategy(name, params)  # validates name and parameters now, not mid-run
        label = name if not kvs else f"{name}({','.join(kvs)})"
        out.append(StrategySpec(label, name, dict(strat.params_) if kvs else {}))
    if not out:
        raise ValueError("--strategies: give at least one strategy name")
    labels = [s.label for s in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"--strategies: duplicate entries in {labels}")
    return out


def _split(y: np.ndarray, test_fraction: float, rng: np.random.Generator):
    """Stratified split into (pool rows, test rows)."""
    pool, test = [], []
    for k in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == k))
        n_test = int(round(len(rows) * test_fraction))
        test.append(rows[:n_test])
        pool.append(rows[n_test:])
    return rng.permutation(np.concatenate(pool)), np.sort(np.concatenate(test))


def run_one(ds, spec: StrategySpec, seed: int, *, initial: int, batch: int, rounds: int, l2: float,
            test_fraction: float, device: str, progress) -> list[dict]:
    """One learning curve: rows of (n_labeled, accuracy, timings) for rounds 0..rounds."""
    from . import SelectionContext, make_strategy  # noqa: PLC0415
    from .head import LogisticHead  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    pool_rows, test_rows = _split(ds.y, test_fraction, rng)
    X_pool_all, y_pool_all = ds.X[pool_rows], ds.y[pool_rows]
    n_pool = len(pool_rows)
    if initial + batch * rounds > n_pool:
        raise ValueError(f"initial + batch * rounds = {initial + batch * rounds} exceeds the pool ({n_pool} items)")
    labeled = np.zeros(n_pool, dtype=bool)
    labeled[rng.choice(n_pool, size=initial, replace=False)] = True
    strategy = make_strategy(spec.name, spec.params)
    c = ds.n_classes
    head_state = None
    rows = []
    sel_rng = np.random.default_rng([seed, 1])  # same stream for every strategy at a given seed
    version = f"{ds.name}|split{seed}|tf{test_fraction}"
    for r in range(rounds + 1):
        lab_idx = np.flatnonzero(labeled)
        t0 = time.perf_counter()
        head = None
        if len(lab_idx) > 0:
            head = LogisticHead(c, l2=l2, device=device).fit(X_pool_all[lab_idx], y_pool_all[lab_idx],
                                                            warm_start=head_state)
            head_state = head.get_state()
            acc = float((head.predict(ds.X[test_rows]) == ds.y[test_rows]).mean())
        else:
            acc = float(np.mean(ds.y[test_rows] == np.bincount(ds.y[pool_rows]).argmax()))  # no model yet
        t_fit = time.perf_counter() - t0
        row = {"strategy": spec.label, "seed": seed, "round": r, "n_labeled": int(len(lab_idx)),
               "accuracy": acc, "fit_seconds": round(t_fit, 4), "select_seconds": ""}
        if r < rounds:
            unl = np.flatnonzero(~labeled)
            probs_pool = None if head is None else head.predict_proba(X_pool_all[unl])
            ctx = SelectionContext(X_all=X_pool_all, pool_index=unl, l2=l2, embedding_version=version, device=device)
            t1 = time.perf_counter()
            sel = strategy.select(
                X_pool_all[unl], probs_pool,
                X_labeled=X_pool_all[lab_idx] if len(lab_idx) else None,
                probs_labeled=None if head is None or not len(lab_idx) else head.predict_proba(X_pool_all[lab_idx]),
                y_labeled=y_pool_all[lab_idx] if len(lab_idx) else None,
                batch_size=batch, random_state=sel_rng, context=ctx,
            )
            row["select_seconds"] = round(time.perf_counter() - t1, 4)
            labeled[unl[sel.indices]] = True
        rows.append(row)
        progress(f"{spec.label} seed {seed} round {r}/{rounds}: {len(lab_idx)} labels, accuracy {acc:.4f}")
    return rows


# ------------------------------------------------------------------------- summaries
def curves(rows: list[dict]) -> dict[str, dict[str, np.ndarray]]:
    """Per strategy: label counts (k,), accuracies (seeds, k)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for label in dict.fromkeys(r["strategy"] for r in rows):
        rs = [r for r in rows if r["strategy"] == label]
        seeds = sorted({r["seed"] for r in rs})
        ns = sorted({r["n_labeled"] for r in rs})
        acc = np.full((len(seeds), len(ns)), np.nan)
        for r in rs:
            acc[seeds.index(r["seed"]), ns.index(r["n_labeled"])] = r["accuracy"]
        out[label] = {"n": np.array(ns, dtype=float), "acc": acc}
    return out


def auc(n: np.ndarray, acc_mean: np.ndarray) -> float:
    """Normalised area under the learning curve (trapezoid over label counts / range): mean accuracy."""
    if len(n) < 2:
        return float(acc_mean[0])
    return float(np.sum((acc_mean[1:] + acc_mean[:-1]) / 2 * np.diff(n)) / (n[-1] - n[0]))


def labels_to_reach(n: np.ndarray, acc_mean: np.ndarray, target: float) -> float:
    """Labels a curve needs to first reach ``target`` accuracy (linear interpolation); inf if never."""
    hit = np.flatnonzero(acc_mean >= target)
    if len(hit) == 0:
        return math.inf
    i = hit[0]
    if i == 0:
        return float(n[0])
    a0, a1 = acc_mean[i - 1], acc_mean[i]
    return float(n[i - 1] + (target - a0) / (a1 - a0) * (n[i] - n[i - 1]))


def summary_table(rows: list[dict], baseline: str | None = "random", max_cols: int = 8) -> str:
    """Markdown table: accuracy mean ± sd at (up to ``max_cols``) label counts, AUC, and labels saved.

    Labels saved: the target is the baseline's (random's) final mean accuracy; for each strategy
    the labels its mean curve needs to reach it (linear interpolation), and the saving
    1 - labels_strategy / labels_random (Cluster-Margin's "% fewer labels"; the inverse ratio is
    the sample saving ratio).
    """
    cv = curves(rows)
    any_curve = next(iter(cv.values()))
    ns = any_curve["n"]
    cols = np.unique(np.linspace(0, len(ns) - 1, num=min(max_cols, len(ns))).round().astype(int))
    base = cv.get(baseline) if baseline else None
    head = ["strategy"] + [f"{int(ns[i])}" for i in cols] + ["AUC"]
    if base is not None:
        bm = np.nanmean(base["acc"], axis=0)
        target = float(bm[-1])
        n_base = labels_to_reach(base["n"], bm, target)
        head += [f"labels to reach {target:.3f}", "saved vs random"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, c in cv.items():
        m, sd = np.nanmean(c["acc"], axis=0), np.nanstd(c["acc"], axis=0)
        cells = [label] + [f"{m[i]:.3f} ± {sd[i]:.3f}" for i in cols] + [f"{auc(c['n'], m):.4f}"]
        if base is not None:
            need = labels_to_reach(c["n"], m, target)
            if math.isinf(need):
                cells += [f"not within {int(c['n'][-1])}", ""]
            else:
                cells += [f"{need:.0f}", "" if label == baseline else f"{100 * (1 - need / n_base):.0f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_csv(path: str) -> list[dict]:
    rows = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            rows.append({**r, "seed": int(r["seed"]), "round": int(r["round"]), "n_labeled": int(r["n_labeled"]),
                         "accuracy": float(r["accuracy"])})
    return rows


def plot(rows: list[dict], path: str, title: str) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for label, c in curves(rows).items():
        m, sd = np.nanmean(c["acc"], axis=0), np.nanstd(c["acc"], axis=0)
        ax.plot(c["n"], m, label=label, lw=1.6, ls="--" if label == "random" else "-")
        ax.fill_between(c["n"], m - sd, m + sd, alpha=0.15)
    ax.set_xlabel("labels")
    ax.set_ylabel("test accuracy (mean ± sd over seeds)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m selection simulate", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="digits", help="digits | gmm[:n=..,c=..,d=..,imbalance=..,spread=..,seed=..] "
                   "| npy:EMB.npy,LABELS.npy (default digits)")
    p.add_argument("--strategies", default="random,margin,entropy,power,badge,coreset,cluster_margin",
                   help="comma-separated registry names with optional :key=value overrides")
    p.add_argument("--initial", type=int, default=20, help="labels drawn uniformly before round 0 (default 20)")
    p.add_argument("--batch", type=int, default=20, help="batch size b per round (default 20)")
    p.add_argument("--rounds", type=int, default=15, help="rounds after the initial set (default 15)")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds 0..S-1 (default 5)")
    p.add_argument("--seed-offset", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--l2", type=float, default=1.0, help="head L2 strength (default 1.0)")
    p.add_argument("--test-fraction", type=float, default=0.3, help="held-out share, stratified (default 0.3)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--out", default="simulate-out", help="output folder for curves.csv and curves.png")
    p.add_argument("--quiet", action="store_true", help="no per-round progress on stderr")
    p.add_argument("--from-csv", default="", help="only print the table (and redraw the plot into --out) "
                   "from an existing curves.csv")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .datasets import load_dataset  # noqa: PLC0415

    if args.from_csv:
        saved = read_csv(args.from_csv)
        os.makedirs(args.out, exist_ok=True)
        plot(saved, os.path.join(args.out, "curves.png"), os.path.basename(os.path.dirname(args.from_csv)) or "curves")
        print(summary_table(saved, baseline="random" if any(r["strategy"] == "random" for r in saved) else None))
        return 0

    for name in ("initial", "rounds", "seeds"):
        if getattr(args, name) < 0:
            raise SystemExit(f"--{name} must be >= 0")
    if args.batch < 1 or args.seeds < 1:
        raise SystemExit("--batch and --seeds must be >= 1")
    if not 0 < args.test_fraction < 1:
        raise SystemExit("--test-fraction must be in (0, 1)")
    try:
        ds = load_dataset(args.data)
        specs = parse_strategies(args.strategies)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    os.makedirs(args.out, exist_ok=True)
    total = len(specs) * args.seeds
    t_start = time.perf_counter()
    done = 0

    def progress(msg: str) -> None:
        if not args.quiet:
            el = time.perf_counter() - t_start
            print(f"[{done + 1}/{total} {el:7.1f}s] {msg}", file=sys.stderr, flush=True)

    rows: list[dict] = []
    for seed in range(args.seed_offset, args.seed_offset + args.seeds):
        for spec in specs:
            try:
                rows += run_one(ds, spec, seed, initial=args.initial, batch=args.batch, rounds=args.rounds,
                                l2=args.l2, test_fraction=args.test_fraction, device=args.device, progress=progress)
            except ValueError as exc:
                raise SystemExit(f"error: {exc}") from None
            done += 1
    csv_path = os.path.join(args.out, "curves.csv")
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    png_path = os.path.join(args.out, "curves.png")
    title = (f"{ds.name}: initial {args.initial}, batch {args.batch}, {args.rounds} rounds, "
             f"{args.seeds} seeds, l2={args.l2:g}")
    plot(rows, png_path, title)
    sel_t: dict[str, list] = {}
    for r in rows:
        if r["select_seconds"] != "":
            sel_t.setdefault(r["strategy"], []).append(r["select_seconds"])
    print(f"# {title}")
    print(summary_table(rows, baseline="random" if any(s.label == "random" for s in specs) else None))
    print("\nmedian selection seconds per round: " +
          ", ".join(f"{k} {np.median(v):.3f}" for k, v in sel_t.items()))
    print(f"\nwrote {csv_path} and {png_path} ({time.perf_counter() - t_start:.0f} s)")
    return 0
