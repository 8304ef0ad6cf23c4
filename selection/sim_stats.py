"""Summaries of simulated learning curves: AUC, labels saved, paired differences to random.

Rows are dicts with at least ``strategy``, ``seed``, ``n_labeled`` and ``accuracy`` (one per
strategy, seed and round), as :mod:`selection.simulate` writes them.  Every strategy of a run
sees the same split, initial set and oracle for a given seed, so strategy - random is a
*paired* difference per seed; its 95% interval over seeds is mean +- t_{0.975, S-1} sd / sqrt(S)
(Student t, as the seeds are few).  "Worse than random beyond noise" at a label count means
the whole interval lies below zero.
"""
from __future__ import annotations

import csv
import math

import numpy as np


def curves(rows: list[dict]) -> dict[str, dict[str, np.ndarray]]:
    """Per strategy: label counts ``n`` (k,), seeds (S,), accuracies ``acc`` (S, k) (NaN where missing)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for label in dict.fromkeys(r["strategy"] for r in rows):
        rs = [r for r in rows if r["strategy"] == label]
        seeds = sorted({r["seed"] for r in rs})
        ns = sorted({r["n_labeled"] for r in rs})
        acc = np.full((len(seeds), len(ns)), np.nan)
        for r in rs:
            acc[seeds.index(r["seed"]), ns.index(r["n_labeled"])] = r["accuracy"]
        out[label] = {"n": np.array(ns, dtype=float), "seeds": np.array(seeds), "acc": acc}
    return out


def auc(n: np.ndarray, acc: np.ndarray) -> float | np.ndarray:
    """Normalised area under the learning curve (trapezoid over label counts / range): the mean
    accuracy over the curve.  ``acc`` (k,) or (S, k) (one value per row)."""
    acc = np.asarray(acc, dtype=float)
    if len(n) < 2:
        return float(acc[..., 0]) if acc.ndim == 1 else acc[:, 0]
    a = np.sum((acc[..., 1:] + acc[..., :-1]) / 2 * np.diff(n), axis=-1) / (n[-1] - n[0])
    return float(a) if acc.ndim == 1 else a


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


def t975(df: int) -> float:
    """Two-sided 95% Student t quantile."""
    from scipy.stats import t  # noqa: PLC0415 - scikit-learn's dependency

    return float(t.ppf(0.975, df))


def paired_ci(diff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and half-width of the 95% interval over seeds (axis 0) of paired differences (S, ...)."""
    diff = np.asarray(diff, dtype=float)
    s = diff.shape[0]
    mean = diff.mean(axis=0)
    if s < 2:
        return mean, np.full_like(mean, np.nan)
    return mean, t975(s - 1) * diff.std(axis=0, ddof=1) / math.sqrt(s)


def paired_vs(cv: dict, label: str, baseline: str = "random") -> dict:
    """Paired comparison of ``label`` with ``baseline`` over their common seeds and label counts.

    Returns ``n`` (k,), ``diff``/``half`` (k,) accuracy difference and 95% half-width per label
    count, ``auc_diff``/``auc_half`` over the curve, and ``worse``/``better`` (k,) bools: the
    interval entirely below / above zero.
    """
    a, b = cv[label], cv[baseline]
    if not np.array_equal(a["n"], b["n"]):
        raise ValueError(f"{label} and {baseline} have different label counts; run them together")
    seeds = np.intersect1d(a["seeds"], b["seeds"])
    ia = np.searchsorted(a["seeds"], seeds)
    ib = np.searchsorted(b["seeds"], seeds)
    d = a["acc"][ia] - b["acc"][ib]
    m, h = paired_ci(d)
    am, ah = paired_ci(np.asarray(auc(a["n"], a["acc"][ia]) - auc(b["n"], b["acc"][ib])))  # (S,) per seed
    return {"n": a["n"], "diff": m, "half": h, "auc_diff": float(am), "auc_half": float(ah),
            "worse": m + h < 0, "better": m - h > 0, "seeds": len(seeds)}


def _cols(k: int, max_cols: int) -> np.ndarray:
    return np.unique(np.linspace(0, k - 1, num=min(max_cols, k)).round().astype(int))


def summary_table(rows: list[dict], baseline: str | None = "random", max_cols: int = 8) -> str:
    """Markdown table: accuracy mean ± sd at (up to ``max_cols``) label counts, AUC, and labels saved.

    Labels saved: the target is the baseline's (random's) final mean accuracy; for each strategy
    the labels its mean curve needs to reach it (linear interpolation), and the saving
    1 - labels_strategy / labels_random (Cluster-Margin's "% fewer labels"; the inverse ratio is
    the sample saving ratio).
    """
    cv = curves(rows)
    ns = next(iter(cv.values()))["n"]
    cols = _cols(len(ns), max_cols)
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


def paired_table(rows: list[dict], baseline: str = "random", max_cols: int = 8) -> str:
    """Markdown table of paired differences to ``baseline`` in accuracy points (mean ± 95% half-width).

    A cell is marked ``▼`` where the strategy is worse than the baseline beyond noise (the
    interval lies below 0) and ``▲`` where it is better; the last column lists, in words, every
    label count where it is worse beyond noise.
    """
    cv = curves(rows)
    if baseline not in cv:
        return ""
    ns = cv[baseline]["n"]
    cols = _cols(len(ns), max_cols)
    head = (["vs random (points)"] + [f"{int(ns[i])}" for i in cols]
            + ["mean over curve", "worse than random beyond noise"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label in cv:
        if label == baseline:
            continue
        p = paired_vs(cv, label, baseline)
        cell = lambda m, h, w, b: f"{100 * m:+.1f} ± {100 * h:.1f}" + (" ▼" if w else " ▲" if b else "")  # noqa: E731
        cells = [label] + [cell(p["diff"][i], p["half"][i], p["worse"][i], p["better"][i]) for i in cols]
        ad, ah = p["auc_diff"], p["auc_half"]
        cells.append(cell(ad, ah, ad + ah < 0, ad - ah > 0))
        worse = [str(int(n)) for n, w in zip(p["n"], p["worse"]) if w]
        cells.append("**at " + ", ".join(worse) + " labels**" if worse else "never")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def coverage_table(rows: list[dict], max_cols: int = 8) -> str:
    """Markdown table of the mean number of classes seen per label count, or "" when every curve saw
    every class from its first round (rows need ``classes_seen``)."""
    if not rows or "classes_seen" not in rows[0]:
        return ""
    seen = [int(r["classes_seen"]) for r in rows]
    if min(seen) == max(seen):
        return ""
    cv = curves([{**r, "accuracy": float(r["classes_seen"])} for r in rows])
    ns = next(iter(cv.values()))["n"]
    cols = _cols(len(ns), max_cols)
    head = ["classes seen"] + [f"{int(ns[i])}" for i in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, c in cv.items():
        m = np.nanmean(c["acc"], axis=0)
        lines.append("| " + " | ".join([label] + [f"{m[i]:.1f}" for i in cols]) + " |")
    return "\n".join(lines)


def read_csv(path: str) -> list[dict]:
    rows = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            rows.append({**r, "seed": int(r["seed"]), "round": int(r["round"]), "n_labeled": int(r["n_labeled"]),
                         "accuracy": float(r["accuracy"])})
            if r.get("classes_seen", "") != "":
                rows[-1]["classes_seen"] = int(r["classes_seen"])
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
