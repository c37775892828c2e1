"""The task registry: everything splitbench knows about a task lives in its one entry.

A task owns its quality metric and default metric, how its samples are batched, its head (and the
schema of the config's ``head:`` settings), how its predictions and targets are picked out of a
multi-task batch, and whether it shows in run names. Nothing else in splitbench names a task: the
configs, methods, evaluator and reports ask the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from splitbench.data.base import collate_detection
from splitbench.evaluation.task_metrics import (
    DetectionMAP,
    Metric,
    MultiTaskMetric,
    SegmentationIoU,
    TaskPart,
    TopKAccuracy,
)
from splitbench.models.heads import (
    ClassificationHead,
    DetectionHead,
    DetectionHeadArgs,
    Head,
    HeadArgs,
    SegmentationHead,
    SegmentationHeadArgs,
)
from splitbench.registry import Registry

Classes = Callable[[str], int]  # task -> the dataset's class count for it


@dataclass(frozen=True)
class Task:
    """One task. ``metric(classes)`` makes a fresh accumulator (``classes(task)`` gives a class count);
    ``head`` is None for a task that is several others evaluated together (``combines``)."""

    name: str
    default_metric: str | None
    metric: Callable[[Classes], Metric]
    head: type[Head] | None = None
    head_schema: type[HeadArgs] | None = None  # None: no ``head:`` settings (classification's head is the backbone's)
    collate: Callable | None = None  # None: torch's default stacking
    predictions: Callable[[list], Any] = list  # a batch of per-image predictions, as the metric takes them
    targets: Callable[[Sequence[dict]], Any] = list  # its targets out of per-image multi-task targets
    in_run_name: bool = True
    combines: tuple[str, ...] = ()
    model_classes: str | None = None  # the task whose class count sizes the model (default: this one)
    teacher_config: str = ""  # the packaged config that trains this task's teacher, for messages

    def classes_task(self) -> str:
        return self.model_classes or self.name


TASKS: Registry[Task] = Registry("task")


def register_task(task: Task, help: str) -> Task:
    TASKS.add(task.name, task, help)
    return task


def get_task(name: str) -> Task:
    return TASKS.get(name)


def metric_part(classes: Classes) -> Callable[[str], TaskPart]:
    """How a multi-task metric makes the part of each task it meets."""

    def part(name: str) -> TaskPart:
        task = get_task(name)
        return TaskPart(task.metric(classes), task.predictions, task.targets)

    return part


register_task(Task(
    "classification", "top1", lambda classes: TopKAccuracy(), ClassificationHead,
    predictions=torch.stack, targets=lambda ts: torch.tensor([int(t["label"]) for t in ts]), in_run_name=False,
    teacher_config="shapes/teacher.yaml"),
    help="one label per image; top-1/top-5 accuracy; the backbone's own classifier is the head")
register_task(Task(
    "detection", "map", lambda classes: DetectionMAP(), DetectionHead, DetectionHeadArgs, collate_detection,
    targets=lambda ts: [{"boxes": t["boxes"], "labels": t["labels"]} for t in ts],
    teacher_config="shapes/detection/teacher.yaml"),
    help="boxes; COCO mAP@[.5:.95]; Faster R-CNN with FPN")
register_task(Task(
    "segmentation", "miou", lambda classes: SegmentationIoU(classes("segmentation")), SegmentationHead,
    SegmentationHeadArgs, collate_detection, targets=lambda ts: [t["mask"] for t in ts],
    teacher_config="shapes/segmentation/teacher.yaml"),
    help="a class per pixel; mIoU; DeepLabv3")
register_task(Task(
    "multitask", None, lambda classes: MultiTaskMetric(metric_part(classes)), collate=collate_detection,
    combines=("classification", "detection", "segmentation"), model_classes="classification"),
    help="classification, detection and segmentation from one bitstream; each task's metric")
