"""Datasets by name: the embedded ``shapes`` generator, image folders and torchvision sets."""

from splitbench.data import coco, folders, shapes, voc  # noqa: F401  (register their datasets)
from splitbench.data.base import (
    DATASETS,
    DatasetNotFoundError,
    DatasetSpec,
    check_takes_transforms,
    collate_detection,
    get_dataset,
    list_datasets,
    num_classes,
    subset,
)
from splitbench.data.shapes import ShapesDataset, ShapesSample

__all__ = [
    "DATASETS",
    "DatasetNotFoundError",
    "DatasetSpec",
    "check_takes_transforms",
    "collate_detection",
    "subset",
    "get_dataset",
    "list_datasets",
    "num_classes",
    "ShapesDataset",
    "ShapesSample",
]
