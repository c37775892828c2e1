"""Throughput of `shapes` generation, single process: it must stay far above training speed.

Run: ``python benchmarks/data_throughput.py [--seconds S]``. Each size is timed in several
rounds over the same indices and the best round is reported, which filters out noise from
other work on the machine; the last line is the 96x96 headline.
"""

from __future__ import annotations

import argparse
import time

import torch

from splitbench.data.shapes import generate


def images_per_second(image_size: int, seconds: float, batch: int = 100) -> float:
    generate(0, "train", 0, image_size)  # warm the per-size caches
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for index in range(batch):
            generate(0, "train", index, image_size)
        best = min(best, time.perf_counter() - start)
    return batch / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time budget per image size")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rates = {size: images_per_second(size, args.seconds) for size in (224, 96)}
    for size, rate in rates.items():
        print(f"{size}x{size}: {rate:8.0f} images/s  ({1e6 / rate:6.0f} us/image)")
    print(f"shapes generation: {rates[96]:.0f} images/s at 96x96")


if __name__ == "__main__":
    main()
