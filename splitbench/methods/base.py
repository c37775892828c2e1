"""A benchmark method is a short declaration: its arguments, how its variant and rate parameter are named,
how its network is built, which recipe trains it, and which pipeline runs it. The CLI, the runs, the
trainer and the evaluator only ever see this interface; the parts it declares with live in
``models/``, ``training/``, ``pipelines/`` and ``codecs/``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from splitbench.config import added_later  # noqa: F401  (methods declare their late fields with it)
from splitbench.errors import ConfigError
from splitbench.models.backbones import get_backbone
from splitbench.models.builders import bottleneck_student, unsplit_network
from splitbench.pipelines import LearnedPipeline
from splitbench.registry import Registry
from splitbench.tasks import TASKS

if TYPE_CHECKING:
    from splitbench.experiment import Experiment
    from splitbench.models.network import SplitNetwork
    from splitbench.pipelines import SplitPipeline
    from splitbench.training.module import TrainingModule


class MethodArgs(BaseModel):
    """A method's ``method_args`` schema: every key validated, a typo named."""

    model_config = ConfigDict(extra="forbid")


class DistillArgs(MethodArgs):
    """The teacher levels a head-distillation stage matches (Entropic Student's stage 1, CR+BQ)."""

    distill: list[str] | None = added_later(None, description="the levels stage 1 distils (default, as published: "
                                                              "every level from the split point on)")


RATE_WARMUP = "fraction of the rate-trained stage over which beta ramps up linearly from 0 (0: none)"


class RateArgs(MethodArgs):
    """The rate weight of End-to-End and EB fine-tuning: β multiplies the mean bits per image (bits summed
    over the batch / batch size), sc2bench's ``BppLoss(reduction='batchmean')``."""

    beta: float = Field(gt=0, description="weight of the mean bits per image (bits summed over the batch / batch size)")
    rate_warmup: float = added_later(0.0, ge=0, le=1, description=RATE_WARMUP)


@dataclass
class BuildContext:
    """What a method may use to build itself: the config, facts derived from the data, and (for methods
    built from other runs, the multi-task ones) a loader of the runs in the same --out."""

    config: Experiment
    num_classes: int
    device: torch.device
    load_run: Callable[[str], tuple[Experiment, nn.Module]] | None = None

    @property
    def image_size(self) -> int:
        return self.config.data.image_size

    def unsplit_network(self, weights: bool = True) -> SplitNetwork:
        """The config's unsplit model: its backbone under its task's head, with the backbone's pretrained or
        file weights unless ``weights`` is False (the structure that saved weights are loaded into)."""
        b, task = self.config.backbone, self.config.task_spec
        pretrained, file = (b.pretrained, b.weights) if weights else (False, None)
        # A task head of its own drops the backbone's classifier, whose class count then only has to match
        # the backbone's weights (ImageNet's).
        classes = self.num_classes if task.head.uses_backbone_classifier or not (pretrained or file) else 1000
        backbone = get_backbone(b.name, classes, pretrained=pretrained, weights=file)
        return unsplit_network(backbone, task.name, task.head, self.num_classes, self.config.head_args(),
                               self.image_size)

    def learned_pipeline(self, network: SplitNetwork) -> LearnedPipeline:
        """``network`` split at its bottleneck, coded by ``eval.backend``, its networks under ``eval.amp``."""
        settings = self.config.eval
        return LearnedPipeline(network, self.device, backend=settings.backend, amp=settings.amp)

    def run(self, name: str) -> tuple[Experiment, nn.Module]:
        """A trained run of the same --out: its config and its network with the saved weights."""
        if self.load_run is None:
            raise ConfigError(f"method {self.config.method!r} is built from runs in an --out folder (run {name})")
        return self.load_run(name)


class Method:
    """A method, declared in its class statement::

        class EndToEnd(BottleneckMethod, name="end_to_end", args=EndToEndArgs, stages=("train",),
                       variant="fp", rate=("beta",)):
            ...  # the docstring's first line is its help in `splitbench list methods`

    ``name`` registers it (a class without one is a family's base); ``args`` is the ``method_args`` schema;
    ``stages`` its training stages in order (none: nothing to train); ``teacher`` what it needs the trained
    unsplit model for: ``"build"`` (a student's structure and starting weights) or ``"server"`` (the server
    runs it); ``tasks`` the tasks it implements; ``variant`` a fixed variant name, or ``variant_field`` the
    argument that holds it; ``rate`` the arguments that make up its rate parameter. A method that trains nothing
    but joins trained runs into one learned model (``composed = True``, e.g. ``multitask``) gets a run folder
    holding only its config when it is evaluated, so that it can be exported and served like a trained run.
    """

    name: ClassVar[str] = ""
    Args: ClassVar[type[BaseModel]] = MethodArgs
    stages: ClassVar[tuple[str, ...]] = ()
    teacher: ClassVar[Literal["build", "server"] | None] = None
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    variant_name: ClassVar[str] = ""
    variant_field: ClassVar[str | None] = None
    rate_fields: ClassVar[tuple[str, ...]] = ()
    composed: ClassVar[bool] = False

    def __init_subclass__(cls, *, name: str = "", args: type[BaseModel] | None = None,
                          stages: tuple[str, ...] | None = None, teacher: Literal["build", "server"] | None = None,
                          tasks: tuple[str, ...] | None = None, variant: str | None = None,
                          variant_field: str | None = None, rate: tuple[str, ...] | None = None, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        declared = {"Args": args, "stages": stages, "teacher": teacher, "tasks": tasks, "variant_name": variant,
                    "variant_field": variant_field, "rate_fields": rate}
        for attribute, value in declared.items():
            if value is not None:
                setattr(cls, attribute, value)
        if name:
            cls.name = name
            register_method(cls)

    def variant(self, args: Any) -> str:
        return str(getattr(args, self.variant_field)) if self.variant_field else self.variant_name

    def rate_param(self, args: Any) -> dict:
        return {field: getattr(args, field) for field in self.rate_fields}

    def runs_needed(self, config: Experiment, args: Any) -> dict[str, str]:
        """The runs of the same --out this method is built from (name -> role, e.g. ``body``), beyond the
        teacher: what a suite orders it after."""
        return {}

    def needs_training(self, config: Experiment) -> bool:
        """Whether this configuration is trained (some methods can also run from loaded weights)."""
        return bool(self.stages)

    def build(self, ctx: BuildContext, args: Any, teacher: SplitNetwork | None) -> nn.Module | None:
        """The trainable/saved network (None for methods with nothing learned, e.g. codecs). ``teacher`` is the
        unsplit model for methods with ``teacher == "build"`` (its structure; weights when training starts)."""
        return None

    def recipe(self, ctx: BuildContext, args: Any, model: nn.Module, teacher: SplitNetwork | None) -> TrainingModule:
        raise NotImplementedError(f"method {self.name!r} has nothing to train")

    def pipeline(self, ctx: BuildContext, args: Any, model: nn.Module | None,
                 teacher: SplitNetwork | None) -> SplitPipeline:
        """How the trained network runs split: by default a learned bottleneck's coder bitstreams."""
        return ctx.learned_pipeline(model)


class BottleneckMethod(Method, teacher="build", tasks=("classification", "detection", "segmentation")):
    """A learned bottleneck (``args`` a :class:`~splitbench.models.builders.BottleneckArgs`) in place of the
    unsplit model's stages up to the split point, under its heads: the published GDN layout by default."""

    def build(self, ctx: BuildContext, args: Any, teacher: SplitNetwork | None) -> nn.Module:
        return bottleneck_student(teacher, args, ctx.image_size)


METHODS: Registry[Method] = Registry("method")


def format_run_name(method: str, variant: str, backbone: str, task: str, rate_param: dict) -> str:
    """A run's folder name: method, variant, backbone, task (where the task shows in names), rate parameters."""
    parts = [method, variant, backbone, task if TASKS.get(task).in_run_name else ""]
    parts += [f"{k}{v}" for k, v in rate_param.items()]
    return "-".join(str(p) for p in parts if p)


def register_method(cls: type[Method]) -> type[Method]:
    """Put a declared method in the registry (a method class with a ``name`` does this itself)."""
    unknown = [t for t in cls.tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"method {cls.name!r} declares unknown tasks {unknown}; known: {', '.join(TASKS)}")
    METHODS.add(cls.name, cls(), (cls.__doc__ or "").strip().splitlines()[0])
    return cls


def get_method(name: str) -> Method:
    return METHODS.get(name)


def list_methods() -> list[str]:
    return METHODS.names()
