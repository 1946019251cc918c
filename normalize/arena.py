"""Recycled memory for large column arenas.

Decoding writes every output byte once, into memory the kernel has to hand over first: a fresh
page is faulted in and zeroed (about 11 GB/s here, a third of the decoder's time per message
when every batch gets fresh memory). A stream that decodes batch after batch and lets each go
(Parquet writers, the capture writer, the tick store, ``iter_itch`` consumers) can instead reuse
the memory of the batches it has dropped, as an allocator that keeps freed memory (Arrow's
mimalloc pool, jemalloc) would.

:func:`take` returns a ``uint8`` array of at least ``nbytes``. Its memory comes back to the pool
only when the last view of it is gone (NumPy views, Arrow buffers made with ``pa.py_buffer``,
tables sliced from them): the array's base is a :class:`_Lease` whose finalizer returns the
block. Memory from the pool holds old bytes, not zeros: callers write every byte they expose.
At most :data:`MAX_IDLE_BYTES` wait in the pool; beyond that blocks go back to the system.
"""

from __future__ import annotations

import os
import threading

import numpy as np

MIN_BYTES = 4 << 20              # smaller requests get plain np.empty (malloc keeps those)
MAX_IDLE_BYTES = int(os.environ.get("TICKPIPE_ARENA_IDLE_BYTES", 1 << 30))
_ROUND = 2 << 20                 # sizes in whole huge pages
_SLACK = 1.5                     # reuse a block up to this much larger than asked for


class _Lease:
    """Owner of one pooled block while anything views it; returns the block when collected."""

    __slots__ = ("block", "pool", "__weakref__")

    def __init__(self, block: np.ndarray, pool: "ArenaPool"):
        self.block = block
        self.pool = pool

    def __buffer__(self, flags: int) -> memoryview:
        return memoryview(self.block)

    def __release_buffer__(self, view: memoryview) -> None:
        view.release()

    def __del__(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            pool._give_back(self.block)


class ArenaPool:
    """Idle blocks kept for reuse, at most ``max_idle_bytes`` of them (thread-safe)."""

    def __init__(self, max_idle_bytes: int = MAX_IDLE_BYTES, poison: int | None = None):
        self.max_idle_bytes = max_idle_bytes
        self.poison = poison                       # tests: fill returned blocks with this byte
        self._idle: list[np.ndarray] = []          # oldest first
        self._idle_bytes = 0
        self._lock = threading.RLock()             # RLock: a finalizer may run inside take()
        self.reused = 0                            # blocks handed out again (for tests, stats)
        self.fresh = 0                             # blocks taken from the system

    def take(self, nbytes: int) -> np.ndarray:
        """A writable ``uint8`` array of ``nbytes``, contents undefined (old bytes when reused)."""
        if nbytes < MIN_BYTES or self.max_idle_bytes <= 0:
            return np.empty(nbytes, np.uint8)
        need = -(-nbytes // _ROUND) * _ROUND
        block = None
        with self._lock:
            best = -1
            for i, b in enumerate(self._idle):
                if need <= b.shape[0] <= need * _SLACK and (
                        best < 0 or b.shape[0] < self._idle[best].shape[0]):
                    best = i
            if best >= 0:
                block = self._idle.pop(best)
                self._idle_bytes -= block.shape[0]
                self.reused += 1
        if block is None:
            block = np.empty(need, np.uint8)    # large: NumPy asks for transparent huge pages
            self.fresh += 1
        return np.frombuffer(_Lease(block, self), np.uint8, count=nbytes)

    def _give_back(self, block: np.ndarray) -> None:
        if self.poison is not None:
            block.fill(self.poison)
        with self._lock:
            self._idle.append(block)
            self._idle_bytes += block.shape[0]
            while self._idle_bytes > self.max_idle_bytes and self._idle:
                self._idle_bytes -= self._idle.pop(0).shape[0]

    def clear(self) -> None:
        """Return every idle block to the system."""
        with self._lock:
            self._idle.clear()
            self._idle_bytes = 0

    @property
    def idle_bytes(self) -> int:
        return self._idle_bytes


POOL = ArenaPool()


def take(nbytes: int) -> np.ndarray:
    """``POOL.take(nbytes)``."""
    return POOL.take(nbytes)
