"""BADGE's gradient embedding against its closed form, and both diversity baselines against dense references."""
import numpy as np
import torch
from scipy.spatial.distance import cdist

from selection import make_strategy
from selection.seeding import kcenter_greedy
from selection.strategies.badge import badge_embedding, badge_factors


def _softmax(Z):
    P = np.exp(Z - Z.max(1, keepdims=True))
    return P / P.sum(1, keepdims=True)


def test_gradient_embedding_equals_autograd_gradient_of_the_last_layer():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(7, 4))
    W, b = rng.normal(size=(3, 4)), rng.normal(size=3)
    P = _softmax(X @ W.T + b)
    G = badge_embedding(X, P, bias=True)
    for i in range(len(X)):
        Wt = torch.tensor(W, requires_grad=True)
        bt = torch.tensor(b, requires_grad=True)
        logits = torch.tensor(X[i]) @ Wt.T + bt
        yhat = int(P[i].argmax())
        torch.nn.functional.cross_entropy(logits[None], torch.tensor([yhat])).backward()
        ref = torch.cat([Wt.grad, bt.grad[:, None]], dim=1).numpy().ravel()  # row k = [dL/dW_k, dL/db_k]
        np.testing.assert_allclose(G[i], ref, atol=1e-12)


def test_factorised_distances_equal_dense_distances():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 5))
    P = rng.dirichlet(np.ones(4), size=30)
    A, Xb = badge_factors(X, P)
    G = badge_embedding(X, P)
    na, nx = (A * A).sum(1), (Xb * Xb).sum(1)
    fact = na[:, None] * nx[:, None] + (na * nx)[None] - 2 * (A @ A.T) * (Xb @ Xb.T)
    np.testing.assert_allclose(fact, cdist(G, G) ** 2, atol=1e-10)


def test_badge_selection_equals_dense_kmeanspp_on_the_embedding():
    from selection.seeding import kmeans_pp
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 6))
    P = rng.dirichlet(np.ones(3), size=200)
    XL, yL = X[:3], np.array([0, 1, 2])
    for params, bias in (({}, False), ({"bias_feature": True}, True)):
        sel = make_strategy("badge", params).select(X, P, X_labeled=XL, y_labeled=yL, batch_size=15,
                                                    random_state=4)
        G = badge_embedding(X, P, bias=bias)
        first = int(np.argmax((G**2).sum(1)))
        ref = kmeans_pp(G, 15, rng=np.random.default_rng(4), first=first)
        np.testing.assert_array_equal(sel.indices, ref)
        np.testing.assert_allclose(sel.scores, np.linalg.norm(G[sel.indices], axis=1))


def test_default_embedding_is_the_reference_codes_weights_only_gradient():
    # the authors' code builds embDim * nLab entries: block k = x * (p_k - [k == yhat]) up to sign,
    # no intercept column; the default must measure distances in that space
    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, 5)) + 3.0
    P = rng.dirichlet(np.ones(4), size=60)
    yhat = P.argmax(1)
    ref = np.concatenate([X * (P[:, [k]] - (yhat == k)[:, None]) for k in range(4)], axis=1)
    assert make_strategy("badge", {}).params_["bias_feature"] is False
    np.testing.assert_allclose(badge_embedding(X, P, bias=False), ref, atol=1e-12)
    sel = make_strategy("badge", {}).select(X, P, X_labeled=X[:4], y_labeled=np.arange(4), batch_size=10,
                                            random_state=0)
    assert sel.indices[0] == int(np.argmax(np.linalg.norm(ref, axis=1)))
    np.testing.assert_allclose(sel.scores, np.linalg.norm(ref[sel.indices], axis=1), rtol=1e-6)


def test_coreset_is_kcenter_from_the_labeled_set_and_scores_shrink():
    rng = np.random.default_rng(3)
    X, XL = rng.normal(size=(300, 4)), rng.normal(size=(12, 4))
    yL = np.arange(12) % 3
    P = rng.dirichlet(np.ones(3), size=300)
    sel = make_strategy("coreset", {}).select(X, P, X_labeled=XL, y_labeled=yL, batch_size=20, random_state=0)
    np.testing.assert_array_equal(sel.indices, kcenter_greedy(X, 20, X_labeled=XL))
    # the covering radius closed by each pick never grows, and the first is the farthest point
    assert np.all(np.diff(sel.scores) <= 1e-12)
    np.testing.assert_allclose(sel.scores[0], (cdist(X, XL) ** 2).min(1).max())
