"""The dashboard's accuracy interval in the app's own setup, simulated: coverage, half-width, learner cost.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 \\
        .venv/bin/python bench/app_accuracy.py --seeds 50 --rates 0.1,0.3 --out sim-out/app-accuracy

What it reproduces (issue 15, "the dashboard of a project labeled by three people"): a project on
scikit-learn's digits (stratified 70/30 split per seed: the pool is the project's items, the test
set only scores the learner), the app's default strategy (``auto``), batch 20, and one label per item
from one of three annotators chosen at random (accuracies ``--annotators``, default 0.97/0.9/0.8; a
wrong answer is a uniformly chosen other class).  Each round does what ``annotate/services/rounds.py``
does, with the same library calls: train the head (warm start) on the labels so far; the confidence f
on the pool from the calibration the previous round's quality task stored (the neighbour
``CorrectnessModel`` fitted on 5-fold out-of-fold predictions, from 30 labels on; before that the
head's max probability); the audit probabilities ``inclusion_probabilities(sqrt(f(1-f)), batch *
audit_rate, floor=0.2)``; :func:`selection.plan.plan_batch` (Poisson audit draw, the strategy on the
rest).  The whole batch is labeled before the next round (no skips, no expiry).

Each round with a model is a stratum; its estimand is that model's agreement with the label the item
gets (the annotator's) over its pool, as the dashboard's "agrees with the team's final label".  At
each checkpoint (``--checkpoints`` labels) the strata so far are combined as
``annotate/selectors_quality.accuracy_estimate`` combines them, and the truth is the same weighted
mean of the strata's estimands.  Both weightings are reported ("weights" column):

- ``count``: the round's expected audit count sum(pi) (the app before this benchmark);
- ``precision``: 1 / (the variance f predicts for the round's estimate), fixed before its draw like
  the count, so the combination stays a martingale (Zrnic & Candes 2024, Sec. 5); it leans on the
  later, surer models, so the estimand is also nearer the newest model.

Estimators per weighting: ``active_inference`` (the dashboard's), ``audit_weighted`` (its tooltip's
1/pi-weighted audit share) and ``no_variance_floor`` (active inference without the floor of the
variance f predicts: a diagnostic).  Also reported per checkpoint: the learner's test accuracy
(ground truth), so the cost of a larger audit share to ``auto``'s curve is read from the same runs
(paired over seeds: splits, annotator labels and round streams are shared across rates and designs).

``--designs poisson:BETA`` measures the alternative of counting every label (quality.md): once
``auto`` hands over to margin, the learner's picks are a Poisson draw too, with probabilities
proportional to margin^BETA, so every label has a known probability.

``--designs adaptive:TARGET[:MAINTENANCE]`` measures the adaptive audit rate (the app's
``audit_target_halfwidth``, ``selection.quality.adaptive_audit_rate``): each round audits at the
``--rates`` value while the strata so far, combined as the dashboard combines them (weights sum(pi)),
give a half-width above TARGET (or rest on fewer than 10 audit labels), else at
min(rate, MAINTENANCE) (default 0.1).  Rows carry the last round's rate and the mean rate so far.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from selection import SelectionContext, make_strategy  # noqa: E402
from selection.datasets import load_dataset  # noqa: E402
from selection.head import LogisticHead  # noqa: E402
from selection.plan import plan_batch  # noqa: E402
from selection.quality import out_of_fold_proba  # noqa: E402
from selection.quality.correctness import (  # noqa: E402
    CorrectnessModel,
    correctness_features,
    fit_logistic,
    knn_proba,
)
from selection.quality.errors import stratified_folds  # noqa: E402
from selection.quality.estimators import (  # noqa: E402
    active_inference_stratum,
    adaptive_audit_rate,
    combine_strata,
    inclusion_probabilities,
)
from selection.scores import margin_scores  # noqa: E402
from selection.simulate import split  # noqa: E402

AUDIT_FLOOR = 0.2  # annotate/services/quality_scores.AUDIT_FLOOR
MIN_LABELS_FOR_SCORES = 30  # quality_scores.MIN_LABELS_FOR_SCORES
MIN_ACTIVE_LABELS = 10  # annotate/selectors_quality.MIN_ACTIVE_LABELS
N_FOLDS = 5


def annotator_labels(y, accs, c, rng):
    """(n,) the label each item gets: one annotator drawn uniformly, wrong answers uniform over the others."""
    who = rng.integers(0, len(accs), len(y))
    right = rng.random(len(y)) < np.asarray(accs)[who]
    return np.where(right, y, (y + rng.integers(1, c, len(y))) % c)


def neighbour_calibration(X, y, c, l2, seed):
    """The quality task's ``CorrectnessModel`` weights (annotate/services/quality_scores.quality_label_scores)."""

    def fit_predict(Xa, ya, Xb):
        return LogisticHead(c, l2=l2, random_state=seed).fit(Xa, ya).predict_proba(Xb)

    P_oof = out_of_fold_proba(X, y, c, n_folds=N_FOLDS, random_state=seed, fit_predict=fit_predict)
    folds = stratified_folds(y, N_FOLDS, random_state=seed)
    F = np.zeros((len(y), 2))
    for k in range(N_FOLDS):
        te = folds == k
        F[te] = correctness_features(P_oof[te], knn_proba(X[~te], y[~te], X[te], c))
    return fit_logistic(F, (P_oof.argmax(1) == y).astype(float), ridge=1.0)


def run_seed(ds, seed: int, *, rate: float, accs, batch: int, checkpoints, l2: float = 1.0,
             design: str = "audit") -> list[dict]:
    c = ds.n_classes
    pool, test = split(ds.y, 0.3, np.random.default_rng([seed, 0]))
    X, y_true = ds.X[pool], ds.y[pool]
    y_obs = annotator_labels(y_true, accs, c, np.random.default_rng([seed, 1]))
    X_test, y_test = ds.X[test], ds.y[test]
    N = len(pool)
    labeled = np.zeros(N, dtype=bool)
    strategy = make_strategy("auto", {})
    state, cal = None, None
    strata: list[dict] = []
    rows: list[dict] = []
    todo = sorted(checkpoints)
    rnd = 0
    adaptive = design.startswith("adaptive")
    if adaptive:  # adaptive:TARGET[:MAINTENANCE] (annotate/services/rounds.py, project.audit_target_halfwidth)
        parts = design.split(":")
        target, maintenance = float(parts[1]), float(parts[2]) if len(parts) > 2 else 0.1
    rates_used: list[float] = []
    while todo and labeled.sum() < N:
        lab, U = np.flatnonzero(labeled), np.flatnonzero(~labeled)
        rrng = np.random.default_rng([seed, 2, rnd])  # the round's seed, as the app seeds plan_batch
        head = P_U = P_lab = pi = f = None
        round_rate = rate
        if adaptive:  # from the last stored estimate: the strata so far, combined as the dashboard does
            last_hw = None
            if sum(s["n_audit"] for s in strata) >= MIN_ACTIVE_LABELS:
                last_hw = combine_strata([s["est"] for s in strata], [s["w_count"] for s in strata]).half_width
            round_rate = adaptive_audit_rate(rate, target_half_width=target, last_half_width=last_hw,
                                             maintenance_rate=maintenance)
        rates_used.append(round_rate)
        if len(lab):
            head = LogisticHead(c, l2=l2, random_state=seed).fit(X[lab], y_obs[lab], warm_start=state)
            state = head.get_state()
            P_U, P_lab = head.predict_proba(X[U]), head.predict_proba(X[lab])
            f = (CorrectnessModel(cal).predict(P_U, X[U], X[lab], y_obs[lab]) if cal is not None
                 else P_U.max(1).astype(np.float64))
            pi = inclusion_probabilities(np.sqrt(f * (1 - f)), min(batch, len(U)) * round_rate,
                                         floor=AUDIT_FLOOR)
        stochastic = (design.startswith("poisson") and head is not None
                      and strategy.typiclust_share(len(lab), c, True) == 0)
        if stochastic:
            # every label counts: the learner's draw is Poisson too, pi_l proportional to margin^beta
            # (Kirsch et al. 2023's power acquisition, with independent draws so pi is known), and an item is
            # in the batch if either draw picks it: pi = 1 - (1 - pi_a)(1 - pi_l), every item counted
            beta = float(design.split(":")[1]) if ":" in design else 1.0
            budget = max(min(batch, len(U)) - pi.sum(), 1e-9)
            pi_l = inclusion_probabilities(np.asarray(margin_scores(P_U), np.float64) ** beta, budget, floor=1e-9)
            pi = 1 - (1 - pi) * (1 - pi_l)
            pos = np.flatnonzero(rrng.random(len(U)) < pi)
            aud = pos
        else:
            plan = plan_batch(strategy=strategy, X_pool=X[U], probs_pool=P_U,
                              X_labeled=X[lab] if len(lab) else None, probs_labeled=P_lab,
                              y_labeled=y_obs[lab] if len(lab) else None, batch_size=batch,
                              audit_rate=round_rate, rng=rrng, audit_probabilities=pi,
                              context=SelectionContext(X_all=X, pool_index=U, l2=l2,
                                                       embedding_version=f"{ds.name}|{seed}"))
            pos = np.array([p.position for p in plan.picks], dtype=np.int64)
            aud = np.array([p.position for p in plan.picks if p.is_audit], dtype=np.int64)
        if head is not None:
            pred = P_U.argmax(1)
            yy = (pred[aud] == y_obs[U[aud]]).astype(float)
            spread = float(np.sum((1 - pi) * f * (1 - f) / pi))
            strata.append({"round": rnd, "labels": len(lab), "truth": float(np.mean(pred == y_obs[U])),
                           "truth_gt": float(np.mean(pred == y_true[U])),
                           "est": active_inference_stratum(yy, f[aud], pi[aud], pool_conf_sum=float(f.sum()),
                                                           n_pool=len(U), pool_expected_spread=spread),
                           "nofloor": active_inference_stratum(yy, f[aud], pi[aud], pool_conf_sum=float(f.sum()),
                                                               n_pool=len(U)),
                           "plain": active_inference_stratum(yy, np.zeros(len(aud)), pi[aud], pool_conf_sum=0.0,
                                                             n_pool=len(U)),
                           "w_count": float(pi.sum()), "w_precision": len(U) ** 2 / max(spread, 1e-12),
                           "n_audit": len(aud)})
        labeled[U[pos]] = True
        rnd += 1
        n_lab = int(labeled.sum())
        if n_lab >= MIN_LABELS_FOR_SCORES:  # the follow-up quality task: calibration for the next round
            lab = np.flatnonzero(labeled)
            if len(np.unique(y_obs[lab])) >= 2:
                cal = neighbour_calibration(X[lab], y_obs[lab], c, l2, seed)
        while todo and n_lab >= todo[0]:
            target = todo.pop(0)
            head_now = LogisticHead(c, l2=l2, random_state=seed).fit(X[labeled], y_obs[labeled], warm_start=state)
            test_acc = float((head_now.predict_proba(X_test).argmax(1) == y_test).mean())
            row = {"seed": seed, "variant": f"{design}@{rate:g}", "rate": rate, "checkpoint": target,
                   "labels": n_lab, "rounds": len(strata),
                   "audit_labels": int(sum(s["n_audit"] for s in strata)), "test_accuracy": test_acc,
                   "newest_truth": strata[-1]["truth"] if strata else float("nan"),
                   "rate_last": rates_used[-1], "rate_mean": float(np.mean(rates_used))}
            for wname in ("count", "precision"):
                if not strata or not sum(s["n_audit"] for s in strata):
                    continue
                w = np.array([s[f"w_{wname}"] for s in strata])
                truth = float(np.dot(w, [s["truth"] for s in strata]) / w.sum())
                for est_name, key in (("active_inference", "est"), ("audit_weighted", "plain"),
                                      ("no_variance_floor", "nofloor")):
                    e = combine_strata([s[key] for s in strata], w)
                    row[f"{est_name}_{wname}_value"] = e.value
                    row[f"{est_name}_{wname}_hw"] = e.half_width
                    row[f"{est_name}_{wname}_covers"] = int(e.covers(truth))
                row[f"truth_{wname}"] = truth
            rows.append(row)
    return rows


def _job(args):
    ds, seed, kw = args
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        return run_seed(ds, seed, **kw)


def table(rows: list[dict]) -> str:
    out = ["| design@audit_rate | labels (target) | audit labels (mean) | weights | estimator | coverage | "
           "half-width mean (median) | truth mean | learner test accuracy | last round's audit rate (mean) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for var in dict.fromkeys(r["variant"] for r in rows):
        for cp in sorted({r["checkpoint"] for r in rows}):
            rr = [r for r in rows if r["variant"] == var and r["checkpoint"] == cp]
            for wname in ("count", "precision"):
                for est in ("active_inference", "audit_weighted", "no_variance_floor"):
                    k = f"{est}_{wname}"
                    rk = [r for r in rr if f"{k}_hw" in r]
                    if not rk:
                        continue
                    hw = np.array([r[f"{k}_hw"] for r in rk])
                    out.append(
                        f"| {var} | {np.mean([r['labels'] for r in rk]):.0f} ({cp:g}) | "
                        f"{np.mean([r['audit_labels'] for r in rk]):.1f} | {wname} | {est} | "
                        f"{100 * np.mean([r[f'{k}_covers'] for r in rk]):.0f}% ({len(rk)}) | "
                        f"{hw.mean():.3f} ({np.median(hw):.3f}) | "
                        f"{np.mean([r[f'truth_{wname}'] for r in rk]):.3f} | "
                        f"{np.mean([r['test_accuracy'] for r in rk]):.4f} | "
                        f"{np.mean([float(r.get('rate_last', r['rate'])) for r in rk]):.2f} |")
    return "\n".join(out)


def paired_cost(rows: list[dict], base: str) -> str:
    """Learner test accuracy of each variant minus the base variant's, paired by seed, mean ± 95% interval."""
    out = [f"| design@audit_rate | labels (target) | test accuracy minus {base}'s "
           "(points, mean ± 1.96 se, paired by seed) |", "|---|---|---|"]
    by = {(r["variant"], r["checkpoint"], r["seed"]): r["test_accuracy"] for r in rows}
    for var in [v for v in dict.fromkeys(r["variant"] for r in rows) if v != base]:
        for cp in sorted({r["checkpoint"] for r in rows}):
            d = np.array([by[(var, cp, s)] - by[(base, cp, s)] for (v, c_, s) in by
                          if v == var and c_ == cp and (base, cp, s) in by])
            if len(d) > 1:
                out.append(f"| {var} | {cp:g} | {100 * d.mean():+.2f} ± {196 * d.std(ddof=1) / np.sqrt(len(d)):.2f} "
                           f"({len(d)} seeds) |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="digits")
    p.add_argument("--seeds", type=int, default=50)
    p.add_argument("--seed-offset", type=int, default=0)
    p.add_argument("--rates", default="0.1", help="audit rates to compare, comma-separated (default 0.1)")
    p.add_argument("--designs", default="audit", help="audit (the app: the strategy's picks plus the Poisson audit "
                   "draw) and/or poisson:BETA (every label drawn with a known probability once auto hands over to "
                   "margin: the audit draw plus a Poisson draw proportional to margin^BETA) and/or "
                   "adaptive:TARGET[:MAINTENANCE] (the app's adaptive rate: each --rates value while the last "
                   "estimate's half-width is above TARGET, MAINTENANCE (default 0.1) once at or under it), "
                   "comma-separated")
    p.add_argument("--annotators", default="0.97,0.9,0.8")
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--checkpoints", default="100,200,300", help="label counts at which to estimate")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--out", default="sim-out/app-accuracy")
    p.add_argument("--from-csv", default="", help="only print the tables from an earlier rows.csv")
    args = p.parse_args(argv)
    if args.from_csv:
        with open(args.from_csv) as fh:
            rows = [{k: (v if k == "variant" or v == "" else float(v)) for k, v in r.items()}
                    for r in csv.DictReader(fh)]
    else:
        ds = load_dataset(args.data)
        rates = [float(r) for r in args.rates.split(",")]
        accs = [float(a) for a in args.annotators.split(",")]
        if any(not 0 <= r <= 1 for r in rates) or any(not 0 <= a <= 1 for a in accs) or args.batch < 1:
            raise SystemExit("error: --rates and --annotators in [0, 1], --batch >= 1")
        cps = [int(x) for x in args.checkpoints.split(",")]
        designs = args.designs.split(",")
        if any(d != "audit" and not d.startswith(("poisson", "adaptive:")) for d in designs):
            raise SystemExit("error: --designs takes audit, poisson:BETA and/or adaptive:TARGET[:MAINTENANCE]")
        jobs = [(ds, s, {"rate": r, "accs": accs, "batch": args.batch, "checkpoints": cps, "design": d})
                for d in designs for r in rates for s in range(args.seed_offset, args.seed_offset + args.seeds)]
        t0 = time.perf_counter()
        rows = []
        if args.jobs > 1:
            with ProcessPoolExecutor(args.jobs) as ex:
                for k, part in enumerate(ex.map(_job, jobs)):
                    rows += part
                    print(f"[{k + 1}/{len(jobs)} {time.perf_counter() - t0:6.0f}s]", file=sys.stderr, flush=True)
        else:
            for k, j in enumerate(jobs):
                rows += _job(j)
                print(f"[{k + 1}/{len(jobs)} {time.perf_counter() - t0:6.0f}s]", file=sys.stderr, flush=True)
        os.makedirs(args.out, exist_ok=True)
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(os.path.join(args.out, "rows.csv"), "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
        print(f"{len(jobs)} runs in {time.perf_counter() - t0:.0f} s; wrote {args.out}/rows.csv", file=sys.stderr)
    print(table(rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    for base in [v for v in variants if not v.startswith("adaptive")][:2] if len(variants) > 1 else []:
        print()
        print(paired_cost(rows, base))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
