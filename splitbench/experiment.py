"""Runs one validated experiment config: train it, or evaluate it into a result record.

This is the only place that joins config, data, method, trainer and evaluator; the CLI and
the benchmark sweeps call these two functions.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader

from splitbench.config import ExperimentConfig, validate
from splitbench.data import collate_detection, get_dataset, num_classes
from splitbench.errors import CheckpointError, ConfigError, SplitbenchError
from splitbench.evaluation import append_record, evaluate, task_metric, versions
from splitbench.evaluation.records import now_utc
from splitbench.methods import BuildContext, get_method
from splitbench.models.backbones import get_backbone
from splitbench.models.staged import StagedNetwork
from splitbench.models.task_model import TaskModel, feature_trunk
from splitbench.training.checkpoint import atomic_write, load_weights, save_weights, weights_metadata
from splitbench.training.distributed import barrier, cleanup, init_distributed, resolve_device
from splitbench.training.trainer import TrainOptions, fit

log = logging.getLogger("splitbench")
WEIGHTS = "model.safetensors"


def run_dir(config: ExperimentConfig, out: Path) -> Path:
    return out / config.run_name()


def _context(config: ExperimentConfig, device: torch.device, out: Path | None = None) -> BuildContext:
    task = "classification" if config.task == "multitask" else config.task  # the body's classes
    classes = config.backbone.num_classes or num_classes(config.data.dataset, config.data.root, task)
    return BuildContext(config, classes, device, out)


def _check_task(config: ExperimentConfig) -> None:
    tasks = get_method(config.method).tasks
    if config.task not in tasks:
        raise ConfigError(f"method {config.method!r} does not implement task {config.task!r}; it does: "
                          f"{', '.join(tasks)}")


def _collate(config: ExperimentConfig):
    """Detection targets (and images of several sizes) cannot be stacked into one tensor."""
    return None if config.task == "classification" else collate_detection


def teacher_run(config: ExperimentConfig) -> str | None:
    """The run in the same --out whose weights are this config's teacher (None: a file or the backbone's own).

    By default the teacher is the classifier run of the same backbone; ``teacher.checkpoint`` names a
    file instead, and a pretrained or user-weights backbone is its own teacher.
    """
    t, b = config.teacher, config.backbone
    if t.checkpoint:
        return None
    if t.run or not (b.pretrained or b.weights) or config.task != "classification":
        task = [] if config.task == "classification" else [config.task]
        return t.run or "-".join(["classifier", b.name, *task])
    return None


def unsplit_structure(ctx: BuildContext) -> torch.nn.Module:
    """The unsplit detector/segmenter of ``ctx``'s config, to load saved weights into: built without
    pretrained or user backbone weights, which the saved ones replace (nothing is downloaded)."""
    backbone = ctx.config.backbone.model_copy(update={"pretrained": False, "weights": None})
    config = ctx.config.model_copy(update={"backbone": backbone})
    return get_method("classifier").build_model(BuildContext(config, ctx.num_classes, ctx.device, ctx.out), None, None)


def load_teacher(config: ExperimentConfig, out: Path, ctx: BuildContext) -> StagedNetwork:
    """The trained unsplit model this config points at (``teacher.run`` in ``out``, or a file), frozen: the
    classifier, or for detection/segmentation the detector/segmenter of the same backbone and head."""
    b = config.backbone
    if config.task == "classification":
        teacher = get_backbone(b.name, ctx.num_classes, pretrained=b.pretrained, weights=b.weights)
    else:
        teacher = unsplit_structure(ctx)
    run = teacher_run(config)
    if config.teacher.checkpoint:
        path = Path(config.teacher.checkpoint)
    elif run:
        path = out / run / WEIGHTS
    else:
        return teacher.eval()  # pretrained or user weights are the teacher
    if not path.is_file():
        example = "shapes/teacher.yaml" if config.task == "classification" else f"shapes/{config.task}/teacher.yaml"
        raise CheckpointError(f"teacher weights not found: {path}; train the teacher first (e.g. splitbench "
                              f"train {example} --out {out}), or set teacher.checkpoint")
    load_weights(teacher, path)
    return teacher.eval()


def init_from_run(model: torch.nn.Module, config: ExperimentConfig, out: Path) -> None:
    """Start a detector's/segmenter's trunk from the backbone of a trained classifier run (``backbone.init_run``),
    as torchvision starts its detectors from ImageNet weights; strict on every trunk weight."""
    run = config.backbone.init_run
    if not run:
        return
    if not isinstance(model, TaskModel) or model.is_split:
        raise ConfigError("backbone.init_run starts a detector or segmenter (method classifier with task detection "
                          "or segmentation) from a classifier run; it does not apply here")
    path = out / run / WEIGHTS
    if not (path.is_file() and (out / run / "config.yaml").is_file()):
        raise CheckpointError(f"backbone.init_run: no trained run at {out / run}; train it first (e.g. splitbench "
                              f"train shapes/teacher.yaml --out {out})")
    source = validate(yaml.safe_load((out / run / "config.yaml").read_text()), str(out / run / "config.yaml"))
    if source.backbone.name != config.backbone.name or source.task != "classification":
        raise ConfigError(f"backbone.init_run: {run} is a {source.task} run of {source.backbone.name}; "
                          f"expected a classification run of {config.backbone.name}")
    classifier = get_backbone(source.backbone.name, _context(source, torch.device("cpu")).num_classes)
    load_weights(classifier, path)
    model.trunk.load_state_dict(feature_trunk(classifier).state_dict())
    log.info("initialised the %s trunk from %s", config.backbone.name, path)


def _dataset(config: ExperimentConfig, split: str, num_samples: int | None, train: bool):
    d = config.data
    return get_dataset(d.dataset, split, task=config.task, root=d.root, image_size=d.image_size,
                       num_samples=num_samples, seed=d.seed, download=d.download, train_transforms=train)


def train_experiment(config: ExperimentConfig, out: Path, *, resume: bool = False, progress: bool = True,
                     stop_after_steps: int | None = None) -> Path:
    """Train the config's method through its stages; returns the final weights' path."""
    method = get_method(config.method)
    if not method.needs_training(config):
        raise SplitbenchError(f"method {config.method!r} has nothing to train here; run `splitbench evaluate`")
    stages = config.train.stages
    if [s.name for s in stages] != list(method.stages):
        raise SplitbenchError(f"train.stages of method {config.method!r} must be named {list(method.stages)} in "
                              f"that order, got {[s.name for s in stages]}")
    _check_task(config)
    directory = run_dir(config, out)
    weights = directory / WEIGHTS
    if weights.exists():
        if resume:
            log.info("%s: already trained (%s)", config.run_name(), weights)
            return weights
        raise SplitbenchError(f"{weights} exists; use --resume to keep it, or another --out")
    if (directory / "checkpoint.pt").exists() and not resume:
        raise SplitbenchError(f"{directory} holds an interrupted run; pass --resume to continue it, "
                              f"or delete the folder to start over")

    info = init_distributed(resolve_device(config.train.device))  # the backend depends on the device type
    device = resolve_device(config.train.device, info)  # ... and the GPU index on the local rank
    try:
        ctx = _context(config, device, out)
        args = config.args()
        teacher = load_teacher(config, out, ctx) if method.uses_teacher else None
        dataset = _dataset(config, "train", config.data.train_samples, train=True)
        torch.manual_seed(config.train.seed)
        model = method.build_model(ctx, args, teacher)
        init_from_run(model, config, out)
        module = method.training_module(ctx, args, model, teacher)
        if info.is_main:
            directory.mkdir(parents=True, exist_ok=True)
            text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
            atomic_write(directory / "config.yaml", lambda p: p.write_text(text))
            log.info("training %s on %d samples (%s, %d process%s) -> %s", config.run_name(), len(dataset),
                     device, info.world_size, "es" if info.world_size > 1 else "", directory)
        barrier(info)
        options = TrainOptions(
            batch_size=config.data.batch_size, workers=config.data.workers, seed=config.train.seed,
            amp=config.train.amp, checkpoint_every=config.train.checkpoint_every,
            max_steps_per_epoch=config.train.max_steps_per_epoch, log_every=config.train.log_every,
            progress=progress, stop_after_steps=stop_after_steps, collate_fn=_collate(config))
        fit(module, stages, dataset, directory, options, device, info, resume=resume)
        rank_dir = os.environ.get("SPLITBENCH_RANK_WEIGHTS_DIR")  # lets tests compare DDP replicas
        if rank_dir:
            torch.save(model.state_dict(), Path(rank_dir) / f"rank{info.rank}.pt")
        if info.is_main:
            save_weights(model, weights, {"method": config.method, "config": config.model_dump(mode="json")})
            log.info("saved %s", weights)
        barrier(info)
    finally:
        cleanup(info)
    return weights


def load_run_model(out: Path, run: str, device: torch.device) -> tuple[ExperimentConfig, torch.nn.Module]:
    """A trained run of ``out`` as its config and its model with the saved weights (strictly loaded)."""
    path = out / run / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"no trained run at {out / run}; train it first (splitbench train ... --out {out})")
    config = validate(weights_metadata(path)["config"], str(path))
    method = get_method(config.method)
    ctx = _context(config, device, out)
    teacher = None
    if method.uses_teacher:  # only its structure: the run's weights replace it
        teacher = (get_backbone(config.backbone.name, ctx.num_classes) if config.task == "classification"
                   else unsplit_structure(ctx))
    model = method.build_model(ctx, config.args(), teacher)
    load_weights(model, path)
    return config, model.to(device).eval()


def build_pipeline(config: ExperimentConfig, out: Path, device: torch.device, checkpoint: Path | None = None):
    _check_task(config)
    method = get_method(config.method)
    ctx = _context(config, device, out)
    args = config.args()
    needs_teacher = method.uses_teacher or getattr(method, "server_is_teacher", False)
    teacher = load_teacher(config, out, ctx) if needs_teacher else None
    model = None
    if method.needs_training(config):
        backbone = teacher if teacher is not None else get_backbone(config.backbone.name, ctx.num_classes)
        model = method.build_model(ctx, args, copy.deepcopy(backbone))
        path = checkpoint or run_dir(config, out) / WEIGHTS
        if not path.is_file():
            raise CheckpointError(f"no trained weights at {path}; run `splitbench train` with this config and "
                                  f"--out {out} first, or pass --checkpoint")
        load_weights(model, path)
    return method.pipeline(ctx, args, model, teacher)


def evaluate_experiment(config: ExperimentConfig, out: Path, *, checkpoint: Path | None = None,
                        progress: bool = True, results: Path | None = None) -> dict:
    """Evaluate the config's pipeline and append its record to ``out/results.jsonl``."""
    device = resolve_device(config.eval.device)
    pipeline = build_pipeline(config, out, device, checkpoint)
    e = config.eval
    dataset = _dataset(config, e.split, e.num_samples or config.data.val_samples, train=False)
    loader = DataLoader(dataset, batch_size=e.batch_size, shuffle=False, num_workers=config.data.workers,
                        collate_fn=_collate(config))
    # A multi-task model's metric needs the class count of its segmentation head.
    classes = (num_classes(config.data.dataset, config.data.root, "segmentation") if config.task == "multitask"
               else _context(config, device).num_classes)
    metric = task_metric(config.task, classes)
    try:
        result = evaluate(pipeline, loader, metric, total=len(dataset), progress=progress,
                          description=config.run_name())
    finally:
        pipeline.close()
    method = get_method(config.method)
    args = config.args()
    record = {
        "method": config.method, "variant": method.variant(args), "task": config.task,
        "dataset": config.data.dataset, "split": e.split, "num_samples": result.num_samples,
        "backbone": config.backbone.name, "rate_param": method.rate_param(args),
        "metrics": result.metrics, "data_size": result.data_size, "encoder": result.encoder,
        "timing": result.timing, "runtime": result.runtime, "batch_size": e.batch_size, "device": str(device),
        "run": config.run_name(), "config_hash": config.hash(), "config": config.model_dump(mode="json"),
        "versions": versions(), "created": now_utc(), "status": "ok",
    }
    path = results or out / "results.jsonl"
    append_record(path, record)
    for task, metrics in getattr(metric, "per_task", {}).items():  # multitask: one record per task, same bytes
        append_record(path, {**record, "task": task, "metrics": metrics, "combined_hash": record["config_hash"],
                             "config_hash": f"{record['config_hash']}-{task}"})
    return record
