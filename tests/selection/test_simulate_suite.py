"""The evaluation suite: data loaders, per-class sizes, paired statistics, both heads."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from selection import sim_stats, simulate
from selection.datasets import load_dataset


def test_csv_loader_finds_the_label_column_and_maps_string_labels(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("f1,kind,f2\n1,cat,2\n3,dog,4.5\n5,cat,6\n")
    ds = load_dataset(str(p), label_col="kind")
    assert ds.X.shape == (3, 2) and ds.X.dtype == np.float32
    assert ds.class_names == ["cat", "dog"] and ds.y.tolist() == [0, 1, 0]
    np.testing.assert_allclose(ds.X[1], [3, 4.5])
    q = tmp_path / "e.csv"
    q.write_text("a,b,class\n1,2,7\n3,4,10\n5,6,7\n")
    ds = load_dataset(str(q))  # 'class' found by name; integer labels keep numeric order
    assert ds.class_names == ["7", "10"] and ds.y.tolist() == [0, 1, 0]


@pytest.mark.parametrize("text, msg", [("a,label\nx,1\n2,0\n", "numeric"), ("a,label\n1,1\n2\n", "fields"),
                                       ("a,label\n1,1\n2,1\n", "distinct")])
def test_csv_loader_rejects_bad_files_naming_the_problem(tmp_path, text, msg):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=msg):
        load_dataset(str(p))
    with pytest.raises(ValueError, match="no column 'nope'"):
        load_dataset(str(tmp_path / "bad.csv"), label_col="nope")


def test_npz_loader(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X=rng.normal(size=(20, 3)), y=np.repeat([3, 5], 10))
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert ds.X.shape == (20, 3) and ds.n_classes == 2 and set(ds.y) == {0, 1}
    np.savez(tmp_path / "e.npz", X=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"lacks array\(s\) \['y'\]"):
        load_dataset(str(tmp_path / "e.npz"))


def test_pendigits_loader_uses_both_files():
    ds = load_dataset("pendigits")
    assert ds.X.shape == (10_992, 16) and ds.n_classes == 10
    assert 0 <= ds.X.min() and ds.X.max() == 1.0


def test_sizes_per_class():
    assert simulate.parse_size("5pc", 26, "batch") == 130
    assert simulate.parse_size("40", 26, "budget") == 40
    for bad in ("x", "-1", "2.5"):
        with pytest.raises(ValueError):
            simulate.parse_size(bad, 10, "batch")


def test_paired_interval_matches_a_hand_computation():
    d = np.array([0.01, 0.03, -0.02, 0.04])
    m, h = sim_stats.paired_ci(d)
    sd = math.sqrt(sum((x - d.mean()) ** 2 for x in d) / 3)
    assert m == pytest.approx(0.015)
    assert h == pytest.approx(3.182446305284263 * sd / 2)  # t_{0.975, 3}


def test_paired_table_flags_worse_than_random_beyond_noise():
    rows = []
    for seed in range(5):
        for n, a in [(10, 0.5), (20, 0.6), (30, 0.7)]:
            rows.append({"strategy": "random", "seed": seed, "n_labeled": n, "accuracy": a})
            jitter = 0.001 * seed  # a consistent loss at 20 labels, noise-only elsewhere
            rows.append({"strategy": "bad", "seed": seed, "n_labeled": n,
                         "accuracy": a - (0.05 + jitter if n == 20 else (jitter - 0.002))})
    table = sim_stats.paired_table(rows)
    line = next(ln for ln in table.splitlines() if ln.startswith("| bad"))
    assert "**at 20 labels**" in line and "▼" in line
    p = sim_stats.paired_vs(sim_stats.curves(rows), "bad")
    assert p["worse"].tolist() == [False, True, False]


def test_both_heads_run_the_protocol_and_agree_on_round_zero(tmp_path, capsys):
    out = {}
    for head in ("loupe", "sklearn"):
        rc = simulate.main(["--data", "digits", "--strategies", "random,margin", "--head", head,
                            "--initial", "2pc", "--batch", "1pc", "--budget", "4pc", "--seeds", "2",
                            "--out", str(tmp_path / head), "--quiet"])
        assert rc == 0
        with open(tmp_path / head / "curves.csv") as fh:
            rows = list(csv.DictReader(fh))
        assert sorted({int(r["n_labeled"]) for r in rows}) == [20, 30, 40]
        out[head] = {(r["strategy"], r["seed"], r["round"]): float(r["accuracy"]) for r in rows}
    text = capsys.readouterr().out
    assert "Paired difference to random" in text and "| margin |" in text
    # same objective (C = 1 / l2): the two heads agree closely on the same labels
    for seed in ("0", "1"):
        assert out["loupe"][("random", seed, "0")] == pytest.approx(out["sklearn"][("random", seed, "0")], abs=0.02)


def test_parallel_jobs_give_the_same_rows_as_one_process(tmp_path):
    args = ["--data", "digits", "--strategies", "random,badge", "--initial", "20", "--batch", "10", "--rounds",
            "1", "--seeds", "2", "--head", "sklearn", "--quiet"]
    simulate.main(args + ["--out", str(tmp_path / "a")])
    simulate.main(args + ["--out", str(tmp_path / "b"), "--jobs", "2"])
    key = lambda r: (r["strategy"], r["seed"], r["round"], r["n_labeled"], r["accuracy"])  # noqa: E731
    got = []
    for sub in ("a", "b"):
        with open(tmp_path / sub / "curves.csv") as fh:
            got.append(sorted(map(key, csv.DictReader(fh))))
    assert got[0] == got[1]


def test_rare_class_variant_and_the_coverage_table(tmp_path, capsys):
    ds = load_dataset("digits@rare=3,keep=8")
    assert np.bincount(ds.y).tolist()[-4:] == [np.bincount(load_dataset("digits").y)[6], 8, 8, 8]
    with pytest.raises(ValueError, match="rare=R,keep=K"):
        load_dataset("digits@rare=x")
    rc = simulate.main(["--data", "digits@rare=3,keep=8", "--strategies", "random,margin:unseen_share=0,margin",
                        "--initial", "10", "--batch", "10", "--rounds", "2", "--seeds", "2", "--head", "sklearn",
                        "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    if "Classes with at least one label" in out:  # some seed started without a rare class
        assert "| classes seen |" in out
    with open(tmp_path / "curves.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert all(1 <= int(r["classes_seen"]) <= 10 for r in rows)
    assert all(int(r["classes_seen"]) <= int(r["n_labeled"]) for r in rows)
