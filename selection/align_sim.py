"""``python -m selection align-sim``: selection via proxy with fixed features (SVPp) vs aligned features (ASVP).

A small, honest replica of the ASVP experiment (Wen, Pizarro & Williams 2024, arXiv 2403.01101) that
runs on a CPU in minutes:

- **Backbone**: an MLP (d -> 64 -> 32) *pretrained* on a source task: a disjoint 30% of the data set
  with only the first half of the classes, so its features are good for some classes and weaker for
  the others, as a pretrained model is for a new task.
- **Pool / test**: the other 70%, split 80/20.  All arms of a seed start from the same random labels.
- **Arms**: ``random``; ``svpp``: a linear head on the fixed pretrained features picks with the
  strategy (margin by default); ``asvp``: the same, but every ``--align-every`` new labels the
  pretrained backbone is fine-tuned (LP-FT) on the labels, and when LogME-PED of its features on the
  labeled set beats the features in use by more than ``--threshold`` the pool is re-embedded with it.
- **Accuracy** at each label count: the *final model* every arm would ship, trained the same way for
  all (LP-FT of the pretrained backbone on the labels so far), on the test split; the proxy head's own
  test accuracy is reported in a second table.

Tables: accuracy mean ± sd over seeds, AUC, labels to reach random's final accuracy, and the sample
saving ratio (labels random needs / labels the arm needs for that accuracy).
"""
from __future__ import annotations

import argparse
import copy
import math
import time

import numpy as np

from .datasets import load_dataset
from .sim_stats import curves, labels_to_reach, summary_table


def _mlp(d: int, seed: int):
    import torch  # noqa: PLC0415

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32))


def pretrain(X: np.ndarray, y: np.ndarray, n_classes: int, seed: int, epochs: int = 30):
    """The 'pretrained' backbone: an MLP trained with a linear head on the source task (Adam)."""
    import torch  # noqa: PLC0415

    net = _mlp(X.shape[1], seed)
    head = torch.nn.Linear(32, n_classes)
    opt = torch.optim.Adam(list(net.parameters()) + list(head.parameters()), lr=1e-2)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(yt), generator=g).split(128):
            loss = torch.nn.functional.cross_entropy(head(net(Xt[idx])), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def _features(net, X: np.ndarray) -> np.ndarray:
    import torch  # noqa: PLC0415

    with torch.no_grad():
        return net.eval()(torch.from_numpy(X)).numpy().astype(np.float32)


def _tune(pretrained, X_lab, y_lab, n_classes, seed, epochs):
    from .transfer.finetune import FinetuneConfig, finetune  # noqa: PLC0415

    net = copy.deepcopy(pretrained)
    cfg = FinetuneConfig(method="lpft", epochs=epochs, lr=3e-3, batch_size=32, device="cpu", seed=seed)
    res = finetune(net, lambda idx: X_lab[idx], y_lab, n_classes, config=cfg)
    return net, res


def run_seed(ds, seed: int, *, arms, strategy: str, initial: int, batch: int, rounds: int, align_every: int,
             threshold: float, ft_epochs: int, l2: float) -> tuple[list[dict], list[dict]]:
    from . import make_strategy  # noqa: PLC0415
    from .head import LogisticHead  # noqa: PLC0415
    from .transfer import logme, logme_ped  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    c = ds.n_classes
    X = ds.X / max(float(np.abs(ds.X).max()), 1e-12)
    perm = rng.permutation(len(ds.y))
    n_src = int(0.3 * len(perm))
    src = perm[:n_src][ds.y[perm[:n_src]] < c // 2]
    rest = perm[n_src:]
    n_test = int(0.2 * len(rest))
    test, pool = rest[:n_test], rest[n_test:]
    pretrained = pretrain(X[src], ds.y[src], c, seed)
    X_pool, y_pool, X_test, y_test = X[pool], ds.y[pool], X[test], ds.y[test]
    F_pre, F_pre_test = _features(pretrained, X_pool), _features(pretrained, X_test)
    start = rng.choice(len(pool), size=initial, replace=False)
    rows, decisions = [], []
    strat = make_strategy(strategy)
    for arm in arms:
        arm_rng = np.random.default_rng(seed + 1)
        labeled = list(start)
        F, F_test, last_align = F_pre, F_pre_test, len(labeled)
        for r in range(rounds + 1):
            lab = np.array(labeled)
            # the final model every arm would ship: LP-FT of the pretrained backbone on its labels
            net, _ = _tune(pretrained, X_pool[lab], y_pool[lab], c, seed, ft_epochs)
            res_head = _tune_head(F=_features(net, X_pool[lab]), y=y_pool[lab], c=c, l2=l2, seed=seed)
            acc = float((res_head.predict(_features(net, X_test)) == y_test).mean())
            head = LogisticHead(c, l2=l2, random_state=seed).fit(F[lab], y_pool[lab])
            proxy_acc = float((head.predict(F_test) == y_test).mean())
            rows.append({"strategy": arm, "seed": seed, "n_labeled": len(lab), "accuracy": acc,
                         "proxy_accuracy": proxy_acc})
            if r == rounds:
                break
            if arm == "asvp" and len(lab) - last_align >= align_every:
                last_align = len(lab)
                tuned, res = _tune(pretrained, X_pool[lab], y_pool[lab], c, seed, ft_epochs)
                F_new = _features(tuned, X_pool[lab])
                s_old = logme_ped(F[lab], y_pool[lab], n_classes=c)
                s_new = logme_ped(F_new, y_pool[lab], n_classes=c)
                realign = s_new - s_old > threshold
                # plain LogME beside it: how often PED's motion changes the decision
                plain = (logme(F_new, y_pool[lab], n_classes=c) - logme(F[lab], y_pool[lab], n_classes=c)
                         > threshold)
                decisions.append({"seed": seed, "n_labeled": len(lab), "current": s_old, "finetuned": s_new,
                                  "realigned": realign, "plain_logme_realigns": bool(plain)})
                if realign:
                    F, F_test = _features(tuned, X_pool), _features(tuned, X_test)
                    head = LogisticHead(c, l2=l2, random_state=seed).fit(F[lab], y_pool[lab])
            unl = np.setdiff1d(np.arange(len(pool)), lab)
            if arm == "random":
                pick = arm_rng.choice(unl, size=batch, replace=False)
            else:
                sel = strat.select(F[unl], head.predict_proba(F[unl]), X_labeled=F[lab],
                                   probs_labeled=head.predict_proba(F[lab]), y_labeled=y_pool[lab],
                                   batch_size=batch, random_state=arm_rng)
                pick = unl[np.asarray(sel.indices)]
            labeled.extend(int(i) for i in pick)
    return rows, decisions


def _tune_head(*, F, y, c, l2, seed):
    from .head import LogisticHead  # noqa: PLC0415

    return LogisticHead(c, l2=l2, random_state=seed).fit(F, y)


def ssr_lines(rows: list[dict], baseline: str = "random") -> list[str]:
    """Sample saving ratio per arm: labels random needs for its own final accuracy / labels the arm needs."""
    cv = curves(rows)
    base = cv[baseline]
    bm = np.nanmean(base["acc"], axis=0)
    target = float(bm[-1])
    n_base = labels_to_reach(base["n"], bm, target)
    out = []
    for label, cur in cv.items():
        need = labels_to_reach(cur["n"], np.nanmean(cur["acc"], axis=0), target)
        out.append(f"- {label}: " + ("does not reach it" if math.isinf(need) else
                                      f"{need:.0f} labels, sample saving ratio {n_base / need:.2f}"))
    return [f"Sample saving ratio to reach random's final accuracy {target:.3f}:"] + out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m selection align-sim", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="pendigits", help="digits, pendigits, ... (selection.datasets)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--strategy", default="margin", help="the proxy's strategy for svpp and asvp")
    p.add_argument("--initial", type=int, default=20)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--align-every", type=int, default=40)
    p.add_argument("--threshold", type=float, default=0.03)
    p.add_argument("--ft-epochs", type=int, default=15)
    p.add_argument("--l2", type=float, default=1.0)
    p.add_argument("--arms", default="random,svpp,asvp")
    return p


def main(argv: list[str] | None = None) -> int:
    import torch  # noqa: PLC0415

    a = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    ds = load_dataset(a.data)
    arms = [s.strip() for s in a.arms.split(",") if s.strip()]
    bad = set(arms) - {"random", "svpp", "asvp"}
    if bad or "random" not in arms:
        raise SystemExit(f"--arms must include random and may hold svpp, asvp; got {a.arms!r}")
    t0 = time.perf_counter()
    rows, decisions = [], []
    for seed in range(a.seeds):
        r, d = run_seed(ds, seed, arms=arms, strategy=a.strategy, initial=a.initial, batch=a.batch,
                        rounds=a.rounds, align_every=a.align_every, threshold=a.threshold,
                        ft_epochs=a.ft_epochs, l2=a.l2)
        rows += r
        decisions += d
    print(f"# align-sim on {ds.name}: {a.seeds} seeds, {a.strategy}, initial {a.initial}, batch {a.batch}, "
          f"{a.rounds} rounds, align every {a.align_every}, threshold {a.threshold} "
          f"({time.perf_counter() - t0:.0f} s)\n")
    print("Final-model accuracy (LP-FT of the pretrained backbone on each arm's labels), test split:\n")
    print(summary_table(rows))
    print()
    print("\n".join(ssr_lines(rows)))
    print("\nProxy accuracy (linear head on the features the arm selects with), test split:\n")
    print(summary_table([{**r, "accuracy": r["proxy_accuracy"]} for r in rows]))
    if decisions:
        n_re = sum(d["realigned"] for d in decisions)
        print(f"\nASVP decisions: {len(decisions)} checks, {n_re} re-alignments; mean LogME-PED current "
              f"{np.mean([d['current'] for d in decisions]):.4f}, fine-tuned "
              f"{np.mean([d['finetuned'] for d in decisions]):.4f}")
        at = [f"seed {d['seed']} at {d['n_labeled']}" for d in decisions if d["realigned"]]
        print("re-aligned: " + (", ".join(at) if at else "never"))
        differ = sum(d["plain_logme_realigns"] != d["realigned"] for d in decisions)
        print(f"plain LogME (no PED motion) would have decided differently in {differ} of {len(decisions)} checks")
    return 0
