"""Training throughput on the embedded shapes data: images/s of each training stage (the teacher, the
Entropic Student's two stages, End-to-End, a detection step) and where a step's time goes (the forward
pass, the frozen teacher's share of it, the backward pass, the optimizer step).

The networks are built from the shapes configs with fresh weights (speed does not depend on what they
learned); every stage runs on the same cached batches, one process, the torch threads of this machine.
Usage: python benchmarks/train_throughput.py [--steps 12] [--warmup 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _common  # noqa: F401  (offline, quiet)


def _time(fn) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def measure(module, stage: str, batches: list, warmup: int, teacher=None) -> dict[str, float]:
    """Mean seconds per step of forward, backward and optimizer, and of the teacher's forward alone."""
    import torch

    from splitbench.config import StageConfig
    from splitbench.training.trainer import _optimizer

    module.set_stage(stage)
    module.train()
    optimizer = _optimizer(StageConfig(name=stage, epochs=1), module.parameter_groups(1e-4, 10.0))
    spent = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0, "teacher": 0.0}
    for i, (images, targets) in enumerate(batches):
        out, forward = _time(lambda images=images, targets=targets: module(images, targets))
        _, backward = _time(lambda out=out: out["loss"].backward())
        _, step = _time(lambda: (optimizer.step(), optimizer.zero_grad(set_to_none=True)))
        if teacher is not None:
            with torch.no_grad():
                _, t = _time(lambda images=images: teacher(images))
        else:
            t = 0.0
        if i >= warmup:
            for k, v in zip(spent, (forward, backward, step, t), strict=True):
                spent[k] += v
    steps = len(batches) - warmup
    return {k: v / steps for k, v in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per stage")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="an override for every student config")
    parser.add_argument("--layouts", default="contiguous,channels_last",
                        help="memory layouts to compare (the trainer uses channels_last)")
    args = parser.parse_args()

    import torch
    from torch.utils.data import DataLoader

    from splitbench.experiment import load_configs
    from splitbench.runs import Run

    cpu = torch.device("cpu")
    unused = Path("unused")

    def stages_of(name: str, overrides=()):
        config = load_configs(name, list(overrides))[0]
        run = Run(config, unused)
        ctx = run.context(cpu)
        teacher = ctx.unsplit_network(weights=False).eval() if config.method_spec.teacher == "build" else None
        model = config.method_spec.build(ctx, config.args(), teacher)
        module = config.method_spec.recipe(ctx, config.args(), model, teacher)
        d = config.data
        dataset = run.dataset("train", d.batch_size * (args.steps + args.warmup), train=True)
        loader = DataLoader(dataset, batch_size=d.batch_size, collate_fn=config.task_spec.collate)
        return config, module, teacher, list(loader)

    from splitbench.training.trainer import channels_last

    rates: dict[tuple[str, str], float] = {}
    cases = [("teacher", "shapes/teacher.yaml", ()),
             ("entropic_student", "shapes/entropic_student.yaml", ["method_args.beta=0.02", *args.set]),
             ("end_to_end", "shapes/end_to_end.yaml", ["method_args.beta=1.0e-4", *args.set]),
             ("detection teacher", "shapes/detection/teacher.yaml", ["backbone.init_run=null"])]
    layouts = args.layouts.split(",")
    for label, name, overrides in cases:
        config, module, teacher, batches = stages_of(name, overrides)
        for stage in config.method_spec.stages:
            row = f"{label} {stage}" if len(config.method_spec.stages) > 1 else label
            for layout in layouts:  # alternated per stage, so machine noise hits both alike
                last = layout == "channels_last"
                module.to(memory_format=torch.channels_last if last else torch.contiguous_format)
                data = [(channels_last(x) if last else x, y) for x, y in batches]
                ms = measure(module, stage, data, args.warmup, teacher.trunk.features if teacher else None)
                step = ms["forward"] + ms["backward"] + ms["optimizer"]
                rates[row, layout] = config.data.batch_size / step
                print(f"{row:30s} {layout:14s} {rates[row, layout]:7.1f} images/s  ms/step: forward "
                      f"{1000 * ms['forward']:.0f} (frozen teacher's features {1000 * ms['teacher']:.0f})  backward "
                      f"{1000 * ms['backward']:.0f}  optimizer {1000 * ms['optimizer']:.0f}  "
                      f"batch {config.data.batch_size}")
    best = layouts[-1]
    if len(layouts) > 1:
        rows = sorted({row for row, _ in rates}, key=list(dict.fromkeys(r for r, _ in rates)).index)
        print("speed-up of " + best + " over " + layouts[0] + ": " + ", ".join(
            f"{row} {rates[row, best] / rates[row, layouts[0]]:.2f}x" for row in rows))
    print(f"torch threads {torch.get_num_threads()}; {best}: Entropic Student stage 1 at "
          f"{rates['entropic_student bottleneck', best] / rates['teacher', best]:.2f}x and stage 2 at "
          f"{rates['entropic_student tail', best] / rates['teacher', best]:.2f}x the teacher's training speed")


if __name__ == "__main__":
    main()
