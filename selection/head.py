"""The classifier head: multinomial logistic regression with L2, in torch (CPU or CUDA).

Objective (the same minimiser as scikit-learn's ``LogisticRegression(C=1/l2)``)::

    L(W, b) = sum_i CE(softmax(W x_i + b), y_i) + (l2 / 2) * ||W||_F^2

The intercept ``b`` is not penalised.  With exactly two classes seen, scikit-learn (like every
binary logistic regression) fits ONE weight vector w = w_1 - w_0 with penalty (l2/2)||w||^2,
whereas the symmetric softmax penalty (l2/2)(||w_0||^2 + ||w_1||^2) is minimised at
w_0 = -w_1 and equals (l2/4)||w||^2 - half as strong.  The head therefore doubles the penalty
on the symmetric parameters when two classes are present, so that its probabilities equal
``LogisticRegression(C=1/l2)``'s for c = 2 as well (and the reference-class parametrisation
used by FIRAL sees exactly lambda = l2).  Classes that do not occur in ``y`` are left out of
the fit (their unpenalised intercept would run off to -inf: the loss keeps falling as their
probability goes to 0, and the optimiser crawls along that direction); like scikit-learn,
which only knows the classes it saw, the head gives them probability 0: coefficients 0 and
the intercept :data:`ABSENT_LOGIT`.  A later fit that sees them starts them from zero.

The solver works in standardised coordinates (x' = (x - m) / s, column means m and
s_j^2 = var_j + 4 l2 / n, m = 0 without an intercept): W' = W diag(s), b' = b + W m, with the
penalty rewritten as sum_j ||W'_{:,j}||^2 / s_j^2.  That is the same objective and minimiser,
only better conditioned (s_j balances the Hessian diagonal; raw digits pixels otherwise need
thousands of L-BFGS steps).

Solver: full-batch L-BFGS (strong Wolfe line search) up to ``minibatch_threshold`` rows;
beyond that a few epochs of mini-batch Adam on the same objective (the penalty spread over
the batches), which is an approximation of the optimum that scales in memory.  Both start
from ``warm_start`` (a previous :meth:`get_state`) when given.

The L2 strength is also the lambda of FIRAL's Fisher matrices (DESIGN.md).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import numpy as np

from .backend import to_torch, torch_device

_DTYPES = ("float32", "float64")

#: intercept of classes absent from the training labels: exp(-1e4) is 0 in any float type
ABSENT_LOGIT = -1.0e4


#: below this many multiply-adds per pass (n * d * c) the CPU fit runs single-threaded
SMALL_WORK = 20_000_000


@contextmanager
def _threads_for(torch, device: str, work: int):
    """One intra-op thread for small CPU problems, restored afterwards.

    For a few hundred rows torch's thread pool costs more in synchronisation than it saves;
    measured on this 2-core machine under load, a 200 x 64 digits fit took 0.05 s with one
    thread and 0.8-3.5 s with two.
    """
    if device != "cpu" or work >= SMALL_WORK or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class LogisticHead:
    """Multinomial logistic regression with L2 (see module docstring).

    Parameters
    ----------
    n_classes : number of classes c (labels are ints in ``[0, c)``; some may be missing).
    l2 : L2 strength (>= 0) on the weights; ``C = 1 / l2`` in scikit-learn terms.
    fit_intercept : learn a per-class bias (unpenalised).
    device : "cpu" | "cuda" | "auto" (torch's own CUDA check).
    dtype : "float32" | "float64" for the parameters and computations.
    max_iter : L-BFGS iterations (full-batch path).
    tol : L-BFGS stops when the max-abs gradient of the per-row objective falls below it.
    minibatch_threshold : above this many rows, fit by mini-batch Adam instead.
    batch_rows, epochs, lr : mini-batch path settings.
    random_state : seeds the mini-batch order.

    Learned attributes: ``coef_`` (c, d) float64 numpy, ``intercept_`` (c,), ``n_iter_``.
    """

    def __init__(
        self,
        n_classes: int,
        *,
        l2: float = 1.0,
        fit_intercept: bool = True,
        device: str = "cpu",
        dtype: str = "float32",
        max_iter: int = 500,
        tol: float = 1e-6,
        minibatch_threshold: int = 200_000,
        batch_rows: int = 8192,
        epochs: int = 5,
        lr: float = 0.01,
        random_state: int | None = 0,
    ) -> None:
        self.n_classes = n_classes
        self.l2 = l2
        self.fit_intercept = fit_intercept
        self.device = device
        self.dtype = dtype
        self.max_iter = max_iter
        self.tol = tol
        self.minibatch_threshold = minibatch_threshold
        self.batch_rows = batch_rows
        self.epochs = epochs
        self.lr = lr
        self.random_state = random_state

    # ------------------------------------------------------------------ checks
    def _check_params(self) -> None:
        if isinstance(self.n_classes, bool) or not isinstance(self.n_classes, (int, np.integer)) or self.n_classes < 2:
            raise ValueError(f"n_classes={self.n_classes!r} must be an int >= 2")
        if not np.isfinite(self.l2) or self.l2 < 0:
            raise ValueError(f"l2={self.l2!r} must be a finite number >= 0")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is not one of {_DTYPES}")
        for name in ("max_iter", "minibatch_threshold", "batch_rows", "epochs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}={v!r} must be an int >= 1")
        if not (self.tol > 0):
            raise ValueError(f"tol={self.tol!r} must be > 0")
        if not (self.lr > 0):
            raise ValueError(f"lr={self.lr!r} must be > 0")

    def _torch(self):
        import torch  # noqa: PLC0415 - torch is heavy; import where used

        return torch, torch_device(self.device), getattr(torch, self.dtype)

    def _as_tensor(self, X: Any, name: str = "X"):
        torch, dev, dt = self._torch()
        if isinstance(X, np.ndarray) and X.dtype.kind not in "fiu":
            raise ValueError(f"{name} must be numeric; got dtype {X.dtype}")
        t = to_torch(X if not isinstance(X, (list, tuple)) else np.asarray(X))
        if t.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n, d); got shape {tuple(t.shape)}")
        t = t.to(device=dev, dtype=dt)
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf")
        return t

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any, warm_start: dict[str, np.ndarray] | None = None) -> "LogisticHead":
        """Fit on ``X`` (n, d) float and ``y`` (n,) int in ``[0, n_classes)``; returns ``self``.

        ``warm_start``: a dict from :meth:`get_state` (``coef`` (c, d), ``intercept`` (c,)) to start from.
        """
        self._check_params()
        torch, dev, dt = self._torch()
        Xt = self._as_tensor(X)
        n, d = Xt.shape
        y_np = np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else
                          (y.get() if hasattr(y, "get") and not isinstance(y, np.ndarray) else y))
        if y_np.ndim != 1 or len(y_np) != n:
            raise ValueError(f"y must have shape ({n},) to match X; got {y_np.shape}")
        if n == 0:
            raise ValueError("cannot fit on zero rows")
        if not np.issubdtype(y_np.dtype, np.integer):
            if np.issubdtype(y_np.dtype, np.floating) and np.all(np.mod(y_np, 1) == 0):
                y_np = y_np.astype(np.int64)
            else:
                raise ValueError(f"y must hold integer class indices; got dtype {y_np.dtype}")
        c = int(self.n_classes)
        if y_np.min() < 0 or y_np.max() >= c:
            raise ValueError(f"y has class indices outside [0, {c}): min {y_np.min()}, max {y_np.max()}")
        counts = np.bincount(y_np, minlength=c)
        present = np.flatnonzero(counts > 0)
        cp = len(present)
        remap = np.full(c, -1, dtype=np.int64)
        remap[present] = np.arange(cp)
        yt = torch.as_tensor(remap[y_np], device=dev)

        # binary: the symmetric softmax needs twice the penalty to equal the one-vector binary
        # objective of scikit-learn (module docstring)
        self.l2_effective_ = float(self.l2) * (2.0 if cp == 2 else 1.0)
        # standardised coordinates (module docstring): a diagonal preconditioner, exact
        mean = Xt.mean(dim=0) if self.fit_intercept else torch.zeros(d, device=dev, dtype=dt)
        # s_j^2 = var_j + 4 l2 / n balances the Hessian diagonal of the per-row objective
        # (~ var_j / 4 from the data, l2 / n from the penalty) to about 1/4 in every column.
        scale = (((Xt - mean) ** 2).mean(dim=0) + 4.0 * self.l2_effective_ / n).sqrt()
        scale = torch.where(scale > 1e-12 * (1 + mean.abs()), scale, torch.ones_like(scale))
        Xs = (Xt - mean) / scale
        inv_s2 = 1.0 / scale**2

        W = torch.zeros((cp, d), device=dev, dtype=dt)
        b = torch.zeros((cp,), device=dev, dtype=dt)
        if warm_start is not None:
            coef = np.asarray(warm_start["coef"], dtype=np.float64)
            if coef.shape != (c, d):
                raise ValueError(f"warm_start coef has shape {coef.shape}; expected {(c, d)}")
            icpt = np.zeros(c)
            if self.fit_intercept and "intercept" in warm_start:
                icpt = np.asarray(warm_start["intercept"], dtype=np.float64)
                if icpt.shape != (c,):
                    raise ValueError(f"warm_start intercept has shape {icpt.shape}; expected {(c,)}")
            coef, icpt = coef[present].copy(), icpt[present].copy()
            fresh = icpt <= ABSENT_LOGIT / 2  # classes the previous fit had not seen
            coef[fresh], icpt[fresh] = 0.0, 0.0
            W0 = torch.as_tensor(coef, device=dev, dtype=dt)
            W = (W0 * scale).clone()
            b = (torch.as_tensor(icpt, device=dev, dtype=dt) + W0 @ mean).clone()
        W.requires_grad_(True)
        b.requires_grad_(self.fit_intercept)

        with _threads_for(torch, dev, n * d * cp):
            if cp < 2:
                self.n_iter_, self.solver_ = 0, "single-class"  # softmax over one class is constant
            elif n <= self.minibatch_threshold:
                self.n_iter_ = self._fit_lbfgs(torch, Xs, yt, W, b, inv_s2)
                self.solver_ = "lbfgs"
            else:
                self.n_iter_ = self._fit_minibatch(torch, Xs, yt, W, b, inv_s2)
                self.solver_ = "minibatch-adam"
        with torch.no_grad():
            W_raw = W / scale
            b_raw = b - W_raw @ mean
        self.coef_ = np.zeros((c, d), dtype=np.float64)
        self.coef_[present] = W_raw.cpu().numpy()
        self.intercept_ = np.full(c, ABSENT_LOGIT, dtype=np.float64)
        self.intercept_[present] = b_raw.cpu().numpy() if self.fit_intercept else 0.0
        self.classes_seen_ = present
        self.n_features_in_ = d
        return self

    def _objective(self, torch, Xt, yt, W, b, inv_s2, n_total: int):
        """Per-row objective on a (possibly partial) set: mean CE + penalty / n_total."""
        logits = Xt @ W.T
        if self.fit_intercept:
            logits = logits + b
        ce = torch.nn.functional.cross_entropy(logits, yt, reduction="sum")
        pen = 0.5 * self.l2_effective_ * (W * W * inv_s2).sum()
        return ce / len(yt), pen / n_total

    def _fit_lbfgs(self, torch, Xt, yt, W, b, inv_s2) -> int:
        n = len(yt)
        params = [W, b] if self.fit_intercept else [W]
        # The objective is divided by n so that ``tol`` does not depend on the set size.
        opt = torch.optim.LBFGS(
            params, lr=1.0, max_iter=self.max_iter, max_eval=2 * self.max_iter, tolerance_grad=self.tol,
            tolerance_change=1e-12 if self.dtype == "float64" else 1e-9,
            history_size=20, line_search_fn="strong_wolfe",
        )

        def closure():
            opt.zero_grad()
            ce, pen = self._objective(torch, Xt, yt, W, b, inv_s2, n)
            loss = ce + pen
            loss.backward()
            return loss

        opt.step(closure)
        state = opt.state[opt._params[0]]
        return int(state.get("n_iter", 0))

    def _fit_minibatch(self, torch, Xt, yt, W, b, inv_s2) -> int:
        n = len(yt)
        params = [W, b] if self.fit_intercept else [W]
        opt = torch.optim.Adam(params, lr=self.lr)
        steps_per_epoch = -(-n // self.batch_rows)
        total = steps_per_epoch * self.epochs
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        gen = torch.Generator(device="cpu")
        gen.manual_seed(0 if self.random_state is None else int(self.random_state))
        steps = 0
        for _ in range(self.epochs):
            perm = torch.randperm(n, generator=gen).to(Xt.device)
            for s in range(steps_per_epoch):
                rows = perm[s * self.batch_rows:(s + 1) * self.batch_rows]
                opt.zero_grad()
                ce, pen = self._objective(torch, Xt[rows], yt[rows], W, b, inv_s2, n)
                (ce + pen).backward()
                opt.step()
                sched.step()
                steps += 1
        return steps

    # ------------------------------------------------------------------ predict
    def decision_function(self, X: Any) -> np.ndarray:
        """Logits (n, c) float64."""
        return self._forward(X, proba=False)

    def predict_proba(self, X: Any, chunk_rows: int = 262_144) -> np.ndarray:
        """Class probabilities (n, c) float64 numpy (host), computed in chunks of rows."""
        return self._forward(X, proba=True, chunk_rows=chunk_rows)

    def predict(self, X: Any) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    def _forward(self, X: Any, *, proba: bool, chunk_rows: int = 262_144) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise RuntimeError("LogisticHead is not fitted; call fit() or set_state() first")
        torch, dev, dt = self._torch()
        Xt = self._as_tensor(X)
        if Xt.shape[1] != self.coef_.shape[1]:
            raise ValueError(f"X has {Xt.shape[1]} features; the head was fitted on {self.coef_.shape[1]}")
        W = torch.as_tensor(self.coef_, device=dev, dtype=dt)
        b = torch.as_tensor(self.intercept_, device=dev, dtype=dt)
        out = np.empty((Xt.shape[0], self.coef_.shape[0]), dtype=np.float64)
        with torch.no_grad(), _threads_for(torch, dev, Xt.shape[0] * Xt.shape[1] * W.shape[0]):
            for s in range(0, Xt.shape[0], chunk_rows):
                z = Xt[s:s + chunk_rows] @ W.T + b
                if proba:
                    z = torch.softmax(z, dim=1)
                out[s:s + chunk_rows] = z.cpu().numpy()
        return out

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict[str, np.ndarray]:
        """``{"coef": (c, d), "intercept": (c,)}`` float64 copies (JSON/npz friendly)."""
        if not hasattr(self, "coef_"):
            raise RuntimeError("LogisticHead is not fitted; nothing to save")
        return {"coef": self.coef_.copy(), "intercept": self.intercept_.copy()}

    def set_state(self, state: dict[str, np.ndarray]) -> "LogisticHead":
        coef = np.asarray(state["coef"], dtype=np.float64)
        if coef.ndim != 2 or coef.shape[0] != self.n_classes:
            raise ValueError(f"state coef has shape {coef.shape}; expected ({self.n_classes}, d)")
        icpt = np.asarray(state.get("intercept", np.zeros(coef.shape[0])), dtype=np.float64)
        if icpt.shape != (coef.shape[0],):
            raise ValueError(f"state intercept has shape {icpt.shape}; expected ({coef.shape[0]},)")
        self.coef_ = coef.copy()
        self.intercept_ = icpt.copy()
        self.n_features_in_ = coef.shape[1]
        return self

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], **kw: Any) -> "LogisticHead":
        coef = np.asarray(state["coef"])
        return cls(coef.shape[0], **kw).set_state(state)
