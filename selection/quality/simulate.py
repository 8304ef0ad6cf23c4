"""Quality simulation behind ``python -m selection simulate --label-noise/--annotators/--overlap``.

Three experiments per seed on one data set (each seed its own split and draws):

1. **Accuracy estimates.**  The head (the app's :class:`~selection.head.LogisticHead`) is trained
   on ``--train-labels`` uniform pool labels; the confidence f is
   :class:`~selection.quality.correctness.CorrectnessModel` (head confidence + agreement of the
   labeled neighbours, fitted on the *training* labels' out-of-fold predictions: no audit label
   is used, so f is fixed before any audit draw).  The population is the held-out test set; the
   truth is the head's accuracy on all of it.  For each audit size n in ``--audit-sizes``:
   ``audit`` (n uniform draws, Wilson), ``ppi`` (the same draws, PPI++ with the test set's
   confidences as the unlabeled pool) and ``active_testing`` (n draws from the proposal
   proportional to sqrt(f(1-f)) mixed with 20% uniform, Hansen-Hurwitz with f as control
   variate), and ``difference_app`` (the app's estimator: the same draws and f as ``ppi``, the
   exact test-set mean of f, no power tuning, the small-sample variance adjustment).
   Draws are with replacement, so every interval targets the test accuracy exactly.
   ``active_inference`` (the app's estimator since the audit draw records probabilities): the budget
   n spread over ``--audit-rounds`` rounds of Poisson sampling without replacement, f refitted
   between rounds (:func:`active_inference_rounds`).
2. **Suspected label errors** (``--label-noise p``): ``--error-labels`` pool items, a share p of
   them flipped to a uniformly chosen other class; 5-fold out-of-fold probabilities and a fit on
   all of them; precision of the top 5% of :func:`~selection.quality.label_error_scores`
   (and, for comparison, of the out-of-fold loss alone and of confident learning's flags).
3. **Annotators** (``--annotators 0.9,0.7,0.6``): every pool item gets one label from a random
   annotator, and a share ``--overlap`` of items gets labels from ``--overlap-k`` distinct
   annotators (default all); a wrong answer is a uniformly chosen other class.  Majority vote and
   Dawid-Skene are scored against the true labels on the overlapped items; Dawid-Skene's
   estimated annotator accuracies are compared with the real ones.
"""
from __future__ import annotations

import csv
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from ..datasets import Dataset, load_dataset
from .annotators import dawid_skene, majority_vote
from .correctness import (
    CorrectnessModel,
    correctness_features,
    correctness_training_set,
    fit_logistic,
    knn_proba,
)
from .errors import (
    confident_learning,
    cross_entropy,
    label_error_scores,
    out_of_fold_proba,
)
from .estimators import (
    AccuracyEstimate,
    StratumEstimate,
    active_inference_stratum,
    active_testing_accuracy,
    active_testing_proposal,
    audit_accuracy,
    combine_strata,
    difference_accuracy,
    inclusion_probabilities,
    ppi_accuracy,
)

ESTIMATORS = ("audit", "ppi", "active_testing", "difference_app", "active_inference")


@dataclass
class QualityConfig:
    train_labels: int = 200
    audit_sizes: tuple[int, ...] = (50, 100, 200)
    label_noise: float = 0.0
    error_labels: int = 1000
    annotators: tuple[float, ...] = ()
    overlap: float = 1.0
    overlap_k: int = 0
    l2: float = 1.0
    test_fraction: float = 0.3
    at_floor: float = 0.2
    audit_rounds: int = 10


def _head(c: int, l2: float):
    from ..head import LogisticHead  # noqa: PLC0415

    return LogisticHead(c, l2=l2)


def _fit_predict(c: int, l2: float):
    return lambda Xa, ya, Xb: _head(c, l2).fit(Xa, ya).predict_proba(Xb)


def estimate_rows(ds: Dataset, pool, test, seed: int, cfg: QualityConfig) -> list[dict]:
    rng = np.random.default_rng([seed, 1])
    c = ds.n_classes
    tr = rng.choice(pool, size=min(cfg.train_labels, len(pool)), replace=False)
    head = _head(c, cfg.l2).fit(ds.X[tr], ds.y[tr])
    P = head.predict_proba(ds.X[test])
    correct = (P.argmax(1) == ds.y[test]).astype(float)
    truth = float(correct.mean())
    F_tr, right_tr = correctness_training_set(ds.X[tr], ds.y[tr], c, _fit_predict(c, cfg.l2), random_state=seed)
    cm = CorrectnessModel(fit_logistic(F_tr, right_tr, ridge=1.0))
    f = cm.predict(P, ds.X[test], ds.X[tr], ds.y[tr])
    q = active_testing_proposal(f, floor=cfg.at_floor)
    N = len(test)
    rows = []
    for n in cfg.audit_sizes:
        i = rng.integers(0, N, n)
        j = rng.choice(N, size=n, p=q)
        ests = {
            "audit": audit_accuracy(correct[i]),
            "ppi": ppi_accuracy(correct[i], f[i], f),
            "active_testing": active_testing_accuracy(correct[j], f[j], q[j], pool_mean=float(f.mean()), n_pool=N),
            # the app's form: exact pool mean, small-sample variance adjustment (annotate/selectors_quality.py)
            "difference_app": difference_accuracy(correct[i], f[i], np.full(n, f.mean())),
            "active_inference": active_inference_rounds(ds, tr, test, P, correct, F_tr, right_tr, n, rng, cfg),
        }
        for name, e in ests.items():
            rows.append({"experiment": "estimate", "data": ds.name, "seed": seed, "estimator": name, "n": n,
                         "n_test": N,
                         "truth": truth, "value": e.value, "low": e.low, "high": e.high,
                         "half_width": e.half_width, "covers": int(e.covers(truth)), "n_labels": e.n_labels})
    return rows


def active_inference_rounds(ds: Dataset, tr, test, P, correct, F_tr, right_tr, n: int, rng: np.random.Generator,
                            cfg: QualityConfig) -> AccuracyEstimate:
    """Active statistical inference as the app runs it: ``cfg.audit_rounds`` rounds of n / rounds expected labels.

    Before round b the confidence f is refitted (:class:`CorrectnessModel`) on the training labels'
    out-of-fold features and the audit labels of rounds < b (their neighbour feature leave-one-out),
    and the neighbours include those audit labels, as the app's labeled set does.  Round b audits
    each not-yet-audited test item i independently with pi_i from :func:`inclusion_probabilities`
    (score sqrt(f (1 - f)), uniform share ``cfg.at_floor``).  Its Horvitz-Thompson estimate of the
    test accuracy is (sum of the audited Y + |U| theta_U) / N, theta_U from
    :func:`active_inference_stratum` over the unaudited part U; f and pi are fixed before the draw,
    so each round is unbiased given the past and the rounds combine (weights 1 / predicted variance,
    fixed before each draw) into a martingale whose variances add (Zrnic & Candes 2024, Sec. 5).
    """
    c, N = ds.n_classes, len(test)
    X_test, y_test, X_tr, y_tr = ds.X[test], ds.y[test], ds.X[tr], ds.y[tr]
    known = np.zeros(N, dtype=bool)
    strata: list[StratumEstimate] = []
    weights: list[float] = []
    rounds = max(1, int(cfg.audit_rounds))
    for _ in range(rounds):
        U = np.flatnonzero(~known)
        if not len(U):
            break
        a = np.flatnonzero(known)
        X_ref, y_ref = np.vstack([X_tr, X_test[a]]), np.r_[y_tr, y_test[a]]
        F_a = correctness_features(P[a], knn_proba(X_ref, y_ref, X_test[a], c, exclude=len(tr) + np.arange(len(a))))
        w = fit_logistic(np.vstack([F_tr, F_a]), np.r_[right_tr, correct[a]], ridge=1.0)
        f = CorrectnessModel(w).predict(P[U], X_test[U], X_ref, y_ref)
        pi = inclusion_probabilities(np.sqrt(f * (1 - f)), n / rounds, floor=cfg.at_floor)
        xi = rng.random(len(U)) < pi
        spread = float(np.sum((1 - pi) * f * (1 - f) / pi))  # fixed before the draw
        s = active_inference_stratum(correct[U][xi], f[xi], pi[xi], pool_conf_sum=float(f.sum()), n_pool=len(U),
                                     pool_expected_spread=spread)
        strata.append(StratumEstimate((correct[known].sum() + len(U) * s.value) / N,
                                      s.variance * (len(U) / N) ** 2, s.n_labels, N))
        weights.append(1 / max(spread / N**2, 1e-12))
        known[U[xi]] = True
    return combine_strata(strata, weights)


def error_rows(ds: Dataset, pool, seed: int, cfg: QualityConfig) -> list[dict]:
    rng = np.random.default_rng([seed, 2])
    c = ds.n_classes
    rows_ = rng.choice(pool, size=min(cfg.error_labels, len(pool)), replace=False)
    y = ds.y[rows_].copy()
    flip = rng.random(len(y)) < cfg.label_noise
    y[flip] = (y[flip] + rng.integers(1, c, int(flip.sum()))) % c
    X = ds.X[rows_]
    P_oof = out_of_fold_proba(X, y, c, n_folds=5, random_state=seed, l2=cfg.l2)
    P_fit = _head(c, cfg.l2).fit(X, y).predict_proba(X)
    k = max(1, round(0.05 * len(y)))
    issue, _, _ = confident_learning(P_oof, y)
    out = []
    for name, score in (("cl+learnability", label_error_scores(P_oof, y, P_fit)),
                        ("oof_loss", cross_entropy(P_oof, y)),
                        ("cl_only", issue + 1e-9 * cross_entropy(P_oof, y))):
        top = np.argsort(-score, kind="stable")[:k]
        out.append({"experiment": "errors", "data": ds.name, "seed": seed, "estimator": name, "n": len(y),
                    "precision_top5pc": float(flip[top].mean()), "noise_rate": float(flip.mean()),
                    "cl_flagged": int(issue.sum())})
    return out


def annotator_rows(ds: Dataset, pool, seed: int, cfg: QualityConfig) -> list[dict]:
    rng = np.random.default_rng([seed, 3])
    c, accs = ds.n_classes, np.asarray(cfg.annotators)
    m = len(accs)
    k = cfg.overlap_k or m
    truth = ds.y[pool]
    n = len(truth)
    L = np.full((n, m), -1, dtype=np.int64)
    over = rng.random(n) < cfg.overlap
    for i in range(n):
        who = rng.choice(m, size=k if over[i] else 1, replace=False)
        right = rng.random(len(who)) < accs[who]
        L[i, who] = np.where(right, truth[i], (truth[i] + rng.integers(1, c, len(who))) % c)
    ds_fit = dawid_skene(L, c)
    mv = majority_vote(L, c, random_state=seed)
    return [{"experiment": "annotators", "data": ds.name, "seed": seed, "estimator": name, "n": int(over.sum()),
             "consensus_accuracy": float(np.mean(lab[over] == truth[over])) if over.any() else float("nan"),
             "accuracy_error": (float(np.abs(ds_fit.accuracy - accs).max()) if name == "dawid_skene" else ""),
             "estimated_accuracies": (" ".join(f"{a:.3f}" for a in ds_fit.accuracy) if name == "dawid_skene"
                                      else "")}
            for name, lab in (("majority_vote", mv), ("dawid_skene", ds_fit.labels))]


def run(ds: Dataset, seeds: range, cfg: QualityConfig, *, out: str, quiet: bool = False) -> list[dict]:
    """All experiments over ``seeds``; writes ``out/quality.csv`` and returns its rows."""
    from ..simulate import split  # noqa: PLC0415

    rows: list[dict] = []
    t0 = time.perf_counter()
    for seed in seeds:
        pool, test = split(ds.y, cfg.test_fraction, np.random.default_rng([seed, 0]))
        rows += estimate_rows(ds, pool, test, seed, cfg)
        if cfg.label_noise > 0:
            rows += error_rows(ds, pool, seed, cfg)
        if len(cfg.annotators):
            rows += annotator_rows(ds, pool, seed, cfg)
        if not quiet:
            print(f"[seed {seed} {time.perf_counter() - t0:6.1f}s]", file=sys.stderr, flush=True)
    os.makedirs(out, exist_ok=True)
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("experiment", "data", "seed"), k))
    with open(os.path.join(out, "quality.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    return rows


def tables(rows: list[dict]) -> str:
    """Markdown tables: coverage and width per estimator and audit size; error precision; consensus."""
    out = []
    est = [r for r in rows if r["experiment"] == "estimate"]
    if est:
        data = est[0]["data"]
        ns = sorted({r["n"] for r in est})
        out += [(f"accuracy estimates on {data} ({len({r['seed'] for r in est})} seeds; truth = test accuracy, "
                 f"mean {np.mean([r['truth'] for r in est]):.3f}; test set N = {est[0].get('n_test', '?')})"), "",
                "| estimator | label budget n | labels used (mean) | coverage of 95% interval | mean half-width | "
                "vs audit (Wilson) | vs audit × finite-population correction |",
                "|---|---|---|---|---|---|---|"]
        for n in ns:
            base = np.mean([r["half_width"] for r in est if r["n"] == n and r["estimator"] == "audit"])
            fpc = np.mean([np.sqrt(max(0.0, (r["n_test"] - n) / (r["n_test"] - 1))) for r in est
                           if r["n"] == n and r["estimator"] == "audit"]) if "n_test" in est[0] else 1.0
            for name in ESTIMATORS:
                rr = [r for r in est if r["n"] == n and r["estimator"] == name]
                if not rr:
                    continue
                hw = np.mean([r["half_width"] for r in rr])
                used = np.mean([r.get("n_labels", n) for r in rr])
                out.append(f"| {name} | {n} | {used:.0f} | {100 * np.mean([r['covers'] for r in rr]):.0f}% ({len(rr)}) "
                           f"| {hw:.4f} | {hw / base:.2f} | {hw / (base * fpc):.2f} |")
        ai = [r for r in est if r["estimator"] == "active_inference"]
        if ai:
            out.append(f"\nactive_inference (the app's estimator) coverage over all {len(ai)} intervals: "
                       f"{100 * np.mean([r['covers'] for r in ai]):.1f}%")
    err = [r for r in rows if r["experiment"] == "errors"]
    if err:
        noise = np.mean([r["noise_rate"] for r in err])
        out += ["", f"suspected label errors: {err[0]['n']} labels, noise {noise:.3f}",
                "", "| ranking | precision of top 5% (mean ± sd) | min over seeds |", "|---|---|---|"]
        for name in dict.fromkeys(r["estimator"] for r in err):
            p = [r["precision_top5pc"] for r in err if r["estimator"] == name]
            out.append(f"| {name} | {np.mean(p):.3f} ± {np.std(p):.3f} | {np.min(p):.3f} |")
    ann = [r for r in rows if r["experiment"] == "annotators"]
    if ann:
        out += ["", "consensus on overlapped items", "",
                "| method | label accuracy (mean ± sd) | mean max error of estimated annotator accuracy |",
                "|---|---|---|"]
        for name in ("majority_vote", "dawid_skene"):
            rr = [r for r in ann if r["estimator"] == name]
            a = [r["consensus_accuracy"] for r in rr]
            errs = [r["accuracy_error"] for r in rr if r["accuracy_error"] != ""]
            out.append(f"| {name} | {np.mean(a):.4f} ± {np.std(a):.4f} | "
                       f"{(f'{np.mean(errs):.3f}' if errs else '')} |")
        wins = np.mean([a["consensus_accuracy"] < b["consensus_accuracy"]
                        for a, b in zip(ann[0::2], ann[1::2], strict=True)])
        out.append(f"\nDawid-Skene more accurate than majority vote in {100 * wins:.0f}% of seeds")
    return "\n".join(out)


# ------------------------------------------------------------------- CLI glue
def add_arguments(p) -> None:
    """The quality flags of ``python -m selection simulate`` (any of the first three switches to this module)."""
    g = p.add_argument_group("quality simulation (docs/quality.md); any of these runs it instead of the curves")
    g.add_argument("--label-noise", type=float, default=None,
                   help="share of labels flipped to another class; ranks suspected errors (e.g. 0.1)")
    g.add_argument("--annotators", default=None, help="comma-separated annotator accuracies, e.g. 0.9,0.7,0.6")
    g.add_argument("--overlap", type=float, default=None, help="share of items labeled by --overlap-k annotators")
    g.add_argument("--overlap-k", type=int, default=0, help="annotators per overlapped item (default: all)")
    g.add_argument("--train-labels", type=int, default=200, help="labels the evaluated head is trained on")
    g.add_argument("--audit-sizes", default="50,100,200", help="audit label counts to estimate accuracy from")
    g.add_argument("--error-labels", type=int, default=1000, help="labeled items searched for flipped labels")
    g.add_argument("--audit-rounds", type=int, default=10,
                   help="rounds the active_inference estimator spreads its label budget over (f refitted between)")


def wants_quality(args) -> bool:
    return args.label_noise is not None or args.annotators is not None or args.overlap is not None


def main_from_args(args) -> int:
    try:
        accs = tuple(float(a) for a in args.annotators.split(",")) if args.annotators else ()
        sizes = tuple(int(s) for s in args.audit_sizes.split(","))
    except ValueError:
        raise SystemExit("error: --annotators takes numbers like 0.9,0.7,0.6 and --audit-sizes ints "
                         "like 50,100") from None
    noise = args.label_noise or 0.0
    overlap = 1.0 if args.overlap is None else args.overlap
    if not 0 <= noise < 1:
        raise SystemExit(f"error: --label-noise {noise} must be in [0, 1)")
    if not 0 <= overlap <= 1:
        raise SystemExit(f"error: --overlap {overlap} must be in [0, 1]")
    if any(not 0 <= a <= 1 for a in accs) or len(accs) == 1:
        raise SystemExit("error: --annotators needs at least two accuracies in [0, 1]")
    if args.overlap_k < 0 or args.overlap_k > max(len(accs), 0) or args.overlap_k == 1:
        raise SystemExit(f"error: --overlap-k {args.overlap_k} must be 0 (all) or 2..{len(accs)}")
    if args.audit_rounds < 1:
        raise SystemExit(f"error: --audit-rounds {args.audit_rounds} must be >= 1")
    if min(sizes) < 2 or args.train_labels < 10 or args.error_labels < 20:
        raise SystemExit("error: --audit-sizes >= 2, --train-labels >= 10, --error-labels >= 20")
    cfg = QualityConfig(train_labels=args.train_labels, audit_sizes=sizes, label_noise=noise,
                        error_labels=args.error_labels, annotators=accs, overlap=overlap,
                        overlap_k=args.overlap_k, l2=args.l2, test_fraction=args.test_fraction,
                        audit_rounds=args.audit_rounds)
    seeds = range(args.seed_offset, args.seed_offset + args.seeds)
    try:
        ds = load_dataset(args.data, label_col=getattr(args, "label_col", None))
        rows = run(ds, seeds, cfg, out=args.out, quiet=args.quiet)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(tables(rows))
    print(f"\nwrote {os.path.join(args.out, 'quality.csv')}")
    return 0
