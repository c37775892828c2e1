"""Evaluation throughput with real entropy coding, batch 64 vs batch 1, and where the time goes.

Each sample is coded on its own at any batch size, so batching changes speed, never byte counts. The
configurations alternate chunk by chunk (the CPU may be shared: they see the same load): batch 1 and
batch 64 with CompressAI's coder (the default), and batch 64 with the constriction backend
(``eval.backend: constriction``). At batch 64 the evaluator chooses the server network's micro-batch on
each chunk's first batches; the line says what it chose.
Usage: python benchmarks/eval_throughput.py [--out runs/quickstart] [--samples 512] [--chunk 256]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from _common import find_student_runs, load_run

STEPS = ("mobile_network", "entropy_encode", "entropy_decode", "server_network")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=256, help="images per alternation between configurations")
    args = parser.parse_args()

    import time

    import torch
    from torch.utils.data import DataLoader, Subset

    from splitbench.evaluation import evaluate_classification
    from splitbench.pipelines import LearnedPipeline

    run = find_student_runs(args.out)[0]
    config, pipeline, data = load_run(run)
    subset = Subset(data, range(min(args.samples, len(data))))
    cached = [(x, torch.tensor(y)) for x, y in subset]  # materialised once, so data generation is not timed
    setups = {"batch 1": (pipeline, 1), "batch 64": (pipeline, 64),
              "batch 64, constriction": (LearnedPipeline(pipeline.network, backend="constriction"), 64)}
    for p, batch in setups.values():  # warm-up
        evaluate_classification(p, DataLoader(cached[:64], batch_size=batch), progress=False)
    wall, ms, sizes, chosen = defaultdict(float), defaultdict(lambda: defaultdict(float)), defaultdict(list), {}
    for first in range(0, len(cached), args.chunk):
        chunk = cached[first : first + args.chunk]
        for name, (p, batch) in setups.items():
            start = time.perf_counter()
            result = evaluate_classification(p, DataLoader(chunk, batch_size=batch), progress=False)
            wall[name] += time.perf_counter() - start
            sizes[name] += result.sizes
            for k in STEPS:
                ms[name][k] += result.timing[f"{k}_ms_mean"] * result.num_samples
            chosen[name] = result.runtime["micro_batch"]
    n = len(cached)
    assert sizes["batch 1"] == sizes["batch 64"], "byte counts must not depend on the batch size"
    rates = {}
    for name in setups:
        rates[name] = n / wall[name]
        steps = "  ".join(f"{k} {ms[name][k] / n:.3f}" for k in STEPS)
        micro = ", ".join(f"{k.removesuffix('_network')} {v}" for k, v in chosen[name].items())
        print(f"{name:22s}: {rates[name]:7.1f} images/s  ms/sample: {steps}  bytes "
              f"{sum(sizes[name]) / n:.1f}  (micro-batches: {micro})")
    print(f"run {run.name}, {n} images of {config.data.image_size}px, torch threads {torch.get_num_threads()}, "
          f"chunks of {args.chunk}; identical per-sample bytes at batch 1 and 64")
    print(f"eval throughput batch 64 / batch 1 = {rates['batch 64'] / rates['batch 1']:.2f}x "
          f"({rates['batch 64']:.0f} vs {rates['batch 1']:.0f} images/s); constriction / CompressAI at batch 64 = "
          f"{rates['batch 64, constriction'] / rates['batch 64']:.2f}x")


if __name__ == "__main__":
    main()
