"""PED (Li et al., ICCV 2023) as its authors' implementation defines it, against hand-computed motions
and a plain pair-by-pair re-computation."""
from __future__ import annotations

import numpy as np
import pytest

from selection.transfer import logme, logme_ped, ped_motion, ped_transform

# Two 1-D classes, standardised by a reference with mean 0 and std 1 (so the space is the raw one):
# class 0 = {-1, 1} (centre 0, radius 1), class 1 = {2, 4} (centre 3, radius 1); d = 3.
F1 = np.array([[-1.0], [1.0], [2.0], [4.0]])
Y1 = np.array([0, 0, 1, 1])
UNIT = np.array([[-1.0], [1.0]])


def test_two_classes_by_hand_six_damped_steps():
    # n_σ = 2: overlap o = 2 (1 + 1) − 3 = 1; each step moves each class ½ t² o = 0.005 o apart, so the
    # overlap shrinks by 1 % a step; six steps (motion ratio 0.99^k never falls to 0.5) separate the
    # classes by Σ 0.01 · 0.99^k = 1 − 0.99^6 in total, half of it each.
    res = ped_motion(F1, Y1, reference=UNIT, time_step=0.1, n_sigma=2.0)
    assert res.steps == 6
    half = (1 - 0.99 ** 6) / 2
    assert np.allclose(res.features - F1, [[-half], [-half], [half], [half]], rtol=0, atol=1e-12)
    assert res.motions == pytest.approx([0.01 * 0.99 ** k for k in range(6)], rel=1e-12)


def test_a_step_whose_motion_is_at_most_half_the_first_is_not_applied():
    # ½ t² = 0.3: the first step moves each class 0.3 o (overlap left 0.4 o); the second would move
    # 0.4 of the first step's motion <= 0.5, so it is dropped and the motion ends after one step.
    t = np.sqrt(0.6)
    res = ped_motion(F1, Y1, reference=UNIT, time_step=t, n_sigma=2.0)
    assert res.steps == 1 and len(res.motions) == 2
    assert res.motions[1] / res.motions[0] == pytest.approx(0.4)
    assert np.allclose(res.features - F1, [[-0.3], [-0.3], [0.3], [0.3]])


def test_the_shift_is_capped_at_the_overlap_and_apart_classes_do_not_move():
    res = ped_motion(F1, Y1, reference=UNIT, time_step=2.0, n_sigma=2.0)  # ½ t² = 2 > 1: capped at o = 1
    assert res.steps == 1 and res.motions[1] == 0.0  # overlap gone after one step: motion stops
    assert np.allclose(res.features - F1, [[-1.0], [-1.0], [1.0], [1.0]])
    far = ped_motion(F1, Y1, reference=UNIT, n_sigma=1.0)  # 1 (1 + 1) − 3 < 0: no overlap, no push
    assert far.steps == 0 and np.array_equal(far.features, F1)


def _ped_by_pairs(F, y, *, t=0.1, ns=0.6, c=1.0, exit_ratio=0.5, max_steps=6, floor=1e-3):
    """A direct re-computation: loops over pairs of classes, in the standardised space."""
    m, s = F.mean(0), np.maximum(F.std(0), floor)
    Z = (F - m) / s
    classes = sorted(set(y.tolist()))
    first = None
    for _ in range(max_steps):
        mu = {k: Z[y == k].mean(0) for k in classes}
        rad = {k: np.sqrt(((Z[y == k] - mu[k]) ** 2).sum(1).mean()) for k in classes}
        delta = {k: np.zeros(F.shape[1]) for k in classes}
        for i, a in enumerate(classes):
            for b in classes[i + 1:]:
                v = mu[a] - mu[b]
                d = np.linalg.norm(v)
                o = max(ns * (rad[a] + rad[b]) - d, 0.0)
                step = min(0.5 * t * t * c * o, o)
                delta[a] += step * v / d
                delta[b] -= step * v / d
        motion = sum(np.abs(delta[k]).sum() for k in classes)
        first = motion if first is None else first
        if first == 0 or motion / first <= exit_ratio:
            break
        Z = Z + np.stack([delta[k] for k in y.tolist()])
    return Z * s + m


def test_many_classes_match_a_pair_by_pair_recomputation_and_classes_move_rigidly():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, 80)
    F = rng.normal(size=(80, 7)) * rng.uniform(0.5, 3, 7) + 0.8 * rng.normal(size=(5, 7))[y] + 4.0
    res = ped_motion(F, y)
    assert res.steps >= 1
    assert np.allclose(res.features, _ped_by_pairs(F, y), rtol=0, atol=1e-10)
    for k in range(5):
        shift = (res.features - F)[y == k]
        assert np.allclose(shift, shift[0])  # each class moves as a whole: its spread is unchanged
    # classes pushed apart: every pair of centres is at least as far apart as before
    mu0 = np.stack([F[y == k].mean(0) for k in range(5)])
    mu1 = np.stack([res.features[y == k].mean(0) for k in range(5)])
    d0 = np.linalg.norm(mu0[:, None] - mu0[None], axis=2)
    d1 = np.linalg.norm(mu1[:, None] - mu1[None], axis=2)
    assert (d1 >= d0 - 1e-12).all() and (d1 > d0 + 1e-9).any()


def test_standardisation_makes_the_motion_follow_affine_changes_of_the_features():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 40)
    F = rng.normal(size=(40, 4)) + rng.normal(size=(3, 4))[y]
    scale, offset = np.array([3.0, 0.5, 10.0, 1.0]), np.array([1.0, -2.0, 0.0, 5.0])
    assert np.allclose(ped_transform(F * scale + offset, y), ped_transform(F, y) * scale + offset)


def test_logme_ped_is_logme_of_the_moved_features_and_no_steps_is_plain_logme():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 30)
    F = rng.normal(size=(30, 5)) + 0.7 * rng.normal(size=(3, 5))[y]
    assert logme_ped(F, y) == pytest.approx(logme(ped_transform(F, y), y), rel=1e-12)
    assert logme_ped(F, y, max_steps=0) == pytest.approx(logme(F, y), rel=1e-12)
    assert logme_ped(F, y, n_sigma=3.0, time_step=1.0) > logme(F, y)  # overlapping classes pushed apart


def test_coincident_centres_exert_no_push_and_bad_settings_are_refused():
    F = np.array([[0.0, 1.0], [0.0, -1.0], [1.0, 0.0], [-1.0, 0.0]])  # both centres at the origin
    res = ped_motion(F, np.array([0, 0, 1, 1]), n_sigma=2.0)
    assert res.steps == 0 and np.array_equal(res.features, F)
    with pytest.raises(ValueError, match="time_step"):
        ped_motion(F, np.array([0, 0, 1, 1]), time_step=0)
    with pytest.raises(ValueError, match="exit_ratio"):
        ped_motion(F, np.array([0, 0, 1, 1]), exit_ratio=1.0)
    with pytest.raises(ValueError, match="reference"):
        ped_motion(F, np.array([0, 0, 1, 1]), reference=np.zeros((3, 5)))
    with pytest.raises(ValueError, match="labels"):
        ped_motion(F, np.array([0, 1]))
