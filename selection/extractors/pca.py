"""PCA of an embedding matrix, to shrink d before selection (FIRAL's cost grows with d², ROUND's with d³).

Principal axes are the eigenvectors of the sample covariance (Jolliffe, *Principal Component
Analysis*, 2nd ed., §1.1), accumulated in float64 in row blocks so only one (d, d) matrix is held.
Signs are fixed (largest-magnitude loading positive) so a refit on the same data gives the same
axes.  ``transform`` centres and projects: Z = (X - mean) W, W : (d, k).
"""
from __future__ import annotations

import numpy as np


class PCA:
    """Principal component analysis to ``n_components`` dimensions.

    Attributes after ``fit``: ``mean_`` (d,), ``components_`` (k, d) rows = axes,
    ``explained_variance_`` (k,), ``explained_variance_ratio_`` (k,).
    """

    def __init__(self, n_components: int) -> None:
        self.n_components = n_components

    def fit(self, X: np.ndarray, *, block: int = 8192) -> "PCA":
        """X : (n, d) float; k = n_components must be within [1, d]."""
        X = np.asarray(X)
        n, d = X.shape
        k = int(self.n_components)
        if not 1 <= k <= d:
            raise ValueError(f"n_components={k} must be between 1 and d={d}")
        mean = np.zeros(d)
        for a in range(0, n, block):
            mean += X[a:a + block].sum(axis=0, dtype=np.float64)
        mean /= n
        cov = np.zeros((d, d))
        for a in range(0, n, block):
            Z = X[a:a + block].astype(np.float64) - mean
            cov += Z.T @ Z
        cov /= max(n - 1, 1)
        w, V = np.linalg.eigh(cov)
        order = np.argsort(w)[::-1][:k]
        w, V = np.clip(w[order], 0.0, None), V[:, order]
        flip = np.sign(V[np.abs(V).argmax(axis=0), np.arange(k)])
        V = V * np.where(flip == 0, 1.0, flip)
        total = float(np.clip(np.trace(cov), 0.0, None))
        self.mean_ = mean
        self.components_ = V.T.copy()
        self.explained_variance_ = w
        self.explained_variance_ratio_ = w / total if total > 0 else np.zeros(k)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """(n, d) -> (n, k) float32."""
        return ((np.asarray(X, dtype=np.float64) - self.mean_) @ self.components_.T).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to store beside the embedding version (``np.savez``)."""
        return {"mean": self.mean_, "components": self.components_,
                "explained_variance": self.explained_variance_,
                "explained_variance_ratio": self.explained_variance_ratio_}
