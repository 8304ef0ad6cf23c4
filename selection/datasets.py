"""Data sets for simulation and benchmarks: digits, a Gaussian-mixture generator, user ``.npy`` files.

Every loader returns a :class:`Dataset` with ``X`` (n, d) float32 embeddings and ``y`` (n,)
int64 labels in ``[0, c)``.  :func:`load_dataset` parses the ``--data`` argument of the CLIs:

- ``digits``: scikit-learn's bundled 8x8 digit images (1797 x 64, 10 classes), pixels / 16;
- ``gmm`` or ``gmm:n=20000,c=10,d=64,imbalance=10,spread=2,seed=0``: :func:`gaussian_mixture`;
- ``npy:EMB.npy,LABELS.npy`` (or two paths): :func:`load_npy`;
- ``PATH.npz`` (arrays ``X`` and ``y``): :func:`load_npz`;
- ``PATH.csv`` (a label column plus numeric features): :func:`load_csv`;
- ``pendigits`` or the folder holding ``pendigits.tra`` / ``pendigits.tes``: :func:`pendigits`;
- any of these followed by ``@rare=R,keep=K``: :func:`with_rare_classes` (the last R classes cut
  down to K items each), to test how a strategy finds rare classes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Dataset:
    """X : (n, d) float32; y : (n,) int64 in [0, c); class_names : c names."""

    name: str
    X: np.ndarray
    y: np.ndarray
    class_names: list[str] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def digits() -> Dataset:
    """scikit-learn's bundled digits (no download): 1797 images of 8x8 pixels in [0, 1]."""
    from sklearn.datasets import load_digits  # noqa: PLC0415

    X, y = load_digits(return_X_y=True)
    return Dataset("digits", (X / 16.0).astype(np.float32), y.astype(np.int64), [str(k) for k in range(10)])


def gaussian_mixture(
    n: int = 10_000,
    c: int = 10,
    d: int = 64,
    *,
    imbalance: float = 1.0,
    spread: float = 2.0,
    seed: int = 0,
) -> Dataset:
    """Synthetic embeddings: one Gaussian per class.

    x = mu_y + e, e ~ N(0, I_d); class means mu_k ~ N(0, (spread^2 / d) I_d), so two class means
    lie about ``spread * sqrt(2)`` noise standard deviations apart whatever d is (larger spread:
    easier).  Class priors fall geometrically from the first to the last class, the largest
    ``imbalance`` times the smallest (1 = balanced).  Every class gets at least one point.
    """
    for name, v, lo in (("n", n, 1), ("c", c, 2), ("d", d, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name}={v!r} must be an int >= {lo}")
    if n < c:
        raise ValueError(f"n={n} must be at least c={c} so every class has a point")
    if not (np.isfinite(imbalance) and imbalance >= 1):
        raise ValueError(f"imbalance={imbalance!r} must be >= 1 (ratio of largest to smallest class)")
    if not (np.isfinite(spread) and spread > 0):
        raise ValueError(f"spread={spread!r} must be > 0")
    rng = np.random.default_rng(seed)
    prior = imbalance ** (-np.arange(c) / max(c - 1, 1))
    prior /= prior.sum()
    y = np.concatenate([np.arange(c), rng.choice(c, size=n - c, p=prior)])
    rng.shuffle(y)
    mu = rng.standard_normal((c, d)) * (spread / np.sqrt(d))
    X = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 1 << 16):  # chunks keep the float64 temporaries small at n = 1M
        yy = y[s:s + (1 << 16)]
        X[s:s + len(yy)] = mu[yy] + rng.standard_normal((len(yy), d))
    name = f"gmm(n={n},c={c},d={d},imbalance={imbalance:g},spread={spread:g},seed={seed})"
    return Dataset(name, X, y.astype(np.int64), [f"class{k}" for k in range(c)])


def load_npy(embeddings: str, labels: str) -> Dataset:
    """User data: ``embeddings`` a (n, d) numeric ``.npy``; ``labels`` a (n,) ``.npy`` of ints or strings.

    String (or non-contiguous integer) labels are mapped to ``0..c-1`` in sorted order; the
    originals become ``class_names``.  Raises ``ValueError`` naming the file and the problem.
    """
    X = _load(embeddings, "embeddings")
    y = _load(labels, "labels")
    base = os.path.splitext(os.path.basename(embeddings))[0]
    return _as_dataset(f"npy:{base}", X, y, f"embeddings file {embeddings!r}, labels file {labels!r}",
                       features="embeddings")


def _as_dataset(name: str, X: np.ndarray, y: np.ndarray, where: str, features: str = "features") -> Dataset:
    """Check (n, d) finite numeric X and (n,) labels (ints or strings; mapped to 0..c-1 in sorted order).

    Errors start with ``where`` (the source) and call X ``features`` (e.g. "embeddings")."""
    if X.ndim != 2:
        raise ValueError(f"{where}: {features} must form a 2-D (n, d) array; got shape {X.shape}")
    if X.dtype.kind not in "fiu":
        raise ValueError(f"{where}: {features} must be numeric; got dtype {X.dtype}")
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).any(axis=1).sum())
        raise ValueError(f"{where}: {features} have NaN or inf in {bad} rows")
    if y.ndim != 1:
        raise ValueError(f"{where}: labels must form a 1-D (n,) array; got shape {y.shape}")
    if len(y) != len(X):
        raise ValueError(f"{where}: {len(y)} labels but the {features} have {len(X)} rows")
    if y.dtype.kind == "f":
        if not (np.isfinite(y).all() and np.all(y == np.round(y))):
            raise ValueError(f"{where}: labels hold non-integer numbers; use ints or strings")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iuUSO":
        raise ValueError(f"{where}: labels must be ints or strings; got dtype {y.dtype}")
    names, yi = np.unique(y.astype(str) if y.dtype.kind == "O" else y, return_inverse=True)
    if len(names) < 2:
        raise ValueError(f"{where}: only {len(names)} distinct class(es); at least 2 are needed")
    return Dataset(name, X.astype(np.float32), yi.astype(np.int64), [str(v) for v in names])


def load_npz(path: str) -> Dataset:
    """``.npz`` with arrays ``X`` (n, d) numeric and ``y`` (n,) ints or strings."""
    if not os.path.exists(path):
        raise ValueError(f"data file {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = sorted({"X", "y"} - set(z.files))
            if missing:
                raise ValueError(f"data file {path!r} lacks array(s) {missing}; it has {sorted(z.files)}")
            X, y = z["X"], z["y"]
    except (OSError, ValueError) as exc:
        if "lacks array" in str(exc):
            raise
        raise ValueError(f"data file {path!r} is not a plain .npz of arrays X and y ({exc})") from None
    return _as_dataset(f"npz:{os.path.splitext(os.path.basename(path))[0]}", X, y, f"data file {path!r}")


def load_csv(path: str, label_col: str | None = None) -> Dataset:
    """CSV with a header: one label column plus numeric feature columns.

    ``label_col``: the label column's name; by default the one named ``label``, ``class``,
    ``target`` or ``y`` (case-insensitive), else the last column.  Every other column must be numeric.
    """
    import csv  # noqa: PLC0415

    if not os.path.exists(path):
        raise ValueError(f"data file {path!r} does not exist")
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    if len(rows) < 3:
        raise ValueError(f"data file {path!r}: needs a header line and at least two data rows")
    header = [h.strip() for h in rows[0]]
    if label_col is None:
        named = [i for i, h in enumerate(header) if h.lower() in {"label", "class", "target", "y"}]
        li = named[0] if len(named) == 1 else len(header) - 1
    elif label_col in header:
        li = header.index(label_col)
    else:
        raise ValueError(f"data file {path!r}: no column {label_col!r}; columns are {header}")
    body = rows[1:]
    bad = next((k for k, r in enumerate(body) if len(r) != len(header)), None)
    if bad is not None:
        raise ValueError(f"data file {path!r}: line {bad + 2} has {len(body[bad])} fields, the header {len(header)}")
    feat = [i for i in range(len(header)) if i != li]
    try:
        X = np.array([[float(r[i]) for i in feat] for r in body], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"data file {path!r}: feature columns must be numeric ({exc})") from None
    labels = np.array([r[li].strip() for r in body])
    try:  # integer labels keep their numeric order
        as_int = labels.astype(np.int64)
        labels = as_int if np.all(as_int.astype(str) == labels) else labels
    except ValueError:
        pass
    return _as_dataset(f"csv:{os.path.splitext(os.path.basename(path))[0]}", X, labels, f"data file {path!r}")


def pendigits(folder: str) -> Dataset:
    """UCI pendigits from ``folder`` (``pendigits.tra`` + ``pendigits.tes``, both used): 16 features / 100."""
    parts = [load_csv(os.path.join(folder, f"pendigits.{ext}"), label_col="class") for ext in ("tra", "tes")]
    X = np.concatenate([p.X for p in parts]) / 100.0  # integer pen coordinates in 0..100 -> [0, 1], as digits
    y = np.concatenate([np.asarray(p.class_names)[p.y] for p in parts]).astype(np.int64)
    return _as_dataset("pendigits", X, y, f"pendigits folder {folder!r}")


def _pendigits_folder(spec: str) -> str | None:
    if spec != "pendigits":
        return spec if os.path.isfile(os.path.join(spec, "pendigits.tra")) else None
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for cand in (os.environ.get("LOUPE_PENDIGITS", ""), "../shared/data/pendigits",
                 os.path.join(here, "..", "shared", "data", "pendigits")):
        if cand and os.path.isfile(os.path.join(cand, "pendigits.tra")):
            return cand
    raise ValueError("--data pendigits: folder not found; pass its path (the folder holding pendigits.tra) "
                     "or set LOUPE_PENDIGITS")


def _load(path: str, what: str) -> np.ndarray:
    if not os.path.exists(path):
        raise ValueError(f"{what} file {path!r} does not exist")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{what} file {path!r} is not a plain .npy array ({exc})") from None
    except OSError as exc:
        raise ValueError(f"{what} file {path!r} cannot be read as .npy ({exc})") from None


_GMM_KEYS = {"n": int, "c": int, "d": int, "imbalance": float, "spread": float, "seed": int}


def with_rare_classes(ds: Dataset, rare: int, keep: int, seed: int = 0) -> Dataset:
    """``ds`` with its last ``rare`` classes cut down to ``keep`` items each (a fixed random choice)."""
    c = ds.n_classes
    if not 1 <= rare < c or keep < 1:
        raise ValueError(f"@rare={rare},keep={keep}: need 1 <= rare < {c} classes and keep >= 1")
    rng = np.random.default_rng(seed)
    rows = [np.flatnonzero(ds.y == k) for k in range(c)]
    rows = [r if k < c - rare else rng.choice(r, size=min(keep, len(r)), replace=False) for k, r in enumerate(rows)]
    sel = np.sort(np.concatenate(rows))
    return Dataset(f"{ds.name}@rare={rare},keep={keep}", ds.X[sel], ds.y[sel], list(ds.class_names))


def load_dataset(spec: str, *, label_col: str | None = None) -> Dataset:
    """Parse a ``--data`` value (module docstring) and load it (``label_col``: for CSV files)."""
    spec = spec.strip()
    if "@" in spec:
        base, _, opts = spec.rpartition("@")
        kv = dict(part.partition("=")[::2] for part in opts.split(","))
        try:
            rare, keep = int(kv.pop("rare")), int(kv.pop("keep"))
        except (KeyError, ValueError):
            raise ValueError(f"--data {spec!r}: after '@' write rare=R,keep=K (integers)") from None
        if kv:
            raise ValueError(f"--data {spec!r}: unknown option(s) {sorted(kv)} after '@'")
        return with_rare_classes(load_dataset(base, label_col=label_col), rare, keep)
    if spec == "digits":
        return digits()
    folder = _pendigits_folder(spec.rstrip("/"))
    if folder is not None:
        return pendigits(folder)
    if spec.lower().endswith(".npz"):
        return load_npz(spec)
    if spec.lower().endswith(".csv"):
        return load_csv(spec, label_col)
    if spec == "gmm" or spec.startswith("gmm:"):
        kw = {}
        for part in filter(None, spec[4:].split(",")):
            key, _, val = part.partition("=")
            if key not in _GMM_KEYS or not val:
                raise ValueError(f"--data gmm: bad option {part!r}; use key=value with keys {sorted(_GMM_KEYS)}")
            try:
                kw[key] = _GMM_KEYS[key](val)
            except ValueError:
                raise ValueError(f"--data gmm: {key}={val!r} is not a valid {_GMM_KEYS[key].__name__}") from None
        return gaussian_mixture(**kw)
    if spec.startswith("npy:"):
        paths = spec[4:].split(",")
        if len(paths) != 2:
            raise ValueError(f"--data npy: expects 'npy:EMBEDDINGS.npy,LABELS.npy'; got {spec!r}")
        return load_npy(*paths)
    raise ValueError(f"--data {spec!r} is not 'digits', 'pendigits' (or its folder), PATH.csv, PATH.npz, "
                     "'gmm[:key=value,...]' or 'npy:EMB.npy,LABELS.npy'")
