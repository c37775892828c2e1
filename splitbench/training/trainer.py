"""The one training loop: named stages, DDP, AMP on CUDA, atomic checkpoints, exact resume.

A checkpoint records where the run is (stage, epoch, batches done in the epoch), the model,
optimizer and scheduler states and the RNG state. The data order of an epoch is a function of
(seed, epoch), so a resumed run sees the same batches and random draws it would have seen.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler

from splitbench.config import StageConfig
from splitbench.progress import progress_bar
from splitbench.training.checkpoint import load_checkpoint, load_state_strict, save_checkpoint
from splitbench.training.distributed import DistInfo, average_buffers
from splitbench.training.module import TrainingModule

log = logging.getLogger("splitbench.train")


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors, and the lists/dicts of them that detection targets are, moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def channels_last(images: Any) -> Any:
    """A batch of images in channels-last layout (a detection batch, a list of images, is left as it is)."""
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return images.contiguous(memory_format=torch.channels_last)
    return images


class Layout:
    """``module`` in channels-last layout while it trains (before any DDP wrapper sees its parameters), and
    its batches with it; ``restore`` puts the default layout back."""

    def __init__(self, module: torch.nn.Module, active: bool) -> None:
        self.module, self.active = module, active
        if active:
            module.to(memory_format=torch.channels_last)  # in place: the parameters stay the same objects

    def batch(self, images: Any) -> Any:
        return channels_last(images) if self.active else images

    def restore(self) -> None:
        """The default layout again: what is saved (safetensors wants contiguous tensors) and evaluated next."""
        if self.active:
            self.module.to(memory_format=torch.contiguous_format)
            self.active = False


class StopTraining(Exception):
    """Raised by ``stop_after_steps`` to simulate a run killed right after a checkpoint."""


class EpochSampler(Sampler[int]):
    """A per-epoch permutation from (seed, epoch), sharded over ranks, able to skip what a resumed run
    already saw. (torch's DistributedSampler cannot start mid-epoch, hence this small class.)"""

    def __init__(self, size: int, seed: int, info: DistInfo, batch_size: int) -> None:
        self.size, self.seed, self.info, self.batch_size = size, seed, info, batch_size
        self.per_rank = size // info.world_size  # equal shards, so every rank runs the same steps
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_batches * self.batch_size

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=g)
        shard = order[self.info.rank : self.per_rank * self.info.world_size : self.info.world_size]
        return iter(shard[self.skip :].tolist())

    def __len__(self) -> int:
        return max(0, self.per_rank - self.skip)


@dataclass
class Position:
    stage: int = 0
    epoch: int = 0
    step: int = 0  # batches finished in the current epoch
    global_step: int = 0


def _optimizer(cfg: StageConfig, params: list[dict]) -> torch.optim.Optimizer:
    o = cfg.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)


def _scheduler(cfg: StageConfig, optimizer: torch.optim.Optimizer,
               steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The stage's schedule, counted in epochs or, with ``interval: step``, in optimizer steps."""
    s = cfg.scheduler
    if s.name == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, s.milestones, s.gamma)
    if s.name == "cosine":
        length = cfg.epochs * (steps_per_epoch if s.interval == "step" else 1)
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=length)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


@dataclass
class TrainOptions:
    batch_size: int
    workers: int = 0
    seed: int = 0
    amp: bool = True
    checkpoint_every: int = 0
    max_steps_per_epoch: int | None = None
    log_every: int = 50
    progress: bool = True
    stop_after_steps: int | None = None  # tests: behave as if killed after this many steps
    collate_fn: Callable | None = None  # detection targets are lists of dicts
    # Convolutions in channels-last layout where batches are image tensors: on a CPU, oneDNN's kernels
    # for it train the students' first stage 1.4x faster (benchmarks/train_throughput.py); detection's
    # lists of images ran 0.92x, so they keep the default layout. Saved weights are contiguous again.
    channels_last: bool = True


def _stage_loader(dataset: Dataset, batch_size: int, options: TrainOptions, info: DistInfo,
                  device: torch.device) -> tuple[EpochSampler, DataLoader, int]:
    """A stage's sampler, loader and steps per epoch: stages may differ in batch size (a student's first
    stage learns more per image from small batches; its second runs faster in large ones)."""
    sampler = EpochSampler(len(dataset), options.seed, info, batch_size)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=options.workers,
                        drop_last=True, pin_memory=device.type == "cuda",
                        persistent_workers=False, collate_fn=options.collate_fn)
    steps_per_epoch = sampler.per_rank // batch_size
    if options.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, options.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(dataset)} training samples make no full batch of {batch_size}"
                         f" per rank ({info.world_size} ranks)")
    return sampler, loader, steps_per_epoch


def fit(
    module: TrainingModule,
    stages: list[StageConfig],
    dataset: Dataset,
    run_dir: Path,
    options: TrainOptions,
    device: torch.device,
    info: DistInfo = DistInfo(),
    resume: bool = False,
) -> None:
    """Train ``module`` through ``stages``; checkpoints go to ``run_dir/checkpoint.pt``."""
    known = set(module.stages)
    for stage in stages:
        if stage.name not in known:
            raise ValueError(f"unknown training stage {stage.name!r}; this method has {list(module.stages)}")
    checkpoint_path = run_dir / "checkpoint.pt"
    module.to(device)
    layout = Layout(module, options.channels_last and options.collate_fn is None)  # None: image-tensor batches
    position = Position()
    state = None
    if resume and checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        load_state_strict(module.model, state["model"], f"{checkpoint_path} (this config's model)")
        position = Position(**state["position"])
        log.info("resuming %s at stage %d epoch %d step %d", run_dir.name, position.stage, position.epoch,
                 position.step)

    # Built up front, so a stage whose batch does not fit the data fails before anything trains.
    loaders = [_stage_loader(dataset, stage.batch_size or options.batch_size, options, info, device)
               for stage in stages]
    amp = options.amp and device.type == "cuda"
    log_path = run_dir / "train_log.jsonl"

    for stage_index in range(position.stage, len(stages)):
        stage = stages[stage_index]
        sampler, loader, steps_per_epoch = loaders[stage_index]
        module.set_stage(stage.name)
        params = module.parameter_groups(stage.optimizer.lr, stage.optimizer.entropy_lr_scale)
        net: torch.nn.Module = module
        if info.enabled:
            net = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
        optimizer = _optimizer(stage, params)
        scheduler = _scheduler(stage, optimizer, steps_per_epoch)
        per_step = stage.scheduler.interval == "step"
        if state is not None and state.get("optimizer") is not None:  # resuming inside this stage
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
        else:  # a stage's random draws depend only on (seed, stage), resumed or not
            torch.manual_seed(options.seed * 1000 + stage_index)

        def save(pos: Position, in_stage: bool = True, optimizer=optimizer, scheduler=scheduler) -> None:
            if info.is_main:
                save_checkpoint({"model": module.model.state_dict(),
                                 "optimizer": optimizer.state_dict() if in_stage else None,
                                 "scheduler": scheduler.state_dict() if in_stage else None,
                                 "rng": torch.get_rng_state(), "position": asdict(pos)}, checkpoint_path)

        for epoch in range(position.epoch, stage.epochs):
            module.train()
            sampler.set_epoch(epoch, position.step)
            # The loader draws its workers' base seed from this generator, not from the global RNG
            # that the checkpoint restores, so a resumed run makes the same random draws.
            loader.generator = torch.Generator().manual_seed(options.seed * 100_003 + epoch)
            sums: dict[str, float] = defaultdict(float)
            start, seen, ran = time.perf_counter(), 0, 0
            bar = progress_bar(steps_per_epoch, f"{stage.name} {epoch + 1}/{stage.epochs}",
                               enabled=options.progress and info.is_main, every=options.log_every,
                               initial=position.step, unit="step")
            for images, targets in loader:
                if position.step >= steps_per_epoch:
                    break
                images, targets = to_device(images, device), to_device(targets, device)
                images = layout.batch(images)
                module.progress = (epoch * steps_per_epoch + position.step) / (stage.epochs * steps_per_epoch)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    out = net(images, targets)
                loss = out["loss"]
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(f"loss became {loss.item()} at stage {stage.name} epoch {epoch + 1}; "
                                             "lower the learning rate or beta")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if per_step:
                    scheduler.step()
                position.step += 1
                position.global_step += 1
                ran += 1
                seen += len(images)
                for k, v in out.items():
                    sums[k] += float(v.detach())
                if position.step % options.log_every == 0 or position.step == steps_per_epoch:
                    bar.set_postfix({k: f"{v / ran:.4g}" for k, v in sums.items()}, refresh=False)
                bar.update(1)
                if options.checkpoint_every and position.global_step % options.checkpoint_every == 0:
                    save(position)
                if options.stop_after_steps and position.global_step >= options.stop_after_steps:
                    bar.close()
                    raise StopTraining(position.global_step)
            bar.close()
            average_buffers(module.model, info)
            if not per_step:
                scheduler.step()
            elapsed = time.perf_counter() - start
            means = {k: v / max(1, ran) for k, v in sums.items()}
            if info.is_main:
                log.info("%s epoch %d/%d  %s  (%.1f s, %.0f img/s)", stage.name, epoch + 1, stage.epochs,
                         "  ".join(f"{k} {v:.4g}" for k, v in means.items()), elapsed,
                         seen * info.world_size / max(elapsed, 1e-9))
                with open(log_path, "a") as f:
                    f.write(json.dumps({"stage": stage.name, "epoch": epoch + 1, **means,
                                        "seconds": round(elapsed, 2)}) + "\n")
            position = Position(stage_index, epoch + 1, 0, position.global_step)
            save(position)
        module.end_stage(stage.name)
        position = Position(stage_index + 1, 0, 0, position.global_step)
        state = None
        save(position, in_stage=False)
    layout.restore()
