"""``coco``: COCO 2017 instances for detection, read from a user's root with pycocotools; never downloads.

Targets follow torchvision's detection convention: ``{"boxes" (N,4) float32 xyxy pixels, "labels"
(N,) int64}`` with the 80 COCO category ids (1..90, with gaps) mapped to contiguous labels 1..80
and 0 left for background, so a head has 81 outputs. ``"iscrowd"`` and ``"area"`` ride along for
the COCO evaluation protocol (:class:`~splitbench.evaluation.task_metrics.DetectionMAP`).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from splitbench.data.base import (
    DatasetNotFoundError,
    DatasetRequest,
    DatasetSpec,
    pil_to_float,
    register_dataset,
    shorter_side_size,
    subset,
)
from splitbench.data.voc import CocoVOCMasks

SPLITS = ("train", "val")
NUM_CLASSES = 81  # 80 categories + background (label 0)
LAYOUT = "<root>/{train2017,val2017}/*.jpg and <root>/annotations/instances_{train,val}2017.json"
GET_IT = "get COCO 2017 (images and annotations) from https://cocodataset.org/#download; splitbench never downloads it"


class CocoDetection(Dataset):
    """COCO-format detection data: ``(image (3,H,W) float32 [0,1], target dict)`` at each image's own size.

    ``image_size`` resizes so the shorter side has that many pixels (boxes and areas follow);
    ``None`` keeps the file's size (torchvision detectors resize internally). ``train`` adds a random
    horizontal flip and drops crowd boxes, which are not objects to learn; in eval they stay with
    ``iscrowd=1`` so the COCO protocol can ignore detections on them. Boxes with no width or height
    (after clipping to the image) are dropped in both modes.
    """

    def __init__(
        self, image_dir: str | Path, annotation_file: str | Path, *, image_size: int | None = None, train: bool = False
    ) -> None:
        from pycocotools.coco import COCO

        self.image_dir = Path(image_dir)
        self.image_size = image_size
        self.train = train
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco = COCO(str(annotation_file))
        category_ids = sorted(self.coco.getCatIds())
        self.label_of_category = {cat: label for label, cat in enumerate(category_ids, start=1)}
        self.classes = ["__background__", *(self.coco.cats[cat]["name"] for cat in category_ids)]
        self.ids = sorted(self.coco.imgs)

    def __len__(self) -> int:
        return len(self.ids)

    def _annotations(self, image_id: int, width: int, height: int) -> dict[str, torch.Tensor]:
        boxes, labels, crowd, area = [], [], [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            is_crowd = int(ann.get("iscrowd", 0))
            if is_crowd and self.train:
                continue
            x, y, w, h = ann["bbox"]
            x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
            x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
            if w <= 0 or h <= 0 or x2 <= x1 or y2 <= y1:
                continue
            boxes.append((x1, y1, x2, y2))
            labels.append(self.label_of_category[ann["category_id"]])
            crowd.append(is_crowd)
            area.append(float(ann.get("area", (x2 - x1) * (y2 - y1))))
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "iscrowd": torch.tensor(crowd, dtype=torch.int64),
            "area": torch.tensor(area, dtype=torch.float32),
        }

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        with Image.open(self.image_dir / info["file_name"]) as file:
            image = file.convert("RGB")
        width, height = image.size
        target = self._annotations(image_id, width, height)
        if self.image_size is not None:
            new_w, new_h = shorter_side_size(width, height, self.image_size)
            if (new_w, new_h) != (width, height):
                image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
                sx, sy = new_w / width, new_h / height
                target["boxes"] *= torch.tensor([sx, sy, sx, sy])
                target["area"] *= sx * sy
                width = new_w
        tensor = pil_to_float(image)
        if self.train and torch.rand(()) < 0.5:
            tensor = tensor.flip(-1)
            mirror = torch.tensor([-1.0, 1.0, -1.0, 1.0]), torch.tensor([float(width), 0.0, float(width), 0.0])
            target["boxes"] = target["boxes"][:, [2, 1, 0, 3]] * mirror[0] + mirror[1]  # x1' = W - x2, x2' = W - x1
        return tensor, target

    def __repr__(self) -> str:
        return (
            f"CocoDetection({str(self.image_dir)!r}, n={len(self)}, image_size={self.image_size}, train={self.train})"
        )


def coco_paths(root: str | None, split: str) -> tuple[Path, Path]:
    """``(image folder, annotation file)`` of ``split`` under ``root``; DatasetNotFoundError if either is missing."""
    if root is None:
        raise DatasetNotFoundError(
            f"dataset 'coco' needs a root folder (config `data.root`); layout: {LAYOUT}; {GET_IT}"
        )
    folder = Path(root).expanduser()
    image_dir = folder / f"{split}2017"
    annotation_file = folder / "annotations" / f"instances_{split}2017.json"
    for path, kind in ((image_dir, "image folder"), (annotation_file, "annotation file")):
        exists = path.is_dir() if kind == "image folder" else path.is_file()
        if not exists:
            raise DatasetNotFoundError(
                f"dataset 'coco' {split!r}: {kind} {str(path)!r} does not exist; layout: {LAYOUT}; {GET_IT}"
            )
    return image_dir, annotation_file


def _build(r: DatasetRequest) -> Dataset:
    """COCO is never fetched (see GET_IT): ``download`` means nothing here."""
    image_dir, annotation_file = coco_paths(r.root, r.split)
    # With task segmentation: the masks of VOC's 20 categories, for segmenters pretrained on COCO.
    kind = CocoVOCMasks if r.task == "segmentation" else CocoDetection
    return subset(kind(image_dir, annotation_file, image_size=r.image_size, train=r.train_transforms),
                  r.num_samples, r.seed)


register_dataset(
    "coco",
    DatasetSpec(build=_build, splits=SPLITS, classes=NUM_CLASSES, tasks=("detection", "segmentation"),
                task_classes=(("segmentation", 21),)),
    help="COCO 2017 instances: detection (81 classes with background), or segmentation masks of VOC's 20 "
         "categories (21 classes); needs root, never downloads",
)
