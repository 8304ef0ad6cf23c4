"""``python -m selection simulate``: an oracle active-learning loop, learning curves and paired comparisons.

For each seed the data set is split (stratified, ``--test-fraction``) into a pool and a held-out
test set, and an initial set is drawn uniformly from the pool; both are fixed for the seed, so
every strategy sees the same split, initial labels and selection random stream.  Each round fits
the head (``--head loupe``: the app's :class:`~selection.head.LogisticHead`, warm-started;
``--head sklearn``: scikit-learn's ``LogisticRegression(C=1/l2)`` refitted from scratch; the two
minimise the same objective), scores the test set, and asks the strategy for the next batch of
the unlabeled pool, whose true labels the oracle reveals.

Sizes are label counts or, with a ``pc`` suffix, counts per class: the default protocol is
``--initial 2pc --batch 5pc --budget 40pc`` (2 × classes labels drawn uniformly to start, batches of 5
per class, until 40 per class), 10 seeds.  Strategies are registry names with optional
parameter overrides::

    --strategies random,auto,margin:unseen_share=0,cluster_margin:km_ratio=1.25

(``name:key=value[:key=value]``; a bare ``key=value`` item after a ``name:...`` item also
belongs to it).  The Selection context carries the whole pool split as ``X_all``, the pool
row of every unlabeled item, the head's L2 and an embedding version per split, so
Cluster-Margin clusters once per seed and reuses it across rounds.

Outputs in ``--out``: ``curves.csv`` (every strategy, seed and round), ``curves.png``, and on
stdout two tables (:mod:`selection.sim_stats`): accuracy mean ± sd per label count with AUC
and labels saved at random's final accuracy, and the paired difference to random with its 95%
interval over seeds, saying plainly where a strategy is worse than random beyond noise.

Extending the CLI: :func:`build_parser` returns the parser (add options to it), and
:func:`run_one` takes ``observe``, a function ``(y_pool, rng) -> labels the oracle reports``
applied once per seed (e.g. label noise).
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .sim_stats import (  # noqa: F401
    auc,
    coverage_table,
    curves,
    labels_to_reach,
    paired_table,
    plot,
    read_csv,
    summary_table,
)

DEFAULT_STRATEGIES = "random,auto,typiclust,margin,badge"


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


def parse_size(text: str, n_classes: int, what: str) -> int:
    """``"40"`` -> 40 labels; ``"5pc"`` -> 5 per class (5 * c)."""
    t = str(text).strip().lower()
    per_class = t.endswith("pc")
    try:
        v = float(t[:-2] if per_class else t)
    except ValueError:
        raise ValueError(f"--{what} {text!r} is not a number or a per-class count like '5pc'") from None
    n = int(round(v * n_classes)) if per_class else int(v)
    if not math.isfinite(v) or n < 0 or (not per_class and v != int(v)):
        raise ValueError(f"--{what} {text!r} must be a whole number >= 0 (or 'Npc')")
    return n


def split(y: np.ndarray, test_fraction: float, rng: np.random.Generator):
    """Stratified split into (pool rows, test rows)."""
    pool, test = [], []
    for k in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == k))
        n_test = int(round(len(rows) * test_fraction))
        test.append(rows[:n_test])
        pool.append(rows[n_test:])
    return rng.permutation(np.concatenate(pool)), np.sort(np.concatenate(test))


_split = split  # earlier name


class _SklearnHead:
    """scikit-learn's LogisticRegression(C=1/l2) with c probability columns (unseen classes get 0)."""

    def __init__(self, c: int, l2: float):
        self.c, self.l2 = c, l2

    def fit(self, X, y, warm_start=None):
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

        self.classes_ = np.unique(y)
        if len(self.classes_) == 1:
            self.model_ = None
        else:
            self.model_ = LogisticRegression(C=1.0 / self.l2, max_iter=1000).fit(X, y)
        return self

    def get_state(self):
        return None

    def predict_proba(self, X):
        P = np.zeros((len(X), self.c))
        if self.model_ is None:
            P[:, self.classes_[0]] = 1.0
        else:
            P[:, self.classes_] = self.model_.predict_proba(X)
        return P

    def predict(self, X):
        return self.predict_proba(X).argmax(axis=1)


def make_head(kind: str, c: int, l2: float, device: str):
    if kind == "sklearn":
        return _SklearnHead(c, l2)
    from .head import LogisticHead  # noqa: PLC0415

    return LogisticHead(c, l2=l2, device=device)


def run_one(ds, spec: StrategySpec, seed: int, *, initial: int, batch: int, rounds: int, l2: float,
            test_fraction: float, device: str, progress, head: str = "loupe",
            observe: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None) -> list[dict]:
    """One learning curve: rows of (n_labeled, accuracy, timings, strategy info) for rounds 0..rounds."""
    from . import SelectionContext, make_strategy  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    pool_rows, test_rows = split(ds.y, test_fraction, rng)
    X_pool_all, y_pool_all = ds.X[pool_rows], ds.y[pool_rows]
    n_pool = len(pool_rows)
    if initial + batch * rounds > n_pool:
        raise ValueError(f"initial + batch * rounds = {initial + batch * rounds} exceeds the pool ({n_pool} items)")
    labeled = np.zeros(n_pool, dtype=bool)
    labeled[rng.choice(n_pool, size=initial, replace=False)] = True
    y_seen = y_pool_all if observe is None else np.asarray(observe(y_pool_all, np.random.default_rng([seed, 2])))
    strategy = make_strategy(spec.name, spec.params)
    c = ds.n_classes
    head_state = None
    rows = []
    sel_rng = np.random.default_rng([seed, 1])  # same stream for every strategy at a given seed
    version = f"{ds.name}|split{seed}|tf{test_fraction}"
    X_test, y_test = ds.X[test_rows], ds.y[test_rows]
    for r in range(rounds + 1):
        lab_idx = np.flatnonzero(labeled)
        t0 = time.perf_counter()
        model = None
        if len(lab_idx) > 0:
            model = make_head(head, c, l2, device).fit(X_pool_all[lab_idx], y_seen[lab_idx], warm_start=head_state)
            head_state = model.get_state()
            acc = float((model.predict(X_test) == y_test).mean())
        else:
            acc = float(np.mean(y_test == np.bincount(y_pool_all).argmax()))  # no model yet
        row = {"strategy": spec.label, "seed": seed, "round": r, "n_labeled": int(len(lab_idx)),
               "accuracy": acc, "fit_seconds": round(time.perf_counter() - t0, 4), "select_seconds": "",
               "sub_strategy": "", "classes_seen": int(len(np.unique(y_seen[lab_idx])))}
        if r < rounds:
            unl = np.flatnonzero(~labeled)
            probs_pool = None if model is None else model.predict_proba(X_pool_all[unl])
            ctx = SelectionContext(X_all=X_pool_all, pool_index=unl, l2=l2, embedding_version=version, device=device)
            t1 = time.perf_counter()
            sel = strategy.select(
                X_pool_all[unl], probs_pool,
                X_labeled=X_pool_all[lab_idx] if len(lab_idx) else None,
                probs_labeled=None if model is None or not len(lab_idx) else model.predict_proba(X_pool_all[lab_idx]),
                y_labeled=y_seen[lab_idx] if len(lab_idx) else None,
                batch_size=batch, random_state=sel_rng, context=ctx,
            )
            row["select_seconds"] = round(time.perf_counter() - t1, 4)
            row["sub_strategy"] = str(sel.info.get("sub_strategy", ""))
            labeled[unl[sel.indices]] = True
        rows.append(row)
        progress(f"{spec.label} seed {seed} round {r}/{rounds}: {len(lab_idx)} labels, accuracy {acc:.4f}")
    return rows


def _job(args):
    """One (seed, strategy) curve in a worker process: one BLAS / torch thread each."""
    ds, spec, seed, kw = args
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    try:
        import torch  # noqa: PLC0415

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a runtime dependency
        pass
    with threadpool_limits(limits=1):
        return run_one(ds, spec, seed, progress=lambda msg: None, **kw)


# ------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m selection simulate", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="digits", help="digits | pendigits | FOLDER (with pendigits.tra) | PATH.csv | "
                   "PATH.npz (arrays X, y) | gmm[:n=..,c=..,d=..,imbalance=..,spread=..,seed=..] | "
                   "npy:EMB.npy,LABELS.npy (default digits)")
    p.add_argument("--label-col", default=None, help="CSV label column (default: 'label', 'class', 'target' or "
                   "'y' if there is one, else the last column)")
    p.add_argument("--strategies", default=DEFAULT_STRATEGIES,
                   help="comma-separated registry names with optional :key=value overrides "
                   f"(default {DEFAULT_STRATEGIES})")
    p.add_argument("--initial", default="2pc", help="labels drawn uniformly before round 0; 'Npc' = N per class "
                   "(default 2pc)")
    p.add_argument("--batch", default="5pc", help="batch size per round, or 'Npc' (default 5pc)")
    p.add_argument("--budget", default="40pc", help="label count to reach (rounds = ceil((budget - initial) / "
                   "batch)), or 'Npc' (default 40pc); ignored when --rounds is given")
    p.add_argument("--rounds", type=int, default=None, help="rounds after the initial set (default: from --budget)")
    p.add_argument("--seeds", type=int, default=10, help="number of seeds (default 10)")
    p.add_argument("--seed-offset", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--head", default="loupe", choices=("loupe", "sklearn"),
                   help="classifier: the app's torch head or scikit-learn's LogisticRegression (default loupe)")
    p.add_argument("--l2", type=float, default=1.0, help="head L2 strength, C = 1 / l2 (default 1.0)")
    p.add_argument("--test-fraction", type=float, default=0.3, help="held-out share, stratified (default 0.3)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--jobs", type=int, default=1, help="worker processes, one thread each (default 1)")
    p.add_argument("--out", default="simulate-out", help="output folder for curves.csv and curves.png")
    p.add_argument("--quiet", action="store_true", help="no per-round progress on stderr")
    p.add_argument("--from-csv", default="", help="only print the tables (and redraw the plot into --out) "
                   "from an existing curves.csv")
    from .quality.simulate import add_arguments  # noqa: PLC0415

    add_arguments(p)
    return p


def report(rows: list[dict], title: str) -> str:
    has_random = any(r["strategy"] == "random" for r in rows)
    parts = [f"# {title}", summary_table(rows, baseline="random" if has_random else None)]
    cov = coverage_table(rows)
    if cov:
        parts += ["", "Classes with at least one label (mean over seeds), where some were missing:", "", cov]
    if has_random and len(curves(rows)) > 1:
        parts += ["", ("Paired difference to random, accuracy points, mean ± 95% interval over seeds "
                       "(▼ worse / ▲ better than random beyond noise):"), "", paired_table(rows)]
    return "\n".join(parts)


def main(argv: list[str] | None = None, *, observe=None) -> int:
    args = build_parser().parse_args(argv)
    from .quality import simulate as quality  # noqa: PLC0415

    if quality.wants_quality(args):
        return quality.main_from_args(args)
    from .datasets import load_dataset  # noqa: PLC0415

    if args.from_csv:
        saved = read_csv(args.from_csv)
        os.makedirs(args.out, exist_ok=True)
        title = os.path.basename(os.path.dirname(os.path.abspath(args.from_csv))) or "curves"
        plot(saved, os.path.join(args.out, "curves.png"), title)
        print(report(saved, title))
        return 0
    if args.seeds < 1 or args.jobs < 1 or (args.rounds is not None and args.rounds < 0):
        raise SystemExit("--seeds and --jobs must be >= 1, --rounds >= 0")
    if not 0 < args.test_fraction < 1:
        raise SystemExit("--test-fraction must be in (0, 1)")
    try:
        ds = load_dataset(args.data, label_col=args.label_col)
        specs = parse_strategies(args.strategies)
        c = ds.n_classes
        initial = parse_size(args.initial, c, "initial")
        batch = parse_size(args.batch, c, "batch")
        if batch < 1:
            raise ValueError(f"--batch {args.batch!r} must be at least 1 label")
        rounds = args.rounds
        if rounds is None:
            rounds = max(0, math.ceil((parse_size(args.budget, c, "budget") - initial) / batch))
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    os.makedirs(args.out, exist_ok=True)
    kw = dict(initial=initial, batch=batch, rounds=rounds, l2=args.l2, test_fraction=args.test_fraction,
              device=args.device, head=args.head, observe=observe)
    jobs = [(ds, spec, seed, kw) for seed in range(args.seed_offset, args.seed_offset + args.seeds) for spec in specs]
    t_start = time.perf_counter()
    rows: list[dict] = []
    try:
        if args.jobs > 1:
            from concurrent.futures import ProcessPoolExecutor  # noqa: PLC0415

            with ProcessPoolExecutor(args.jobs) as ex:
                for k, part in enumerate(ex.map(_job, jobs)):
                    rows += part
                    if not args.quiet:
                        print(f"[{k + 1}/{len(jobs)} {time.perf_counter() - t_start:7.1f}s] {part[0]['strategy']} "
                              f"seed {part[0]['seed']}: final accuracy {part[-1]['accuracy']:.4f}",
                              file=sys.stderr, flush=True)
        else:
            for k, (d, spec, seed, kw_) in enumerate(jobs):
                def progress(msg: str, k=k) -> None:
                    if not args.quiet:
                        el = time.perf_counter() - t_start
                        print(f"[{k + 1}/{len(jobs)} {el:7.1f}s] {msg}", file=sys.stderr, flush=True)
                rows += run_one(d, spec, seed, progress=progress, **kw_)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    csv_path = os.path.join(args.out, "curves.csv")
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    png_path = os.path.join(args.out, "curves.png")
    title = (f"{ds.name}: initial {initial}, batch {batch}, {rounds} rounds, {args.seeds} seeds, "
             f"head {args.head}, l2={args.l2:g}")
    plot(rows, png_path, title)
    sel_t: dict[str, list] = {}
    for r in rows:
        if r["select_seconds"] != "":
            sel_t.setdefault(r["strategy"], []).append(r["select_seconds"])
    print(report(rows, title))
    print("\nmedian selection seconds per round: " + ", ".join(f"{k} {np.median(v):.3f}" for k, v in sel_t.items()))
    print(f"\nwrote {csv_path} and {png_path} ({time.perf_counter() - t_start:.0f} s)")
    return 0
