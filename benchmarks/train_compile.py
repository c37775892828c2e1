"""Does ``torch.compile`` pay for the Entropic Student's stage 1 on this CPU? Steps/s eager vs compiled (inductor),
measured in interleaved rounds on the same cached batches (machine noise hits both alike), and the compile time.

A one-epoch stage of the quickstart is a few minutes, so compiling pays only if its time is won back within it.
Usage: python benchmarks/train_compile.py [--rounds 3] [--steps 6] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _common  # noqa: F401  (offline, quiet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per round and variant")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch
    from torch.utils.data import DataLoader

    from splitbench.config import StageConfig
    from splitbench.experiment import load_configs
    from splitbench.runs import Run
    from splitbench.training.trainer import _optimizer, channels_last

    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    config = load_configs("shapes/entropic_student.yaml", ["method_args.beta=0.02"])[0]
    run = Run(config, Path("unused"))
    ctx = run.context(cpu)
    teacher = ctx.unsplit_network(weights=False).eval()
    model = config.method_spec.build(ctx, config.args(), teacher)
    module = config.method_spec.recipe(ctx, config.args(), model, teacher)
    batch_size = config.data.batch_size
    dataset = run.dataset("train", batch_size * (args.steps + 2), train=True)
    batches = [(channels_last(x), y) for x, y in DataLoader(dataset, batch_size=batch_size,
                                                            collate_fn=config.task_spec.collate)]
    module.set_stage("bottleneck")
    module.train()
    module.progress = 0.5  # past the rate ramp: the full loss
    module.to(memory_format=torch.channels_last)
    optimizer = _optimizer(StageConfig(name="bottleneck", epochs=1), module.parameter_groups(1e-4, 10.0))

    def steps(forward, data) -> float:
        start = time.perf_counter()
        for images, targets in data:
            forward(images, targets)["loss"].backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    compiled = torch.compile(module)
    compile_s = steps(compiled, batches[:2])  # the first steps compile (forward and backward graphs)
    rates: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.rounds):
        for name, forward in (("eager", module), ("compiled", compiled)):
            rates[name].append(args.steps * batch_size / steps(forward, batches[2:]))
    for name, values in rates.items():
        print(f"stage 1 {name:9s} " + "  ".join(f"{v:6.1f}" for v in values) + " images/s")
    ratios = [c / e for c, e in zip(rates["compiled"], rates["eager"], strict=True)]
    print(f"torch threads {args.threads}; compiling took {compile_s:.0f} s (2 steps); compiled/eager per round: "
          + ", ".join(f"{r:.2f}x" for r in ratios))


if __name__ == "__main__":
    main()
