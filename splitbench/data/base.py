"""The dataset registry and what every dataset entry shares: allowed splits/tasks, class count, collate.

Each entry is a :class:`DatasetSpec` rather than a bare builder so that the split/task checks and
the class count (needed to size a model head before any data is read) live in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from splitbench.errors import ConfigError
from splitbench.registry import Registry


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are not where we looked; the message says where and how to get them."""

    def __str__(self) -> str:  # FileNotFoundError(msg) would print fine, but keep it to the message
        return str(self.args[0])


@dataclass(frozen=True)
class DatasetRequest:
    """What a dataset builder is asked for; ``split`` and ``task`` are already checked against the dataset's.
    ``num_samples`` None means all (or the dataset's default size); ``root`` and ``download`` mean nothing
    to a dataset that is generated."""

    split: str
    task: str = "classification"
    root: str | None = None
    image_size: int | None = None
    num_samples: int | None = None
    seed: int = 0
    download: bool = False
    train_transforms: bool = False
    transforms: tuple | None = None  # the config's pipeline for this request (train or eval); None: defaults


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its builder (``build(request) -> Dataset``) and what it accepts. ``classes`` is
    the class count, or a function of ``root`` for datasets whose classes are read from disk."""

    build: Callable[[DatasetRequest], Dataset]
    splits: tuple[str, ...]
    classes: int | Callable[[str | None], int]
    tasks: tuple[str, ...] = ("classification",)
    task_classes: tuple[tuple[str, int], ...] = ()  # per-task counts where they differ (background included)
    custom_transforms: bool = False  # takes a config's transform pipeline (real images; not generated data)

    def num_classes(self, root: str | None = None, task: str = "classification") -> int:
        per_task = dict(self.task_classes)
        if task in per_task:
            return per_task[task]
        return self.classes if isinstance(self.classes, int) else self.classes(root)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(name: str, spec: DatasetSpec, help: str) -> None:
    DATASETS.add(name, spec, help)


def get_dataset(
    name: str,
    split: str,
    *,
    task: str = "classification",
    root: str | None = None,
    image_size: int | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    download: bool = False,
    train_transforms: bool | None = None,
    transforms: Sequence | None = None,
) -> Dataset:
    """Build dataset ``name`` for ``split``; ``train_transforms`` defaults to ``split == "train"``.

    Unknown names raise :class:`~splitbench.registry.UnknownNameError`; a split or task the dataset
    does not have raises ``ValueError`` naming the allowed ones.
    """
    spec = DATASETS.get(name)
    if split not in spec.splits:
        raise ConfigError(f"dataset {name!r} has no split {split!r}; allowed: {', '.join(spec.splits)}")
    if task not in spec.tasks:
        raise ConfigError(f"dataset {name!r} does not support task {task!r}; allowed: {', '.join(spec.tasks)}")
    if image_size is not None and image_size < 8:
        raise ConfigError(f"image_size must be at least 8, got {image_size}")
    if num_samples is not None and num_samples < 0:
        raise ConfigError(f"num_samples must be >= 0, got {num_samples}")
    if transforms is not None:
        check_takes_transforms(name)
    return spec.build(DatasetRequest(
        split, task, root, image_size, num_samples, seed, download,
        split == "train" if train_transforms is None else train_transforms,
        None if transforms is None else tuple(transforms)))


def check_takes_transforms(name: str) -> None:
    """Refuse a transform pipeline for a dataset that makes its own images (the generated shapes)."""
    if not DATASETS.get(name).custom_transforms:
        raise ConfigError(f"dataset {name!r} does not take data.transforms (it makes its own images); remove them")


def list_datasets() -> list[str]:
    return DATASETS.names()


def num_classes(name: str, root: str | None = None, task: str = "classification") -> int:
    """Class count of dataset ``name`` for ``task`` without building it (``root`` for folder datasets).

    For detection and segmentation it includes the background (class 0), as torchvision's heads expect.
    """
    return DATASETS.get(name).num_classes(root, task)


def shorter_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """``(width, height)`` scaled so the shorter side is ``size``, aspect kept (rounded to pixels)."""
    scale = size / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def pil_to_float(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 in [0, 1] (not normalised: models normalise internally)."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def subset(dataset: Dataset, num_samples: int | None, seed: int) -> Dataset:
    """A seeded random subset of ``num_samples`` (sorted, so reading stays sequential on disk), keeping
    ``classes``; the whole dataset when None or larger."""
    if num_samples is None or num_samples >= len(dataset):
        return dataset
    gen = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=gen)[:num_samples].sort().values.tolist()
    part = Subset(dataset, indices)
    part.classes = getattr(dataset, "classes", None)  # type: ignore[attr-defined]
    return part


def collate_detection(batch: Sequence[tuple[torch.Tensor, Any]]) -> tuple[torch.Tensor | list, list]:
    """Collate ``(image, target)`` pairs whose images or targets vary in size (detection, segmentation).

    Images are stacked when they share a shape (one tensor for the model), else kept as a list;
    mask targets likewise; box targets stay a list of dicts.
    """
    images, targets = zip(*batch, strict=True) if batch else ((), ())
    images, targets = list(images), list(targets)
    if targets and all(isinstance(t, torch.Tensor) for t in targets) and all(
            t.shape == targets[0].shape for t in targets):
        targets = torch.stack(targets)  # segmentation masks of one size
    if images and all(im.shape == images[0].shape for im in images):
        return torch.stack(images), targets
    return images, targets
