"""Small FIRAL problems and dense references shared by the test_firal_* files.

The references here are written independently of selection.firal: per-point Fisher matrices
are built with np.kron one point at a time, straight from the definition.
"""
import numpy as np


def softmax(L):
    P = np.exp(L - L.max(1, keepdims=True))
    return P / P.sum(1, keepdims=True)


def synth(n=300, c=4, d=5, m=8, seed=0, sep=2.0):
    """Gaussian clusters, probabilities from a random linear softmax model."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(c, d)) * sep
    y = rng.integers(0, c, n + m)
    X = centers[y] + rng.normal(size=(n + m, d))
    W = rng.normal(size=(c, d)) * 0.5
    P = softmax(X @ W.T)
    return X[:n], P[:n], X[n:], P[n:], y[n:]


def kron_fisher(x, p):
    """H = (diag(q) - q q^T) (x) x x^T with q = p[:-1], x with a 1 appended (intercept)."""
    q = p[:-1]
    xb = np.append(x, 1.0)
    return np.kron(np.diag(q) - np.outer(q, q), np.outer(xb, xb))


def ref_sigma(Xo, Po, Xp, Pp, z, lam):
    p = (Pp.shape[1] - 1) * (Xp.shape[1] + 1)
    S = lam * np.eye(p)
    for x, pr in zip(Xo, Po):
        S += kron_fisher(x, pr)
    for zi, x, pr in zip(z, Xp, Pp):
        S += zi * kron_fisher(x, pr)
    return S


def ref_hp(Xp, Pp):
    return sum(kron_fisher(x, pr) for x, pr in zip(Xp, Pp)) / len(Xp)


def ref_fir(Xo, Po, Xp, Pp, S, lam):
    """Fisher information ratio tr(Sigma_S^-1 H_p) of the batch S (pool indices)."""
    z = np.zeros(len(Xp))
    z[np.asarray(S)] = 1.0
    return float(np.trace(np.linalg.solve(ref_sigma(Xo, Po, Xp, Pp, z, lam), ref_hp(Xp, Pp))))
