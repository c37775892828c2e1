"""Experiment configs: the schema and the YAML loading, with errors that say what to fix.

* ``yaml.safe_load`` only: a shared config cannot run code.
* ``base: other.yaml`` inherits (paths relative to the file; dicts merge, other values replace).
* ``--set a.b=value`` overrides (value parsed as YAML, so ``0.5``, ``[1, 2]`` and ``true`` work).
* ``sweep: {method_args.beta: [0.1, 0.2]}`` expands one file into one config per point.
* Every key is validated; a typo fails naming the key, the allowed ones and the closest match.

This module is schema and loading only: the sections that depend on the method (``method_args``)
and the task (``task``, ``head``) are validated against their registries by
:mod:`splitbench.experiment`, which is what commands load configs with.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from splitbench.errors import ConfigError

PACKAGE_CONFIGS = Path(__file__).parent / "configs"


class ConfigLoader(yaml.SafeLoader):
    """yaml.SafeLoader, but reading ``1e-5`` as a float as YAML 1.2 does (PyYAML's 1.1 rules make it a
    string, a classic trap for learning rates and rate weights)."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."),
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


ADDED_LATER = "added_later"


def added_later(default: Any, **kwargs: Any) -> Any:
    """A field added after the first release: left out of a config's identity (hash, training hash) while it
    holds its default, so runs and records written before it existed keep theirs."""
    return Field(default, json_schema_extra={ADDED_LATER: True}, **kwargs)


def identity_dump(model: BaseModel) -> dict[str, Any]:
    """``model.model_dump(mode="json")`` without the :func:`added_later` fields that hold their default."""
    data = model.model_dump(mode="json")
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get(ADDED_LATER) and value == field.default:
            del data[name]
        elif isinstance(value, BaseModel):
            data[name] = identity_dump(value)
        elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            data[name] = [identity_dump(v) for v in value]  # e.g. train.stages
    return data


TransformStep = str | dict[str, dict[str, Any] | None]


class TransformsConfig(Strict):
    """torchvision transforms for real data, each step a class name or ``{Name: {arguments}}``; unset: the
    defaults for the image size (:mod:`splitbench.data.transforms`)."""

    train: list[TransformStep] | None = None
    eval: list[TransformStep] | None = None


class DataConfig(Strict):
    dataset: str = "shapes"
    root: str | None = None
    image_size: int = Field(96, ge=8)
    train_samples: int | None = Field(None, ge=1)
    val_samples: int | None = Field(None, ge=1)
    batch_size: int = Field(64, ge=1)
    workers: int = Field(0, ge=0)
    download: bool = False
    seed: int = 0
    transforms: TransformsConfig | None = added_later(None)


class BackboneConfig(Strict):
    name: str
    num_classes: int | None = Field(None, ge=1, description="default: the dataset's")
    pretrained: bool = False
    weights: str | None = None
    init_run: str | None = Field(
        None, description="a classifier run in the same --out whose backbone weights start this model "
                          "(a detector or segmenter initialised from the trained classifier)")


class TeacherConfig(Strict):
    """Where the teacher's weights come from: a run in the same --out, a file, or the backbone's own."""

    run: str | None = None
    checkpoint: str | None = None


class OptimizerConfig(Strict):
    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    entropy_lr_scale: float = Field(10.0, gt=0, description="learning-rate multiplier of entropy models")


class SchedulerConfig(Strict):
    name: Literal["none", "multistep", "cosine"] = "none"
    milestones: list[int] = Field([], description="epochs (interval epoch) or steps (interval step) of the stage")
    gamma: float = Field(0.1, gt=0)
    interval: Literal["epoch", "step"] = added_later(
        "epoch", description="when the schedule advances: per epoch, or per step (a stage of one epoch decays "
                             "only per step)")


class StageConfig(Strict):
    name: str
    epochs: int = Field(ge=1)
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    batch_size: int | None = added_later(None, ge=1, description="this stage's batch size; default "
                                                                  "data.batch_size")


class TrainConfig(Strict):
    stages: list[StageConfig] = []
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    checkpoint_every: int = Field(0, ge=0, description="steps between mid-epoch checkpoints; 0 = per epoch")
    max_steps_per_epoch: int | None = Field(None, ge=1)
    log_every: int = Field(50, ge=1)
    channels_last: bool = added_later(True, description="train in channels-last layout where batches are image "
                                                        "tensors (faster convolutions; weights equal to rounding)")


class EvalConfig(Strict):
    split: str = "val"
    batch_size: int = Field(64, ge=1)
    num_samples: int | None = Field(None, ge=1)
    workers: int | None = Field(None, ge=1, description="processes for codec baselines; default all cores")
    device: str = "auto"
    backend: Literal["compressai", "constriction"] = added_later(
        "compressai", description="the entropy coder a learned bottleneck writes: compressai (CompressAI's rANS, "
                                  "the bytes sc2bench writes) or constriction (its range coder over the same tables, "
                                  "what the torch-free device writes; factorized priors only)")
    amp: bool = added_later(False, description="bf16 autocast for a learned bottleneck's networks on CUDA (entropy "
                                               "models and coding stay fp32); off by default, as bf16 rounds the "
                                               "latent, and so the bytes, otherwise than fp32")


class ExperimentConfig(Strict):
    name: str | None = None
    method: str
    task: str = Field("classification", description="a name in the task registry (splitbench list tasks)")
    data: DataConfig = DataConfig()
    backbone: BackboneConfig
    teacher: TeacherConfig = TeacherConfig()
    method_args: dict[str, Any] = {}
    head: dict[str, Any] | None = Field(None, description="the task head's settings (detection, segmentation)")
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    def hash(self) -> str:
        """Identity of the experiment (excludes nothing: any change is a different point).

        Fields added after the first release are left out while unset, so the records written
        before them keep their identity (and a resumed sweep does not redo them)."""
        data = identity_dump(self)
        if data["head"] is None:
            del data["head"]
        if data["backbone"]["init_run"] is None:
            del data["backbone"]["init_run"]
        text = json.dumps(data, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- loading


def resolve_config_path(path: str | Path) -> Path:
    """A path as given, else relative to the configs shipped with splitbench."""
    path = Path(path)
    if path.is_file():
        return path
    packaged = PACKAGE_CONFIGS / path
    if packaged.is_file():
        return packaged
    raise ConfigError(f"config file not found: {path} (also looked in {PACKAGE_CONFIGS})")


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_raw(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML file and resolve its ``base:`` chain into one dict."""
    path = resolve_config_path(path).resolve()
    if path in _seen:
        raise ConfigError(f"config inheritance cycle: {' -> '.join(str(p) for p in (*_seen, path))}")
    try:
        data = yaml.load(path.read_text(), Loader=ConfigLoader) or {}  # noqa: S506  (SafeLoader subclass)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config is a mapping of keys, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    bases = base if isinstance(base, list) else [base]
    merged: dict = {}
    for b in bases:
        merged = _merge(merged, load_raw(path.parent / b if not Path(b).is_absolute() else b, (*_seen, path)))
    return _merge(merged, data)


def set_path(raw: dict, key: str, value: Any) -> None:
    """Set ``value`` at a dotted ``key``; integer parts index lists (``train.stages.0.epochs``)."""
    node: Any = raw
    parts = key.strip().split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{key}: {'.'.join(parts[:depth])} is a list of {len(node)}; "
                                  f"{part!r} is not an index into it")
            index: Any = int(part)
        elif isinstance(node, dict):
            index = part
            if not last:
                node.setdefault(part, {})
        else:
            raise ConfigError(f"{key}: {'.'.join(parts[:depth])!r} is a value, not a section")
        if last:
            node[index] = value
        else:
            node = node[index]


def parse_value(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=ConfigLoader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: value is not valid YAML: {error}") from None


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``key.path=value`` items (values parsed as YAML)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        set_path(raw, key, parse_value(text, f"--set {item!r}"))
    return raw


def pin_swept(raw: dict, overrides: list[str]) -> dict:
    """An override of a swept key pins it: that sweep dimension disappears."""
    sweep = raw.get("sweep")
    if not isinstance(sweep, dict):
        return raw
    pinned = {item.partition("=")[0].strip() for item in overrides}
    raw = dict(raw, sweep={k: v for k, v in sweep.items() if k not in pinned})
    return raw


def expand_sweep(raw: dict) -> list[dict]:
    """One raw config per point of the ``sweep:`` grid (cartesian product of its lists)."""
    raw = copy.deepcopy(raw)
    sweep = raw.pop("sweep", None) or {}
    if not isinstance(sweep, dict) or not all(isinstance(v, list) and v for v in sweep.values()):
        raise ConfigError("sweep: maps dotted keys to non-empty lists, e.g. {method_args.beta: [0.1, 0.2]}")
    if not sweep:
        return [raw]
    keys = list(sweep)
    points = []
    for values in itertools.product(*(sweep[k] for k in keys)):
        point = copy.deepcopy(raw)
        for key, value in zip(keys, values, strict=True):
            set_path(point, key, value)
        points.append(point)
    return points


def _allowed_keys(schema: type[BaseModel], loc: tuple) -> list[str]:
    model: Any = schema
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        candidates = [annotation, *args]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return sorted(model.model_fields) if model is not None and hasattr(model, "model_fields") else []


def format_errors(error: ValidationError, schema: type[BaseModel], prefix: str = "") -> str:
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        dotted = ".".join(str(p) for p in ((prefix,) if prefix else ()) + loc)
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(schema, loc)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"unknown key {dotted!r}{hint}; allowed here: {', '.join(allowed)}")
        elif item["type"] == "missing":
            lines.append(f"missing required key {dotted!r}")
        else:
            lines.append(f"{dotted}: {item['msg']} (got {item.get('input')!r})")
    return "invalid config:\n  " + "\n  ".join(lines)


M = TypeVar("M", bound=BaseModel)


def validate_section(schema: type[M], data: Any, prefix: str) -> M:
    """``data`` validated by ``schema``; errors name the keys under ``prefix`` (e.g. ``method_args.beta``)."""
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_errors(error, schema, prefix=prefix)) from None


def load_points(path: str | Path, overrides: list[str] = ()) -> list[dict]:
    """File → base chain → overrides → one raw config per sweep point (validated by the caller)."""
    raw = apply_overrides(pin_swept(load_raw(path), list(overrides)), list(overrides))
    return expand_sweep(raw)
