"""An experiment: a config resolved against the registries (its method, method arguments, task and head).

:mod:`splitbench.config` holds the schema and the YAML loading; what a name means (which method,
which task, which head) lives in the registries, so the sections that depend on it are validated
here, once, when a config is loaded: a typo in ``method_args`` or ``head``, an unknown task, or a
method that does not implement the task fails before anything runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, PrivateAttr, ValidationError

from splitbench.config import ExperimentConfig, format_errors, identity_dump, load_points, validate_section
from splitbench.data import check_takes_transforms
from splitbench.data.transforms import build_transforms
from splitbench.errors import ConfigError
from splitbench.methods import get_method
from splitbench.methods.base import format_run_name
from splitbench.registry import UnknownNameError
from splitbench.tasks import TASKS, Task, get_task

if TYPE_CHECKING:
    from splitbench.methods.base import Method


class Experiment(ExperimentConfig):
    """A validated config whose method, typed method arguments, task and head settings are resolved."""

    _method: Any = PrivateAttr(None)
    _args: Any = PrivateAttr(None)
    _head: Any = PrivateAttr(None)
    _task: Any = PrivateAttr(None)

    def resolve(self) -> Experiment:
        """Validate the registry-dependent sections and store them normalised (defaults filled, types
        coerced), so a point's hash does not depend on how a value was written."""
        method = get_method(self.method)
        try:
            task = get_task(self.task)
        except UnknownNameError as error:
            raise ConfigError(f"task: {error}") from None
        if self.task not in method.tasks:
            raise ConfigError(f"method {self.method!r} does not implement task {self.task!r}; it does: "
                              f"{', '.join(method.tasks)}")
        args = validate_section(method.Args, self.method_args, "method_args")
        head: BaseModel | None = None
        if task.head_schema is None:
            if self.head:
                owners = [name for name in TASKS if get_task(name).head_schema is not None]
                raise ConfigError(f"head: task {self.task!r} has no head settings (they belong to {', '.join(owners)})")
        else:
            head = validate_section(task.head_schema, self.head or {}, "head")
        if self.data.transforms is not None:  # a typo in a pipeline fails here, not after the teacher trained
            check_takes_transforms(self.data.dataset)
            for split, steps in (("train", self.data.transforms.train), ("eval", self.data.transforms.eval)):
                if steps is not None:
                    build_transforms(steps, f"data.transforms.{split}")
        self.method_args = identity_dump(args)
        self.head = None if head is None else head.model_dump(mode="json")
        self._method, self._args, self._head, self._task = method, args, head, task
        return self

    @property
    def method_spec(self) -> Method:
        return self._method

    @property
    def task_spec(self) -> Task:
        return self._task

    def args(self) -> BaseModel:
        """``method_args`` as the method's typed schema."""
        return self._args

    def head_args(self) -> BaseModel | None:
        """``head`` as the task head's typed schema (None where the task has no head settings)."""
        return self._head

    def variant(self) -> str:
        return self._method.variant(self._args)

    def rate_param(self) -> dict:
        return self._method.rate_param(self._args)

    def run_name(self) -> str:
        return self.name or format_run_name(self.method, self.variant(), self.backbone.name, self.task,
                                            self.rate_param())


def validate(raw: dict, source: str = "config") -> Experiment:
    """A raw config (one sweep point) as a resolved :class:`Experiment`."""
    try:
        experiment = Experiment.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{source}: {format_errors(error, ExperimentConfig)}") from None
    return experiment.resolve()


def load_configs(path: str | Path, overrides: list[str] = ()) -> list[Experiment]:
    """Everything a command needs: file → base chain → overrides → sweep points → resolved experiments."""
    return [validate(point, str(path)) for point in load_points(path, list(overrides))]
