"""The simulate and bench command-line tools, on small problems."""
import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from selection import bench, simulate

ROOT = Path(__file__).resolve().parents[2]


def test_parse_strategies_with_overrides():
    specs = simulate.parse_strategies("random,cluster_margin:km_ratio=1.25:target_cluster_size=5,margin,"
                                      "power:beta=2,score=margin")
    assert [s.label for s in specs] == ["random", "cluster_margin(km_ratio=1.25,target_cluster_size=5)", "margin",
                                        "power(beta=2,score=margin)"]
    assert specs[1].params["km_ratio"] == 1.25 and specs[1].params["target_cluster_size"] == 5.0
    assert specs[3].params == {"beta": 2.0, "score": "margin", "cold_start": "kmeans++", "unseen_share": 0.5,
                               "unseen_rule": "good_turing"}
    with pytest.raises(ValueError, match="unknown strategy"):
        simulate.parse_strategies("random,nope")
    with pytest.raises(ValueError, match="km_ratio"):
        simulate.parse_strategies("cluster_margin:km_ratio=0")
    with pytest.raises(ValueError, match="duplicate"):
        simulate.parse_strategies("margin,margin")


def test_auc_and_labels_to_reach_closed_forms():
    n = np.array([10.0, 20.0, 30.0])
    acc = np.array([0.5, 0.7, 0.8])
    assert simulate.auc(n, acc) == pytest.approx(((0.5 + 0.7) / 2 * 10 + (0.7 + 0.8) / 2 * 10) / 20)
    assert simulate.labels_to_reach(n, acc, 0.75) == pytest.approx(25.0)
    assert simulate.labels_to_reach(n, acc, 0.4) == 10.0
    assert math.isinf(simulate.labels_to_reach(n, acc, 0.9))


def test_simulate_writes_curves_table_and_plot(tmp_path, capsys):
    rc = simulate.main(["--data", "digits", "--strategies", "random,margin,cluster_margin:km_ratio=1.25",
                        "--initial", "20", "--batch", "10", "--rounds", "2", "--seeds", "2",
                        "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    rows = list(csv.DictReader(open(tmp_path / "curves.csv")))
    assert len(rows) == 3 * 2 * 3
    assert {int(r["n_labeled"]) for r in rows} == {20, 30, 40}
    # same split and initial set for every strategy at a seed: identical round-0 accuracy
    r0 = {(r["strategy"], r["seed"]): r["accuracy"] for r in rows if r["round"] == "0"}
    assert r0[("random", "0")] == r0[("margin", "0")] == r0[("cluster_margin(km_ratio=1.25)", "0")]
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "| margin |" in out and "AUC" in out and "saved" in out


def test_simulate_rejects_too_many_rounds(tmp_path):
    with pytest.raises(SystemExit, match="exceeds the pool"):
        simulate.main(["--strategies", "random", "--batch", "500", "--rounds", "5", "--seeds", "1",
                       "--out", str(tmp_path), "--quiet"])


def test_bench_runs_cases_in_subprocesses(capsys):
    rc = bench.main(["--strategies", "margin,cluster_margin", "--n", "3000", "--c", "5", "--d", "8",
                     "--b", "50", "--m", "50"])
    assert rc == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("| margin") or ln.startswith("| cluster_margin")]
    assert len(lines) == 2 and "error" not in out.split("\n")[0]
    assert "timeout" not in out and "exit" not in out


def test_bench_case_reports_time_and_memory():
    row = bench.run_case({"strategy": "entropy", "n": 2000, "c": 4, "d": 8, "b": 20, "m": 40})
    assert row["unique"] and row["seconds"] > 0 and row["traced_MiB"] > 0 and row["rss_GiB"] > 0


def test_module_entry_point_usage():
    out = subprocess.run([sys.executable, "-m", "selection"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "simulate" in out.stdout and "bench" in out.stdout


def test_labels_saved_is_measured_at_randoms_final_accuracy():
    rows = []
    for seed in (0, 1):
        for n, a_r, a_s in [(10, 0.5, 0.5), (20, 0.6, 0.8), (30, 0.7, 0.9)]:
            rows.append({"strategy": "random", "seed": seed, "n_labeled": n, "accuracy": a_r})
            rows.append({"strategy": "smart", "seed": seed, "n_labeled": n, "accuracy": a_s})
    table = simulate.summary_table(rows)
    smart = next(ln for ln in table.splitlines() if ln.startswith("| smart"))
    # random ends at 0.7 with 30 labels; smart reaches 0.7 at 10 + (0.2 / 0.3) * 10 = 16.7 labels -> 44% saved
    assert "| 17 | 44% |" in smart
    assert "labels to reach 0.700" in table
