"""align-sim: the ASVP arm equals SVPp when the rule never fires, re-aligns when it always does."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from selection.align_sim import main, run_seed  # noqa: E402
from selection.datasets import Dataset  # noqa: E402


def _tiny():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 60)
    X = (rng.normal(size=(240, 6)) + 1.5 * rng.normal(size=(4, 6))[y]).astype(np.float32)
    return Dataset("tiny", X, y.astype(np.int64), [str(k) for k in range(4)])


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: threads only add contention on a shared CI machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


KW = dict(strategy="margin", initial=12, batch=8, rounds=2, align_every=8, ft_epochs=2, l2=1.0)


def test_never_firing_rule_is_svpp_and_always_firing_rule_realigns():
    ds = _tiny()
    rows, dec = run_seed(ds, 0, arms=["svpp", "asvp"], threshold=np.inf, **KW)
    sv = [r["accuracy"] for r in rows if r["strategy"] == "svpp"]
    asv = [r["accuracy"] for r in rows if r["strategy"] == "asvp"]
    assert sv == asv and len(dec) == 1  # checked once, at 20 labels
    assert not any(d["realigned"] or d["plain_logme_realigns"] for d in dec)
    rows, dec = run_seed(ds, 0, arms=["svpp", "asvp"], threshold=-np.inf, **KW)
    assert len(dec) == 1 and all(d["realigned"] and d["plain_logme_realigns"] for d in dec)
    assert [r["n_labeled"] for r in rows if r["strategy"] == "asvp"] == [12, 20, 28]
    sv = [r["proxy_accuracy"] for r in rows if r["strategy"] == "svpp"]
    asv = [r["proxy_accuracy"] for r in rows if r["strategy"] == "asvp"]
    assert sv[0] == asv[0] and sv[1:] != asv[1:]  # the proxy now works on the fine-tuned features


def test_cli_prints_curves_and_the_sample_saving_ratio(capsys):
    assert main(["--data", "digits", "--seeds", "1", "--rounds", "2", "--batch", "10", "--initial", "20",
                 "--align-every", "10", "--ft-epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "| random |" in out and "| svpp |" in out and "| asvp |" in out
    assert "sample saving ratio 1.00" in out.split("- random:")[1].splitlines()[0]
    assert "ASVP decisions: 1 checks" in out
    assert "re-aligned: " in out and "would have decided differently in " in out and " of 1 checks" in out
