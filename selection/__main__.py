"""``python -m selection {simulate,bench} ...``: the library's command-line tools."""
from __future__ import annotations

import sys
from collections.abc import Callable

USAGE = """usage: python -m selection {simulate,align-sim,bench,candidates,embed,fetch,firal-mpi} [options]

  simulate   oracle active-learning loop: learning curves (CSV, table, PNG)
  align-sim  selection via proxy with fixed (SVPp) vs aligned (ASVP) features: curves + sample saving ratio
  bench      time and peak memory per strategy over n, c, d, b   (bench firal: FIRAL's own bench)
  candidates simulated annotator: how often the offered candidate set holds the true class, its size
  embed      a folder of images -> (n, d) float32 .npy + file list (hf:<id-or-dir>, onnx:<file>, pixels)
  fetch      download a Hugging Face model's safetensors weights for offline use
  firal-mpi  Approx-FIRAL over MPI ranks: mpirun -n K python -m selection firal-mpi --problem P.npz ...

Run 'python -m selection <command> --help' for the options."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    run: Callable[[list[str]], int | None]
    if cmd == "simulate":
        from .simulate import main as run  # noqa: PLC0415
    elif cmd == "align-sim":
        from .align_sim import main as run  # noqa: PLC0415
    elif cmd == "bench":
        from .bench import main as run  # noqa: PLC0415
    elif cmd == "candidates":
        from .candidates_sim import main as run  # noqa: PLC0415
    elif cmd == "embed":
        from .embed_cli import embed_main as run  # noqa: PLC0415
    elif cmd == "fetch":
        from .embed_cli import fetch_main as run  # noqa: PLC0415
    elif cmd == "firal-mpi":
        from .firal.mpi import main as run  # noqa: PLC0415
    else:
        print(f"unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return run(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
