"""Communicators for Approx-FIRAL over row shards ([AFIRAL] Sec. IV: pool rows split across
MPI ranks, every sum over rows finished with an allreduce).

The algorithm code calls the same few collectives whatever runs it:

``SelfComm``  one process: every collective is the identity, so the single-process path is
              the same code with no communication and bit-for-bit the same result as before.
``MPIComm``   wraps an ``mpi4py`` communicator.  NumPy buffers go to MPI directly; CuPy
              buffers go directly too when the MPI library is CUDA-aware (``MPIX_Query_cuda_support``
              through mpi4py, or ``LOUPE_MPI_CUDA_AWARE=1``), and are staged through host memory
              otherwise.

Every collective adds its wall time to ``seconds`` (this includes waiting for the slowest
rank: load imbalance shows up as communication time) and its CPU time to ``cpu_seconds`` (a
rank waiting in a collective polls), so that the CPU time outside collectives is the rank's
own work, whatever the machine's load.
"""
from __future__ import annotations

import os
import time

import numpy as np

from ..backend import get_array_module, is_gpu_array, to_numpy


def shard_bounds(n: int, size: int, rank: int) -> tuple[int, int]:
    """Contiguous block [lo, hi) of ``range(n)`` owned by ``rank`` of ``size`` (sizes differ by <= 1)."""
    return n * rank // size, n * (rank + 1) // size


class SelfComm:
    """One process: every collective returns its input."""

    rank = 0
    size = 1

    def __init__(self):
        self.seconds = 0.0
        self.cpu_seconds = 0.0   # CPU time spent inside collectives (a waiting rank polls)
        self.calls = 0

    def allreduce(self, a):
        """Element-wise sum over ranks of an array (NumPy or CuPy, same shape on every rank)."""
        return a

    def sum(self, x: float) -> float:
        return float(x)

    def max(self, x: float) -> float:
        return float(x)

    def allgather(self, a):
        """Concatenation in rank order of 1-d arrays of any length (a NumPy array back)."""
        return np.asarray(to_numpy(a))

    def counts(self, n: int) -> tuple[int, int]:
        """(offset of this rank's first item, total) for ``n`` items per rank in rank order."""
        return 0, int(n)

    def argmax(self, value: float, index: int) -> tuple[float, int]:
        """The largest ``value`` over ranks; ties go to the smallest ``index`` (np.argmax's
        first occurrence when indices are global positions)."""
        return value, index

    def bcast(self, obj, root: int):
        return obj

    def argmax_with(self, value: float, index: int, payload):
        """:meth:`argmax` that also hands every rank the winner's ``payload`` (one collective)."""
        return value, index, payload


class MPIComm(SelfComm):
    """An mpi4py communicator (default ``MPI.COMM_WORLD``)."""

    def __init__(self, comm=None, cuda_aware: bool | None = None):
        super().__init__()
        from mpi4py import MPI  # noqa: PLC0415

        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        if cuda_aware is None:
            env = os.environ.get("LOUPE_MPI_CUDA_AWARE")
            if env is not None:
                cuda_aware = env not in {"", "0", "false"}
            else:
                query = getattr(MPI, "Query_cuda_support", None)
                try:
                    cuda_aware = bool(query()) if query is not None else False
                except Exception:  # noqa: BLE001 - an MPI without the extension
                    cuda_aware = False
        self.cuda_aware = bool(cuda_aware)

    def _timed(self, fn, *args):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - t0
            self.cpu_seconds += time.process_time() - c0
            self.calls += 1

    def allreduce(self, a):
        def run():
            if is_gpu_array(a):
                xp = get_array_module(a)
                if self.cuda_aware:
                    src = xp.ascontiguousarray(a)
                    out = xp.empty_like(src)
                    xp.cuda.get_current_stream().synchronize()
                    self.comm.Allreduce(src, out, op=self.MPI.SUM)
                    return out
                host = np.ascontiguousarray(to_numpy(a))
                out = np.empty_like(host)
                self.comm.Allreduce(host, out, op=self.MPI.SUM)
                return xp.asarray(out)
            src = np.ascontiguousarray(a)
            out = np.empty_like(src)
            self.comm.Allreduce(src, out, op=self.MPI.SUM)
            return out
        return self._timed(run)

    def sum(self, x: float) -> float:
        return float(self._timed(self.comm.allreduce, float(x), self.MPI.SUM))

    def max(self, x: float) -> float:
        return float(self._timed(self.comm.allreduce, float(x), self.MPI.MAX))

    def allgather(self, a):
        def run():
            loc = np.ascontiguousarray(to_numpy(a)).ravel()
            sizes = np.asarray(self.comm.allgather(int(loc.shape[0])), dtype=np.int64)
            out = np.empty(int(sizes.sum()), dtype=loc.dtype)
            self.comm.Allgatherv(loc, [out, sizes.tolist()])
            return out
        return self._timed(run)

    def counts(self, n: int) -> tuple[int, int]:
        sizes = self._timed(self.comm.allgather, int(n))
        return int(sum(sizes[: self.rank])), int(sum(sizes))

    def argmax(self, value: float, index: int) -> tuple[float, int]:
        pairs = self._timed(self.comm.allgather, (float(value), int(index)))
        best = max(pairs, key=lambda p: (p[0], -p[1]))
        return best

    def bcast(self, obj, root: int):
        return self._timed(self.comm.bcast, obj, root)

    def argmax_with(self, value: float, index: int, payload):
        triples = self._timed(self.comm.allgather, (float(value), int(index), payload))
        return max(triples, key=lambda p: (p[0], -p[1]))


def self_comm() -> SelfComm:
    return SelfComm()
