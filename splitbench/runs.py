"""A run: one experiment point in an --out folder, from its identity to its result record.

:class:`Run` is the one place that decides what a run is, for ``splitbench train``, ``evaluate`` and
``bench`` alike: its name and folder (``OUT/<method>-<variant>-<backbone>[-task]-<rate>``), its config
hash, which teacher run it depends on and how that is loaded, how its trained network is rebuilt and
loaded, the check that refuses a folder trained with other settings, and the record an evaluation
writes. The module-level functions are the short forms the CLI, the suites and the tests call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset

from splitbench.config import identity_dump
from splitbench.data import get_dataset, num_classes
from splitbench.errors import CheckpointError, ConfigError, SplitbenchError
from splitbench.evaluation import append_record, evaluate, versions
from splitbench.evaluation.records import now_utc
from splitbench.experiment import Experiment, validate
from splitbench.methods.base import BuildContext, format_run_name
from splitbench.models.network import SplitNetwork
from splitbench.pipelines import SplitPipeline
from splitbench.training.checkpoint import atomic_write, load_weights, save_weights, weights_metadata
from splitbench.training.distributed import barrier, cleanup, init_distributed, resolve_device
from splitbench.training.trainer import TrainOptions, fit

log = logging.getLogger("splitbench")
WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
# Settings that change how a run is executed or evaluated, not the weights it produces (beyond float rounding).
NOT_TRAINING = ("eval", "data.val_samples", "data.workers", "train.device", "train.log_every",
                "train.checkpoint_every", "train.channels_last")


def _flatten(tree: Any, prefix: str = "", into_lists: bool = False) -> dict[str, Any]:
    """Dotted keys of a nested config; ``into_lists`` also descends into lists of mappings (``train.stages.0.…``)."""
    if into_lists and isinstance(tree, list) and tree and all(isinstance(v, dict) for v in tree):
        return {f"{prefix}.#": len(tree), **_flatten({str(i): v for i, v in enumerate(tree)}, prefix, True)}
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key), into_lists))
    return out


def training_settings(config: dict, into_lists: bool = False) -> dict[str, Any]:
    """A config's settings that decide the weights training produces (dotted keys), as opposed to how the run
    is executed or evaluated (:data:`NOT_TRAINING`). The training hash keeps lists whole (``into_lists``
    False), so the hashes of runs written before stay what they were."""
    return {k: v for k, v in _flatten(config, into_lists=into_lists).items()
            if not any(k == n or k.startswith(n + ".") for n in NOT_TRAINING)}


class Run:
    """``config`` (a resolved :class:`Experiment`) as a run of the folder ``out``."""

    def __init__(self, config: Experiment, out: Path) -> None:
        self.config = config
        self.out = Path(out)
        self.method = config.method_spec
        self.args = config.args()
        self.name = config.run_name()
        self.folder = self.out / self.name
        self.weights = self.folder / WEIGHTS

    @property
    def config_hash(self) -> str:
        return self.config.hash()

    @property
    def training_hash(self) -> str:
        """Identity of what training this run produces (its training settings only)."""
        text = json.dumps(training_settings(identity_dump(self.config)), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # ------------------------------------------------------------ what it is built from

    def context(self, device: torch.device) -> BuildContext:
        c = self.config
        classes = c.backbone.num_classes or num_classes(c.data.dataset, c.data.root, c.task_spec.classes_task())
        return BuildContext(c, classes, device, lambda name: load_run(self.out, name, device))

    @property
    def teacher_name(self) -> str | None:
        """The run in the same --out this one loads as its teacher (None: none, a file, or the backbone's own).

        By default the teacher is the unsplit ``classifier`` run of the same backbone and task;
        ``teacher.checkpoint`` names a file instead, and a pretrained or user-weights backbone is its own
        teacher where the task's head is the backbone's classifier."""
        t, b, task = self.config.teacher, self.config.backbone, self.config.task_spec
        if self.method.teacher is None or t.checkpoint:
            return None
        if t.run or not (b.pretrained or b.weights) or not task.head.uses_backbone_classifier:
            return t.run or format_run_name("classifier", "", b.name, task.name, {})
        return None

    def needs(self) -> dict[str, str]:
        """Every run of the same --out this one is built from, name -> role (``teacher``, ``init``, ``body``,
        ``head``, ...): what it must wait for when runs are scheduled."""
        needed = {self.teacher_name: "teacher"} if self.teacher_name else {}
        if self.config.backbone.init_run:
            needed[self.config.backbone.init_run] = "init"
        return {**needed, **self.method.runs_needed(self.config, self.args)}

    def teacher(self, device: torch.device) -> SplitNetwork:
        """The trained unsplit model this run builds on or serves with, frozen (``teacher.run`` in --out, a file,
        or the backbone's own weights)."""
        ctx = self.context(device)
        run = self.teacher_name
        path = Path(self.config.teacher.checkpoint) if self.config.teacher.checkpoint else (
            self.out / run / WEIGHTS if run else None)
        if path is None:
            return ctx.unsplit_network().eval()  # pretrained or user weights are the teacher
        if not path.is_file():
            raise CheckpointError(f"teacher weights not found: {path}; train the teacher first (e.g. splitbench "
                                  f"train {self.config.task_spec.teacher_config} --out {self.out}), or set "
                                  f"teacher.checkpoint")
        teacher = ctx.unsplit_network(weights=False)
        load_weights(teacher, path)
        return teacher.eval()

    def structure(self, device: torch.device) -> nn.Module | None:
        """The run's network as built before training, with no weights loaded into it but what the method
        takes from elsewhere (a multi-task head's body): what saved weights load into."""
        ctx = self.context(device)
        teacher = ctx.unsplit_network(weights=False) if self.method.teacher == "build" else None
        return self.method.build(ctx, self.args, teacher)

    def check_reusable(self) -> None:
        """Refuse a run folder trained with different settings: run folders are named by method, variant,
        backbone and rate only, so other data or training settings in the same --out would otherwise take its
        checkpoint or weights for their own."""
        stored_file = self.folder / CONFIG
        if not stored_file.is_file():
            return
        # Key by key, into the stages too: a setting the stored config lacks was added since, at its default.
        stored = training_settings(yaml.safe_load(stored_file.read_text()) or {}, into_lists=True)
        current = training_settings(self.config.model_dump(mode="json"), into_lists=True)
        differ = [k for k in sorted(stored.keys() & current.keys()) if stored[k] != current[k]]
        if differ:
            shown = ", ".join(f"{k}: {stored[k]!r} there, {current[k]!r} here" for k in differ[:3])
            more = f" (+{len(differ) - 3} more)" if len(differ) > 3 else ""
            raise SplitbenchError(f"{self.folder} was trained with other settings ({shown}{more}); "
                                  f"use another --out, or delete that folder to retrain")

    def write_config(self) -> None:
        """The run folder's ``config.yaml``: what the folder was trained (or composed) with."""
        self.folder.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(self.config.model_dump(mode="json"), sort_keys=False)
        atomic_write(self.folder / CONFIG, lambda p: p.write_text(text))

    def dataset(self, split: str, num_samples: int | None, train: bool) -> Dataset:
        d = self.config.data
        pipeline = None if d.transforms is None else d.transforms.train if train else d.transforms.eval
        return get_dataset(d.dataset, split, task=self.config.task, root=d.root, image_size=d.image_size,
                           num_samples=num_samples, seed=d.seed, download=d.download, train_transforms=train,
                           transforms=pipeline)

    # ------------------------------------------------------------ training

    def init_from_run(self, model: nn.Module) -> None:
        """Start a detector's/segmenter's trunk from the trunk of a trained classifier run (``backbone.init_run``),
        as torchvision starts its detectors from ImageNet weights; strict on every trunk weight."""
        run = self.config.backbone.init_run
        if not run:
            return
        if self.method.name != "classifier" or self.config.task_spec.head.uses_backbone_classifier:
            raise ConfigError("backbone.init_run starts a detector or segmenter (method classifier with task detection "
                              "or segmentation) from a classifier run; it does not apply here")
        if not (self.out / run / WEIGHTS).is_file() or not (self.out / run / CONFIG).is_file():
            raise CheckpointError(f"backbone.init_run: no trained run at {self.out / run}; train it first (e.g. "
                                  f"splitbench train shapes/teacher.yaml --out {self.out})")
        source = validate(yaml.safe_load((self.out / run / CONFIG).read_text()), str(self.out / run / CONFIG))
        if source.backbone.name != self.config.backbone.name or not source.task_spec.head.uses_backbone_classifier:
            raise ConfigError(f"backbone.init_run: {run} is a {source.task} run of {source.backbone.name}; expected "
                              f"the classifier run of {self.config.backbone.name}")
        _, classifier = load_run(self.out, run, torch.device("cpu"))
        model.trunk.load_state_dict(classifier.trunk.state_dict())
        log.info("initialised the %s trunk from %s", self.config.backbone.name, self.out / run)

    def train(self, *, resume: bool = False, progress: bool = True, stop_after_steps: int | None = None) -> Path:
        """Train the method through its stages; returns the final weights' path."""
        config, method = self.config, self.method
        if not method.needs_training(config):
            raise SplitbenchError(f"method {config.method!r} has nothing to train here; run `splitbench evaluate`")
        stages = config.train.stages
        if [s.name for s in stages] != list(method.stages):
            raise SplitbenchError(f"train.stages of method {config.method!r} must be named {list(method.stages)} in "
                                  f"that order, got {[s.name for s in stages]}")
        self.check_reusable()
        if self.weights.exists():
            if resume:
                log.info("%s: already trained (%s)", self.name, self.weights)
                return self.weights
            raise SplitbenchError(f"{self.weights} exists; use --resume to keep it, or another --out")
        if (self.folder / "checkpoint.pt").exists() and not resume:
            raise SplitbenchError(f"{self.folder} holds an interrupted run; pass --resume to continue it, "
                                  f"or delete the folder to start over")

        info = init_distributed(resolve_device(config.train.device))  # the backend depends on the device type
        device = resolve_device(config.train.device, info)  # ... and the GPU index on the local rank
        try:
            ctx = self.context(device)
            teacher = self.teacher(device) if method.teacher == "build" else None
            dataset = self.dataset("train", config.data.train_samples, train=True)
            torch.manual_seed(config.train.seed)
            model = method.build(ctx, self.args, teacher)
            self.init_from_run(model)
            module = method.recipe(ctx, self.args, model, teacher)
            if info.is_main:
                self.write_config()
                log.info("training %s on %d samples (%s, %d process%s) -> %s", self.name, len(dataset), device,
                         info.world_size, "es" if info.world_size > 1 else "", self.folder)
            barrier(info)
            options = TrainOptions(
                batch_size=config.data.batch_size, workers=config.data.workers, seed=config.train.seed,
                amp=config.train.amp, checkpoint_every=config.train.checkpoint_every,
                max_steps_per_epoch=config.train.max_steps_per_epoch, log_every=config.train.log_every,
                progress=progress, stop_after_steps=stop_after_steps, collate_fn=config.task_spec.collate,
                channels_last=config.train.channels_last)
            fit(module, stages, dataset, self.folder, options, device, info, resume=resume)
            rank_dir = os.environ.get("SPLITBENCH_RANK_WEIGHTS_DIR")  # lets tests compare DDP replicas
            if rank_dir:
                torch.save(model.state_dict(), Path(rank_dir) / f"rank{info.rank}.pt")
            if info.is_main:
                save_weights(model, self.weights, {"method": config.method, "config": config.model_dump(mode="json")})
                log.info("saved %s", self.weights)
            barrier(info)
        finally:
            cleanup(info)
        return self.weights

    # ------------------------------------------------------------ evaluation

    def pipeline(self, device: torch.device, checkpoint: Path | None = None) -> SplitPipeline:
        """The split pipeline of this run: its trained network (from ``checkpoint`` or the run folder) or its
        codec, with the teacher where the server runs it."""
        teacher = self.teacher(device) if self.method.teacher == "server" else None
        model = None
        if self.method.needs_training(self.config):
            model = self.structure(device)  # first: a config that cannot build says so before "not trained"
            if checkpoint is None:
                self.check_reusable()
            path = checkpoint or self.weights
            if not path.is_file():
                raise CheckpointError(f"no trained weights at {path}; run `splitbench train` with this config and "
                                      f"--out {self.out} first, or pass --checkpoint")
            load_weights(model, path)
        return self.method.pipeline(self.context(device), self.args, model, teacher)

    def identity(self) -> dict[str, Any]:
        """The fields every record of this run has, ok or failed."""
        c = self.config
        return {"method": c.method, "variant": c.variant(), "task": c.task, "dataset": c.data.dataset,
                "split": c.eval.split, "backbone": c.backbone.name, "rate_param": c.rate_param(), "run": self.name,
                "config_hash": self.config_hash, "config": c.model_dump(mode="json"), "versions": versions(),
                "created": now_utc()}

    def failed_record(self, error: str) -> dict[str, Any]:
        return {**self.identity(), "status": "failed", "error": error}

    def evaluate(self, *, checkpoint: Path | None = None, progress: bool = True,
                 results: Path | None = None) -> list[dict[str, Any]]:
        """Evaluate the pipeline and append its records (:meth:`measure`) to ``results`` (default
        ``OUT/results.jsonl``)."""
        records = self.measure(checkpoint=checkpoint, progress=progress)
        path = results or self.out / "results.jsonl"
        for r in records:
            append_record(path, r)
        return records

    def measure(self, *, checkpoint: Path | None = None, progress: bool = True) -> list[dict[str, Any]]:
        """Evaluate the pipeline into its records, written nowhere: one, or for a task that combines several,
        the combined record first and then one per task (same bytes)."""
        c = self.config
        device = resolve_device(c.eval.device)
        pipeline = self.pipeline(device, checkpoint)
        if self.method.composed:  # the composition's folder, for `splitbench export` and `serve`
            self.write_config()
        dataset = self.dataset(c.eval.split, c.eval.num_samples or c.data.val_samples, train=False)
        loader = DataLoader(dataset, batch_size=c.eval.batch_size, shuffle=False, num_workers=c.data.workers,
                            collate_fn=c.task_spec.collate)
        metric = c.task_spec.metric(partial(num_classes, c.data.dataset, c.data.root))
        try:
            result = evaluate(pipeline, loader, metric, total=len(dataset), progress=progress, description=self.name)
        finally:
            pipeline.close()
        record = {**self.identity(), "num_samples": result.num_samples, "metrics": result.metrics,
                  "data_size": result.data_size, "encoder": result.encoder, "timing": result.timing,
                  "runtime": result.runtime, "batch_size": c.eval.batch_size, "device": str(device), "status": "ok"}
        return [record] + [{**record, "task": task, "metrics": metrics, "combined_hash": record["config_hash"],
                            "config_hash": f"{record['config_hash']}-{task}"}
                           for task, metrics in getattr(metric, "per_task", {}).items()]


def load_run(out: Path, name: str, device: torch.device) -> tuple[Experiment, nn.Module]:
    """A trained run of ``out`` as its config and its network with the saved weights (strictly loaded; runs
    saved by older releases are renamed to today's layout on load)."""
    path = Path(out) / name / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"no trained run at {Path(out) / name}; train it first (splitbench train ... "
                              f"--out {out})")
    config = validate(weights_metadata(path)["config"], str(path))
    model = Run(config, out).structure(device)
    load_weights(model, path)
    return config, model.to(device).eval()


def train_experiment(config: Experiment, out: Path, **options: Any) -> Path:
    """``Run(config, out).train(...)``: train every stage; returns the weights' path."""
    return Run(config, out).train(**options)


def evaluate_experiment(config: Experiment, out: Path, **options: Any) -> dict[str, Any]:
    """``Run(config, out).evaluate(...)``; returns the (combined) record."""
    return Run(config, out).evaluate(**options)[0]


def measure_experiment(config: Experiment, out: Path, **options: Any) -> list[dict[str, Any]]:
    """``Run(config, out).measure(...)``: the records of an evaluation, appended nowhere."""
    return Run(config, out).measure(**options)


def build_pipeline(config: Experiment, out: Path, device: torch.device,
                   checkpoint: Path | None = None) -> SplitPipeline:
    return Run(config, out).pipeline(device, checkpoint)
