"""How many threads a round's numerical work may use (``LOUPE_ROUND_THREADS``, default 1).

A round on the demo works on small matrices (1,797 x 64, FIRAL's 585-dimensional products): one
BLAS thread has nothing to gain from a second, and OpenBLAS's worker threads spin while they wait.
On a busy machine (the development machine: 2 cores, several processes) a spinning thread is
descheduled mid-operation and every BLAS call waits for it: FIRAL's round on the demo took a
median 13.6 s with two BLAS threads against 1.95 s with one, back to back at a load average of 4
(docs/bench-rounds.md).  The limit covers BLAS (OpenBLAS/MKL) and OpenMP (torch's CPU kernels) for
the duration of the round, through threadpoolctl.  A worker with cores to itself and large pools
can raise it; 0 leaves the libraries' own defaults.
"""
from __future__ import annotations

import contextlib

from django.conf import settings


def compute_threads():
    """Context manager: BLAS and OpenMP limited to ``LOUPE_ROUND_THREADS`` threads inside."""
    n = int(getattr(settings, "LOUPE_ROUND_THREADS", 1))
    if n <= 0:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits  # noqa: PLC0415 - only workers need it

    return threadpool_limits(limits=n)
