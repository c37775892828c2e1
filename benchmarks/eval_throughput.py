"""Evaluation throughput with real entropy coding, batch 64 vs batch 1, and where the time goes.

Each sample is coded on its own at any batch size, so batching changes speed, never byte counts.
Usage: python benchmarks/eval_throughput.py [--out runs/quickstart] [--samples 512]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import find_student_runs, load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--samples", type=int, default=512)
    args = parser.parse_args()

    import torch
    from torch.utils.data import DataLoader, Subset

    from splitbench.evaluation import evaluate_classification

    run = find_student_runs(args.out)[0]
    config, pipeline, data = load_run(run)
    subset = Subset(data, range(min(args.samples, len(data))))
    # Materialise the images once so data generation is not timed.
    cached = [(x, torch.tensor(y)) for x, y in subset]
    results = {}
    for batch in (1, 64):
        loader = DataLoader(cached, batch_size=batch)
        evaluate_classification(pipeline, DataLoader(cached[:64], batch_size=batch), progress=False)  # warm-up
        result = evaluate_classification(pipeline, loader, progress=False)
        per_sample = sum(v for k, v in result.timing.items() if k.split("_ms")[0] in
                         ("mobile_network", "entropy_encode", "entropy_decode", "server_network"))
        results[batch] = (1000 / per_sample, result)
        steps = "  ".join(f"{k.removesuffix('_ms_mean')} {v:.3f}" for k, v in result.timing.items()
                          if k.split("_ms")[0] in ("mobile_network", "entropy_encode", "entropy_decode",
                                                   "server_network"))
        print(f"batch {batch:3d}: {1000 / per_sample:8.1f} images/s  ms/sample: {steps}  "
              f"bytes {result.data_size['bytes_mean']:.1f}")
    assert results[1][1].sizes == results[64][1].sizes, "byte counts must not depend on the batch size"
    print(f"run {run.name}, {len(cached)} images of {config.data.image_size}px, torch threads "
          f"{torch.get_num_threads()}; identical per-sample bytes at both batch sizes")
    print(f"eval throughput batch 64 / batch 1 = {results[64][0] / results[1][0]:.2f}x "
          f"({results[64][0]:.0f} vs {results[1][0]:.0f} images/s)")


if __name__ == "__main__":
    main()
