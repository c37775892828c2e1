"""Detection and segmentation on the embedded shapes data: CPU time per image of each side of the split
(mobile network, entropy encode, entropy decode, server network) for an Entropic Student, and the
training time per epoch of the light unsplit models and of the students' two stages.

The networks are built from the shapes configs with fresh weights (the time does not depend on what
they learned; only the entropy coding time does a little, through the latent's entropy).
Usage: python benchmarks/task_timing.py [--images 100] [--steps 8]
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import _common  # noqa: F401  (offline, quiet)


def _train_seconds_per_step(module, loader, steps: int) -> float:
    import torch

    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, 1e-4)
    module.train()
    batches = iter(loader)
    images, targets = next(batches)
    module(images, targets)["loss"].backward()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        images, targets = next(batches)
        out = module(images, targets)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=100, help="validation images timed per task")
    parser.add_argument("--steps", type=int, default=8, help="training steps timed per model")
    args = parser.parse_args()

    import torch
    from torch.utils.data import DataLoader

    from splitbench.data import collate_detection, get_dataset, num_classes
    from splitbench.evaluation import evaluate
    from splitbench.experiment import load_configs
    from splitbench.runs import Run

    cpu = torch.device("cpu")
    for task in ("detection", "segmentation"):
        teacher_config = load_configs(f"shapes/{task}/teacher.yaml")[0]
        config = load_configs(f"shapes/{task}/entropic_student.yaml", ["method_args.beta=0.01"])[0]
        ctx = Run(config, Path("unused")).context(cpu)
        classifier = teacher_config.method_spec
        teacher = classifier.build(Run(teacher_config, Path("unused")).context(cpu), None, None)
        method = config.method_spec
        student = method.build(ctx, config.args(), teacher)
        d = config.data
        train = get_dataset(d.dataset, "train", task=task, image_size=d.image_size, num_samples=d.batch_size *
                            (args.steps + 1), seed=d.seed)
        loader = DataLoader(train, batch_size=d.batch_size, collate_fn=collate_detection)
        steps_per_epoch = d.train_samples // d.batch_size
        teacher_module = classifier.recipe(ctx, None, teacher, None)
        teacher_module.set_stage("train")
        rows = [("teacher (unsplit)", _train_seconds_per_step(teacher_module, loader, args.steps))]
        es_module = method.recipe(ctx, config.args(), student, teacher)  # freezes the teacher
        for stage in method.stages:
            es_module.set_stage(stage)
            rows.append((f"ES stage {stage}", _train_seconds_per_step(es_module, loader, args.steps)))
        student.trunk.coder.update()
        pipeline = method.pipeline(ctx, config.args(), student, teacher)
        val = get_dataset(d.dataset, "val", task=task, image_size=d.image_size, num_samples=args.images, seed=d.seed)
        cached = [val[i] for i in range(len(val))]
        result = evaluate(pipeline, DataLoader(cached, batch_size=config.eval.batch_size,
                                               collate_fn=collate_detection),
                          config.task_spec.metric(partial(num_classes, d.dataset, d.root)), progress=False)
        t = result.timing
        print(f"{task}: {d.image_size}px, batch {config.eval.batch_size}, {result.num_samples} images, torch threads "
              f"{torch.get_num_threads()}, {result.data_size['bytes_mean']:.0f} B/sample")
        print(f"  ms/image: mobile network {t['mobile_network_ms_mean']:.2f}  entropy encode "
              f"{t['entropy_encode_ms_mean']:.2f}  entropy decode {t['entropy_decode_ms_mean']:.2f}  "
              f"server network {t['server_network_ms_mean']:.2f}")
        for name, seconds in rows:
            print(f"  train {name}: {d.batch_size / seconds:.0f} images/s, {seconds * steps_per_epoch:.0f} s per "
                  f"epoch of {steps_per_epoch * d.batch_size} images")


if __name__ == "__main__":
    main()
