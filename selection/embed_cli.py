"""``python -m selection embed`` and ``python -m selection fetch``: embeddings outside the app.

embed: every image under ``--images`` (recursive, sorted by relative path) through an extractor,
written as ``--out X.npy`` ((n, d) float32) plus ``X.files.txt`` (the relative paths, one per line,
row i = line i).  With ``--checkpoint DIR`` finished chunks are kept there and a killed run started
again with the same arguments resumes after them.

    python -m selection embed --extractor hf:facebook/dinov2-small --images photos/ --out X.npy
    python -m selection embed --extractor onnx:model.onnx --param size=224 --images photos/ --out X.npy
    python -m selection embed --extractor pixels --images photos/ --out X.npy --param dim=32

fetch: download a Hugging Face model's safetensors weights and configs into the local cache (the
only command here that uses the network; ``--to DIR`` writes a plain folder instead).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .extractors import Checkpoint, ExtractorError, extractor_names, make_extractor

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
FETCH_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]


def list_images(folder: Path) -> list[Path]:
    return sorted((p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                  key=lambda p: p.relative_to(folder).as_posix())


def parse_extractor(spec: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``hf:<id-or-dir>`` / ``onnx:<file>`` / ``torch:<file>`` / a plain name -> (name, params)."""
    name, _, arg = spec.partition(":")
    if name not in extractor_names():
        raise ExtractorError(f"unknown extractor {name!r} in {spec!r}; use hf:<id-or-dir>, onnx:<file> or pixels")
    params = dict(params)
    if arg:
        key = "model" if name == "hf" else "path"
        if name == "hf" and Path(arg).expanduser().is_dir():
            arg = str(Path(arg).expanduser().resolve())
        params[key] = arg
    return name, params


def _param(kv: str) -> tuple[str, Any]:
    if "=" not in kv:
        raise argparse.ArgumentTypeError(f"--param {kv!r} must look like name=value")
    k, v = kv.split("=", 1)
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def fetch_model(model_id: str, *, to: str | None = None, revision: str | None = None) -> Path:
    """Download ``model_id``'s configs and safetensors weights; ExtractorError if it has no safetensors."""
    from huggingface_hub import snapshot_download  # noqa: PLC0415

    path = Path(snapshot_download(model_id, revision=revision, allow_patterns=FETCH_PATTERNS, local_dir=to))
    if not any(path.glob("*.safetensors")):
        raise ExtractorError(f"{model_id} has no safetensors weights (only pickled ones, which Loupe refuses); "
                             "choose a revision or a model that ships model.safetensors")
    return path


def embed_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m selection embed", description=__doc__.split("\n\n")[1])
    ap.add_argument("--extractor", required=True, help="hf:<model id or folder>, onnx:<file.onnx>, or pixels")
    ap.add_argument("--images", required=True, type=Path, help="folder of images (recursive)")
    ap.add_argument("--out", required=True, type=Path, help="output .npy; the file list goes beside it")
    ap.add_argument("--param", action="append", type=_param, default=[], metavar="NAME=VALUE",
                    help="extractor parameter (repeatable), e.g. size=224, pooling=cls, batch=64")
    ap.add_argument("--checkpoint", type=Path, default=None, help="folder for chunked checkpoints (resume)")
    ap.add_argument("--quiet", action="store_true")
    o = ap.parse_args(argv)
    try:
        name, params = parse_extractor(o.extractor, dict(o.param))
        if not o.images.is_dir():
            raise ExtractorError(f"--images {str(o.images)!r} is not a folder")
        files = list_images(o.images)
        if not files:
            raise ExtractorError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {str(o.images)!r}")
        ext = make_extractor(name, params)
        rel = [p.relative_to(o.images).as_posix() for p in files]
        checkpoint = None
        if o.checkpoint is not None:
            h = hashlib.sha256(json.dumps({"x": name, "p": ext.params_, "files": rel}, sort_keys=True).encode())
            for p in files:
                st = p.stat()
                h.update(f"{st.st_size}:{st.st_mtime_ns};".encode())
            checkpoint = Checkpoint(o.checkpoint, fingerprint=h.hexdigest())

        def load(i: int):
            from PIL import Image  # noqa: PLC0415

            with Image.open(files[i]) as im:
                im.load()
                return im.copy()

        def progress(f: float, m: str) -> None:
            if not o.quiet:
                print(f"[{100 * f:5.1f}%] {m}", file=sys.stderr, flush=True)

        X = ext.extract(load, len(files), progress=progress, checkpoint=checkpoint)
    except ExtractorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    o.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(o.out, np.ascontiguousarray(X, dtype=np.float32))
    o.out.with_suffix(".files.txt").write_text("".join(r + "\n" for r in rel))
    if checkpoint is not None:
        checkpoint.clear()
    print(f"wrote {o.out} ({X.shape[0]} x {X.shape[1]} float32) and {o.out.with_suffix('.files.txt')}")
    return 0


def fetch_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m selection fetch",
                                 description="Download a Hugging Face model (configs + safetensors) for offline use.")
    ap.add_argument("model", help="model id, e.g. facebook/dinov2-small")
    ap.add_argument("--to", default=None, help="write a plain folder here instead of the Hugging Face cache")
    ap.add_argument("--revision", default=None)
    o = ap.parse_args(argv)
    try:
        path = fetch_model(o.model, to=o.to, revision=o.revision)
    except ExtractorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{o.model} is in {path}")
    if o.to is None:
        print("to use it on an offline worker, copy the folder models--" + o.model.replace("/", "--")
              + " from this cache to the worker's Hugging Face cache (HF_HOME/hub)")
    return 0
