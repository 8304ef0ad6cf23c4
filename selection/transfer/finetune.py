"""Fine-tuning a backbone with a linear head on labelled items: LP-FT or FT, early stopping (torch).

- **FT**: backbone and a zero-initialised linear head trained together with AdamW (the head at
  ``head_lr``, the backbone at ``lr``).
- **LP-FT** (Kumar et al., ICLR 2022, "Fine-Tuning can Distort Pretrained Features"): first a linear
  probe — a multinomial logistic regression on the frozen backbone's features, fitted by L-BFGS —
  then every layer, head included, at the small learning rate ``lr``.  Starting from a good head keeps
  the first fine-tuning steps from distorting the pretrained features.
- **Early stopping**: a stratified ``val_share`` of the labels is held out (when every class present
  has at least two labels and the set has at least ``min_val`` items; otherwise there is no held-out
  set and the epochs run to the end).  After each epoch the held-out accuracy (ties: lower loss) is
  measured; the best state is kept and training stops after ``patience`` epochs without a gain.

The backbone is any ``torch.nn.Module`` mapping an input batch to (B, d) features; inputs come from
``load(indices) -> np.ndarray`` so a large labelled set never has to fit in memory at once.  The
backbone is trained in place and left in its best state.  Runs on CUDA when asked (``device="auto"``
and a GPU is present), otherwise CPU: slower, same result up to floating point.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

METHODS = ("lpft", "ft")


@dataclass
class FinetuneConfig:
    method: str = "lpft"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    lp_l2: float = 1e-3
    val_share: float = 0.2
    min_val: int = 10
    patience: int = 3
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not one of {METHODS}")
        for name in ("epochs", "batch_size", "patience", "min_val"):
            if int(getattr(self, name)) < (0 if name == "epochs" else 1):
                raise ValueError(f"{name}={getattr(self, name)!r} must be a positive integer")
        for name in ("lr", "head_lr"):
            if not (0 < float(getattr(self, name)) < 1):
                raise ValueError(f"{name}={getattr(self, name)!r} must be in (0, 1)")
        if not (0 <= self.val_share < 1):
            raise ValueError(f"val_share={self.val_share!r} must be in [0, 1)")


@dataclass
class FinetuneResult:
    method: str
    device: str
    head_weight: np.ndarray  # (c, d) float32
    head_bias: np.ndarray  # (c,) float32
    val_accuracy: float | None  # on the held-out share, None without one
    lp_val_accuracy: float | None  # the linear probe's, before fine-tuning (LP-FT only)
    best_epoch: int
    n_train: int
    n_val: int
    history: list[dict[str, Any]] = field(default_factory=list)


def torch_device(device: str) -> str:
    import torch  # noqa: PLC0415

    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={device!r} is not one of ('auto', 'cpu', 'cuda')")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch sees no GPU")
    return "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"


def split_held_out(labels: np.ndarray, share: float, min_val: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: ``share`` of each class (at least one, never a class's last label)."""
    n = len(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if share == 0 or n * share < min_val or (counts < 2).any():
        return np.arange(n), np.arange(0)
    picked: list[int] = []
    for k, cnt in zip(classes, counts):
        rows = rng.permutation(np.flatnonzero(labels == k))
        picked.extend(rows[: min(cnt - 1, max(1, round(share * cnt)))])
    val = np.sort(np.asarray(picked, dtype=np.int64))
    return np.setdiff1d(np.arange(n), val), val


def _features(backbone, load, idx, batch_size, device):
    import torch  # noqa: PLC0415

    backbone.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(idx), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(load(idx[s:s + batch_size]), dtype=np.float32)).to(device)
            out.append(backbone(x).float())
    return torch.cat(out)


def _linear_probe(feats, y, n_classes, l2):
    """Multinomial logistic regression on frozen features (L-BFGS, L2 on the weights): (W, b)."""
    import torch  # noqa: PLC0415

    mu, sd = feats.mean(0), feats.std(0) + 1e-6
    Z = (feats - mu) / sd  # standardised: a well-conditioned problem; folded back into W, b below
    W = torch.zeros(n_classes, Z.shape[1], device=Z.device, requires_grad=True)
    b = torch.zeros(n_classes, device=Z.device, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(Z @ W.T + b, y) + 0.5 * l2 * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        W_raw = W / sd
        return W_raw, b - W_raw @ mu


def _evaluate(backbone, head, load, idx, y, batch_size, device):
    import torch  # noqa: PLC0415

    if len(idx) == 0:
        return None, None
    logits = head(_features(backbone, load, idx, batch_size, device))
    loss = float(torch.nn.functional.cross_entropy(logits, y).item())
    return float((logits.argmax(1) == y).float().mean().item()), loss


def finetune(backbone, load: Callable[[np.ndarray], np.ndarray], labels: np.ndarray, n_classes: int, *,
             config: FinetuneConfig | None = None, progress: Callable[[float, str], None] | None = None
             ) -> FinetuneResult:
    """Fine-tune ``backbone`` (in place) with a linear head on ``labels`` (n,) int in [0, n_classes).

    ``load(indices)`` returns the (len(indices), ...) float32 input batch for those labelled items.
    """
    import torch  # noqa: PLC0415

    cfg = config or FinetuneConfig()
    progress = progress or (lambda f, m: None)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1 or len(labels) < 2 or labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must be a 1-D array of at least 2 ints in [0, {n_classes})")
    if len(np.unique(labels)) < 2:
        raise ValueError("fine-tuning needs labels of at least two classes")
    device = torch_device(cfg.device)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    train, val = split_held_out(labels, cfg.val_share, cfg.min_val, rng)
    backbone.to(device)
    y_all = torch.from_numpy(labels).to(device)
    y_tr, y_val = y_all[train], y_all[val]
    dim = _features(backbone, load, train[:2], 2, device).shape[1]
    head = torch.nn.Linear(dim, n_classes).to(device)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    lp_acc = None
    if cfg.method == "lpft":
        progress(0.0, f"linear probe on {len(train)} labels")
        W, b = _linear_probe(_features(backbone, load, train, cfg.batch_size, device), y_tr, n_classes, cfg.lp_l2)
        with torch.no_grad():
            head.weight.copy_(W)
            head.bias.copy_(b)
        lp_acc, _ = _evaluate(backbone, head, load, val, y_val, cfg.batch_size, device)
        groups = [{"params": list(backbone.parameters()) + list(head.parameters()), "lr": cfg.lr}]
    else:
        groups = [{"params": list(backbone.parameters()), "lr": cfg.lr},
                  {"params": list(head.parameters()), "lr": cfg.head_lr}]
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    best = (lp_acc if lp_acc is not None else -1.0, -math.inf)
    best_state = (copy.deepcopy(backbone.state_dict()), copy.deepcopy(head.state_dict()))
    best_epoch, stale, history = 0, 0, []
    for epoch in range(1, cfg.epochs + 1):
        backbone.train()
        order = train[rng.permutation(len(train))]
        total = 0.0
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            x = torch.from_numpy(np.ascontiguousarray(load(idx), dtype=np.float32)).to(device)
            loss = torch.nn.functional.cross_entropy(head(backbone(x).float()), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.item()) * len(idx)
        acc, vloss = _evaluate(backbone, head, load, val, y_val, cfg.batch_size, device)
        history.append({"epoch": epoch, "train_loss": total / len(train), "val_accuracy": acc, "val_loss": vloss})
        progress(epoch / cfg.epochs, f"{cfg.method} epoch {epoch}/{cfg.epochs}: train loss {total / len(train):.4f}"
                 + (f", held-out accuracy {acc:.3f}" if acc is not None else ""))
        if acc is None or (acc, -vloss) > best:
            best = (acc if acc is not None else -1.0, -(vloss or 0.0))
            best_state = (copy.deepcopy(backbone.state_dict()), copy.deepcopy(head.state_dict()))
            best_epoch, stale = epoch, 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    backbone.load_state_dict(best_state[0])
    head.load_state_dict(best_state[1])
    backbone.eval()
    return FinetuneResult(
        method=cfg.method, device=device,
        head_weight=head.weight.detach().float().cpu().numpy(), head_bias=head.bias.detach().float().cpu().numpy(),
        val_accuracy=(best[0] if len(val) else None), lp_val_accuracy=lp_acc, best_epoch=best_epoch,
        n_train=len(train), n_val=len(val), history=history,
    )


def embed(backbone, load: Callable[[np.ndarray], np.ndarray], n: int, *, batch_size: int = 64,
          device: str = "auto") -> np.ndarray:
    """(n, d) float32 features of items 0..n-1 through ``backbone`` in eval mode."""
    dev = torch_device(device)
    backbone.to(dev)
    return _features(backbone, load, np.arange(n), batch_size, dev).cpu().numpy().astype(np.float32)
