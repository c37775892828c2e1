"""Encode and decode many samples with one codec over a process pool, keeping per-sample timings.

Standard codecs are single-threaded here by design (deterministic bytes, honest per-image
times), so a sweep gets its parallelism from processes instead. Workers start with
``forkserver`` (``spawn`` where that is missing), never ``fork``: the parent may hold torch or
PyAV threads, and forking a threaded process can deadlock.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from typing import NamedTuple, Protocol

import numpy as np


class SampleCodec(Protocol):
    """Anything with per-sample ``encode``/``decode`` and ``describe``: an ImageCodec or a FeatureCodec."""

    def encode(self, item: np.ndarray) -> bytes: ...

    def decode(self, data: bytes) -> np.ndarray: ...

    def describe(self) -> dict: ...


class CodedSample(NamedTuple):
    """One image through one codec: the bytes that cross the split, what the server sees, and times."""

    data: bytes
    decoded: np.ndarray
    encode_seconds: float
    decode_seconds: float


@dataclass(frozen=True)
class CodingRun:
    """Samples in input order, plus how they were produced (``workers`` goes into the result record)."""

    samples: list[CodedSample]
    workers: int
    wall_seconds: float

    @property
    def images_per_second(self) -> float:
        return len(self.samples) / self.wall_seconds if self.wall_seconds > 0 else float("inf")


def code_one(codec: SampleCodec, image: np.ndarray) -> CodedSample:
    start = time.perf_counter()
    data = codec.encode(image)
    middle = time.perf_counter()
    decoded = codec.decode(data)
    return CodedSample(data, decoded, middle - start, time.perf_counter() - middle)


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # The fork server imports the codecs once and every worker forks from it: ~0.07 s to start a
    # pool instead of ~0.7 s of imports per worker. (No effect once the server already runs.)
    context.set_forkserver_preload(["splitbench.codecs"])
    return context


def encode_decode_many(
    codec: SampleCodec,
    images: Sequence[np.ndarray],
    workers: int | None = None,
    chunks_per_worker: int = 4,
) -> CodingRun:
    """Encode then decode every image, in order, on a :class:`CodecPool` of ``workers`` processes (default:
    all cores, never more than images; one runs in this process). A codec error in a worker is raised here.
    As with any process pool, a script that calls this must guard its entry point with
    ``if __name__ == "__main__":``."""
    images = list(images)
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    workers = max(1, min((os.cpu_count() or 1) if workers is None else workers, len(images)))
    pool = CodecPool(codec, workers, chunks_per_worker)
    start = time.perf_counter()
    try:
        samples = pool.code(images)
    finally:
        pool.close()
    return CodingRun(samples, workers, time.perf_counter() - start)


class CodecPool:
    """Encode + decode samples with one codec, in this process or in a pool kept alive across batches.

    Each sample is encoded and decoded by the same worker (one round trip), timed inside it, so the
    per-sample times stay meaningful however many workers run. Starting a pool per batch costs ~0.1 s,
    more than coding a batch of small images, so the pool starts on first use and is shut down by
    :meth:`close` or when this object is garbage-collected.
    """

    def __init__(self, codec: SampleCodec, workers: int | None = None, chunks_per_worker: int = 4) -> None:
        workers = (os.cpu_count() or 1) if workers is None else workers
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.codec = codec
        self.workers = workers
        self.chunks_per_worker = chunks_per_worker
        self._pool: ProcessPoolExecutor | None = None
        self._finalizer: weakref.finalize | None = None

    def code(self, items: list[np.ndarray]) -> list[CodedSample]:
        if self.workers == 1 or len(items) < 2:
            return [code_one(self.codec, item) for item in items]
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=_context())
            self._finalizer = weakref.finalize(self, self._pool.shutdown, cancel_futures=True)
        chunksize = max(1, math.ceil(len(items) / (self.workers * self.chunks_per_worker)))
        return list(self._pool.map(code_one, repeat(self.codec), items, chunksize=chunksize))

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # shuts the pool down once, and never again at garbage collection
        self._pool = self._finalizer = None
