"""Simulated annotators against the embedded default (``make run``): a keypress never waits for the next item.

The short version of ``bench/annotators.py`` (docs/bench-rounds.md has the 10-minute runs): one
annotator labeling one item per second on the digits demo, through HTTP and the WebSocket the way
``frontend/static/label.js`` does (lease 6, preload, lease again below 3 and on ``queue.updated``),
while the refill policy starts rounds in the embedded worker.  Measured per keypress: the wait until
the next item is on screen.
"""
import pytest

pytestmark = [pytest.mark.slow]


@pytest.mark.parametrize("strategy", ["firal", "margin"])
def test_labeling_one_item_a_second_never_waits_and_never_runs_dry(strategy, tmp_path):
    pytest.importorskip("websockets")
    from bench.annotators import main

    log, report = main(["run", "--strategy", strategy, "--duration", "20", "--limit", "600",
                        "--out", str(tmp_path / "run.json")])
    assert log["errors"] == []
    waits = log["waits_ms"]
    assert len(waits) >= 15  # about one keypress a second
    assert log["labels"] == len(waits) + 0 and report["annotations"] == log["labels"]  # every label stored once
    # Rounds ran while the annotator labeled (the first one after about four labels: 14 of 20 pending,
    # refill point 10), and the page always had the next item ready.
    policy_rounds = [r for r in report["rounds"] if r["reason"] == "low_water"]
    assert policy_rounds and all(r["status"] == "done" for r in policy_rounds)
    assert log["queue_updates"] >= len(policy_rounds)
    assert log["dry"] == [], log["dry"]
    assert max(waits) <= 100, sorted(waits)[-5:]
