"""A benchmark method = how to build its network, how to train it (named stages), and how to run
it as a split pipeline. The CLI, trainer and evaluator only ever see this interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from splitbench.registry import Registry

if TYPE_CHECKING:
    from splitbench.config import ExperimentConfig
    from splitbench.models.staged import StagedNetwork
    from splitbench.pipeline import SplitPipeline
    from splitbench.training.module import TrainingModule


class MethodArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class BuildContext:
    """What a method may use to build itself: the config and facts derived from the data."""

    config: ExperimentConfig
    num_classes: int
    device: torch.device
    out: Path | None = None  # the --out folder, for methods built from other runs in it (multi-task)

    @property
    def head_args(self):
        return self.config.head_args()


class Method(ABC):
    name: ClassVar[str]
    Args: ClassVar[type[MethodArgs]] = MethodArgs
    stages: ClassVar[tuple[str, ...]] = ()  # training stages in order; () = nothing to train
    uses_teacher: ClassVar[bool] = False
    tasks: ClassVar[tuple[str, ...]] = ("classification",)  # the config tasks this method implements

    def variant(self, args: MethodArgs) -> str:
        return ""

    def rate_param(self, args: MethodArgs) -> dict:
        return {}

    def needs_training(self, config: ExperimentConfig) -> bool:
        """Whether this configuration is trained (some methods can also run from loaded weights)."""
        return bool(self.stages)

    def build_model(self, ctx: BuildContext, args: MethodArgs, teacher: StagedNetwork | None) -> nn.Module | None:
        """The trainable/saved network (None for methods with nothing learned, e.g. codecs)."""
        return None

    def training_module(
        self, ctx: BuildContext, args: MethodArgs, model: nn.Module, teacher: StagedNetwork | None
    ) -> TrainingModule:
        raise NotImplementedError(f"method {self.name!r} has nothing to train")

    @abstractmethod
    def pipeline(
        self, ctx: BuildContext, args: MethodArgs, model: nn.Module | None, teacher: StagedNetwork | None
    ) -> SplitPipeline: ...


METHODS: Registry[Method] = Registry("method")


def register_method(cls: type[Method]) -> type[Method]:
    METHODS.add(cls.name, cls(), (cls.__doc__ or "").strip().splitlines()[0])
    return cls


def get_method(name: str) -> Method:
    return METHODS.get(name)


def list_methods() -> list[str]:
    return METHODS.names()


def learned_pipeline(model: nn.Module, device: torch.device) -> SplitPipeline:
    """The split pipeline of a learned model: a classifier's, or a detector's/segmenter's (images of any size)."""
    from splitbench.models.multitask import MultiTaskModel
    from splitbench.models.task_model import TaskModel
    from splitbench.pipeline import LearnedPipeline
    from splitbench.task_pipeline import TaskPipeline

    return (TaskPipeline if isinstance(model, (TaskModel, MultiTaskModel)) else LearnedPipeline)(model, device)
