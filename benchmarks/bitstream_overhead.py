"""Coded bytes vs the entropy model's estimate, and container header bytes, per trained student.

Target: payload <= 1.01 x estimate, header <= 8 bytes.
Usage: python benchmarks/bitstream_overhead.py [--out runs/quickstart] [--samples 500]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import find_student_runs, load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--samples", type=int, default=500)
    args = parser.parse_args()

    import torch

    from splitbench.compression.bitstream import header_size, unpack

    print(f"{'run':45s} {'estimate B':>10s} {'payload B':>10s} {'ratio':>7s} {'header B':>8s}")
    worst_ratio, worst_header = 0.0, 0
    for run in find_student_runs(args.out):
        _, pipeline, data = load_run(run)
        n = min(args.samples, len(data))
        images = torch.stack([data[i][0] for i in range(n)])
        estimate = float(pipeline.estimate_bits(images).sum() / 8)
        bitstreams = pipeline.mobile(images)
        payload = sum(len(s) for b in bitstreams for s in unpack(b).segments)
        header = max(header_size(b) for b in bitstreams)
        ratio = payload / estimate
        worst_ratio, worst_header = max(worst_ratio, ratio), max(worst_header, header)
        print(f"{run.name:45s} {estimate / n:10.1f} {payload / n:10.1f} {ratio:7.4f} {header:8d}")
    print(f"payload/estimate worst {worst_ratio:.4f}x (target <= 1.01), header {worst_header} B (target <= 8)")


if __name__ == "__main__":
    main()
