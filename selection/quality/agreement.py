"""Inter-annotator agreement on a label matrix.

The common input is ``labels : (n_items, n_annotators) int``, entry ``-1`` where that annotator
did not label that item (``MISSING``), otherwise a class in ``[0, c)``.

- :func:`cohen_kappa`: two raters on the items both labeled (Cohen 1960); equals
  ``sklearn.metrics.cohen_kappa_score``.
- :func:`pairwise_cohen_kappa`: the (m, m) matrix of it, NaN where a pair shares < 2 items.
- :func:`fleiss_kappa`: items with the same number of ratings each (Fleiss 1971).
- :func:`krippendorff_alpha`: nominal alpha, any number of ratings per item, missing values
  allowed (Krippendorff 2011, "Computing Krippendorff's alpha-reliability", coincidence matrix).
- :func:`confusion_vs_reference`: each annotator's confusion matrix against a reference
  labelling (the consensus).
"""
from __future__ import annotations

import numpy as np

MISSING = -1


def check_label_matrix(labels, n_classes: int) -> np.ndarray:
    """Validate and return ``labels`` as an int64 (n, m) matrix (module docstring)."""
    L = np.asarray(labels)
    if L.ndim != 2:
        raise ValueError(f"labels must be a 2-D (n_items, n_annotators) matrix; got shape {L.shape}")
    if L.size and L.dtype.kind not in "iu":
        raise ValueError(f"labels must hold integers (-1 for missing); got dtype {L.dtype}")
    if isinstance(n_classes, bool) or int(n_classes) != n_classes or n_classes < 2:
        raise ValueError(f"n_classes={n_classes!r} must be an int >= 2")
    L = L.astype(np.int64)
    bad = (L != MISSING) & ((L < 0) | (L >= n_classes))
    if bad.any():
        raise ValueError(f"labels hold {int(bad.sum())} value(s) outside [0, {n_classes}) and not -1 (missing)")
    return L


def item_counts(labels, n_classes: int) -> np.ndarray:
    """counts : (n_items, c) how many annotators gave each class to each item."""
    L = check_label_matrix(labels, n_classes)
    counts = np.zeros((L.shape[0], n_classes), dtype=np.int64)
    rows, cols = np.nonzero(L != MISSING)
    np.add.at(counts, (rows, L[rows, cols]), 1)
    return counts


def cohen_kappa(a, b, n_classes: int) -> float:
    """Cohen's kappa of two label vectors (n,) over the classes [0, c); NaN if chance agreement is 1."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-D of equal length; got {a.shape} and {b.shape}")
    if len(a) == 0:
        return float("nan")
    C = np.zeros((n_classes, n_classes))
    np.add.at(C, (a, b), 1)
    C /= C.sum()
    po = np.trace(C)
    pe = float(C.sum(1) @ C.sum(0))
    return float("nan") if pe >= 1 else float((po - pe) / (1 - pe))


def pairwise_cohen_kappa(labels, n_classes: int, *, min_common: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(kappa, n_common) : (m, m) Cohen's kappa per annotator pair and the items they share.

    Diagonal: kappa 1 and the annotator's own count.  NaN where a pair shares fewer than
    ``min_common`` items.
    """
    L = check_label_matrix(labels, n_classes)
    m = L.shape[1]
    kappa = np.full((m, m), np.nan)
    common = np.zeros((m, m), dtype=np.int64)
    seen = L != MISSING
    for i in range(m):
        common[i, i] = seen[:, i].sum()
        kappa[i, i] = 1.0
        for j in range(i + 1, m):
            both = seen[:, i] & seen[:, j]
            common[i, j] = common[j, i] = both.sum()
            if both.sum() >= min_common:
                kappa[i, j] = kappa[j, i] = cohen_kappa(L[both, i], L[both, j], n_classes)
    return kappa, common


def fleiss_kappa(counts) -> float:
    """Fleiss' kappa from counts : (n_items, c), every row summing to the same r >= 2 ratings."""
    C = np.asarray(counts, dtype=np.float64)
    if C.ndim != 2 or len(C) == 0:
        raise ValueError(f"counts must be a non-empty (n_items, c) matrix; got shape {C.shape}")
    r = C.sum(1)
    if not np.all(r == r[0]) or r[0] < 2:
        raise ValueError("fleiss_kappa needs the same number (>= 2) of ratings on every item; "
                         "use krippendorff_alpha for uneven overlap")
    r = r[0]
    P_i = (np.sum(C * C, axis=1) - r) / (r * (r - 1))
    p_j = C.sum(0) / C.sum()
    pe = float(np.sum(p_j * p_j))
    return float("nan") if pe >= 1 else float((P_i.mean() - pe) / (1 - pe))


def krippendorff_alpha(labels, n_classes: int) -> float:
    """Nominal Krippendorff's alpha over the items with at least two labels; NaN if undefined.

    Coincidence matrix o_ck = sum over items u of (n_uc n_uk - [c = k] n_uc) / (m_u - 1), with
    n_uc the labels of class c on item u and m_u its label count; n_c = sum_k o_ck, n = sum n_c;
    alpha = 1 - (n - 1) sum_{c != k} o_ck / sum_{c != k} n_c n_k.
    """
    counts = item_counts(labels, n_classes).astype(np.float64)
    mu = counts.sum(1)
    keep = mu >= 2
    counts, mu = counts[keep], mu[keep]
    if len(counts) == 0:
        return float("nan")
    o = np.einsum("uc,uk->ck", counts / (mu - 1)[:, None], counts) - np.diag((counts / (mu - 1)[:, None]).sum(0))
    nc = o.sum(1)
    n = nc.sum()
    off = ~np.eye(n_classes, dtype=bool)
    de = np.outer(nc, nc)[off].sum()
    if de == 0:
        return float("nan")
    return float(1 - (n - 1) * o[off].sum() / de)


def confusion_vs_reference(labels, reference, n_classes: int) -> np.ndarray:
    """conf : (m, c, c) int, conf[a, r, l] = items with reference class r that annotator a labeled l.

    reference : (n_items,) ints; entries -1 (no reference) are skipped.
    """
    L = check_label_matrix(labels, n_classes)
    ref = np.asarray(reference, dtype=np.int64)
    if ref.shape != (L.shape[0],):
        raise ValueError(f"reference must have shape ({L.shape[0]},); got {ref.shape}")
    conf = np.zeros((L.shape[1], n_classes, n_classes), dtype=np.int64)
    rows, cols = np.nonzero((L != MISSING) & (ref != MISSING)[:, None])
    np.add.at(conf, (cols, ref[rows], L[rows, cols]), 1)
    return conf
