"""Encode and decode many images with one codec over a process pool, keeping per-sample timings.

Standard codecs are single-threaded here by design (deterministic bytes, honest per-image
times), so a sweep gets its parallelism from processes instead. Workers start with
``forkserver`` (``spawn`` where that is missing), never ``fork``: the parent may hold torch or
PyAV threads, and forking a threaded process can deadlock.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from splitbench.codecs.base import ImageCodec


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


def code_one(codec: ImageCodec, image: np.ndarray) -> CodedSample:
    start = time.perf_counter()
    data = codec.encode(image)
    middle = time.perf_counter()
    decoded = codec.decode(data)
    return CodedSample(data, decoded, middle - start, time.perf_counter() - middle)


def _code_chunk(codec: ImageCodec, images: list[np.ndarray]) -> list[CodedSample]:
    return [code_one(codec, image) for image in images]


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # The fork server imports the codecs once and every worker forks from it: ~0.07 s to start a
    # pool instead of ~0.7 s of imports per worker. (No effect once the server already runs.)
    context.set_forkserver_preload(["splitbench.codecs"])
    return context


def encode_decode_many(
    codec: ImageCodec,
    images: Sequence[np.ndarray],
    workers: int | None = None,
    chunks_per_worker: int = 4,
) -> CodingRun:
    """Encode then decode every image, in order; ``workers`` processes (default: all cores).

    ``workers=1`` (or a single image) runs in this process. Otherwise the codec is pickled to
    each worker with a contiguous chunk of images; a few chunks per worker balance the load
    without paying a round trip per image. A codec error in a worker is raised here. As with any
    process pool, a script that calls this must guard its entry point with
    ``if __name__ == "__main__":``.
    """
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    images = list(images)
    workers = max(1, min(workers, len(images)))
    start = time.perf_counter()
    if workers == 1:
        samples = _code_chunk(codec, images)
    else:
        count = min(len(images), workers * max(1, chunks_per_worker))
        bounds = np.linspace(0, len(images), count + 1).round().astype(int)
        chunks = [images[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        with ProcessPoolExecutor(max_workers=workers, mp_context=_context()) as pool:
            results = pool.map(_code_chunk, [codec] * len(chunks), chunks)
            samples = [sample for chunk in results for sample in chunk]
    return CodingRun(samples, workers, time.perf_counter() - start)
