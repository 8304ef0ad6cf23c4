"""Importing and using ``selection`` must not pull in Django, Celery, Channels, CuPy or the app."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CODE = r"""
import json, sys
import numpy as np
import selection
from selection import make_strategy, strategy_names
from selection.head import LogisticHead
rng = np.random.default_rng(0)
X = rng.normal(size=(200, 5)).astype(np.float32)
y = np.arange(200) % 3
h = LogisticHead(3).fit(X[:50], y[:50])
P = h.predict_proba(X[50:])
for name in ("random", "margin"):
    make_strategy(name, {}).select(X[50:], P, X_labeled=X[:50], y_labeled=y[:50], batch_size=5, random_state=0)
strategy_names()
print(json.dumps(sorted(m.split(".")[0] for m in sys.modules)))
"""


def test_import_and_select_load_no_app_or_gpu_modules():
    out = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    mods = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "selection" in mods and "numpy" in mods
    forbidden = {"django", "celery", "channels", "cupy", "annotate", "kombu", "config"}
    assert not (mods & forbidden), mods & forbidden
