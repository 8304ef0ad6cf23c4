"""Simulated annotators against the embedded default (``make run``): a keypress never waits for the next item.

The short version of ``bench/annotators.py`` (docs/bench-rounds.md has the 10-minute runs): two
demo projects in one server, one with ``firal`` and one with ``margin``, one annotator on each
labeling one item per second through HTTP and the WebSocket the way ``frontend/static/label.js``
does (lease 6, preload, lease again below 3 and on ``queue.updated``), while the refill policy
starts rounds in the embedded worker (one worker: a round of one project may wait behind the
other's).  Measured per keypress: the wait until the next item is on screen.
"""
import pytest

pytestmark = [pytest.mark.slow]


def test_labeling_one_item_a_second_never_waits_and_never_runs_dry(tmp_path):
    pytest.importorskip("websockets")
    from bench.annotators import main

    logs, reports = main(["run", "--strategy", "firal,margin", "--duration", "20", "--limit", "600",
                          "--out", str(tmp_path / "run.json")])
    assert set(logs) == {"firal", "margin"}
    for strategy, log in logs.items():
        report = reports[strategy]
        assert log["errors"] == [], strategy
        waits = log["waits_ms"]
        assert len(waits) >= 15, strategy  # about one keypress a second
        assert log["labels"] == len(waits) == report["annotations"], strategy  # every label stored once
        # Rounds ran while the annotator labeled (the first after about four labels: 14 of 20 pending,
        # refill point 10), and the page always had the next item ready.
        policy_rounds = [r for r in report["rounds"] if r["reason"] == "low_water"]
        done = [r for r in policy_rounds if r["status"] == "done"]  # the last may still run when the server stops
        assert done and len(done) >= len(policy_rounds) - 1, (strategy, report["rounds"])
        assert log["queue_updates"] >= len(done), strategy
        assert log["dry"] == [], (strategy, log["dry"])
        assert max(waits) <= 100, (strategy, sorted(waits)[-5:])
