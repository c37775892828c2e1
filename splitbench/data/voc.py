"""``voc``: PASCAL VOC 2012 semantic segmentation (21 classes, 255 = ignore) from a user's root.

The layout is torchvision's ``VOCSegmentation`` one (``<root>/VOCdevkit/VOC2012/...``); torchvision
lists the files and fetches the archive only when ``download=True`` (config ``data.download``).
Samples are ``(image (3,H,W) float32 [0,1], mask (H,W) int64)``; the mask keeps VOC's 255 object
boundaries, which the metric and the loss ignore.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
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

SPLITS = ("train", "val")
CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
IGNORE_INDEX = 255
# COCO category ids of VOC's 20 classes, in VOC's order (the mapping torchvision's segmentation reference
# uses to train on COCO's masks): aeroplane = COCO 5 (airplane), bicycle = 2, ... tvmonitor = 72 (tv).
COCO_CATEGORIES_OF_VOC = (5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72)
DEFAULT_CROP = 480  # train crop when no image_size is given (torchvision's segmentation reference)
SCALE_RANGE = (0.5, 2.0)  # train: shorter side drawn from this range times the crop size
VOC_DIR = Path("VOCdevkit") / "VOC2012"
GET_IT = (
    "download=True (config `data.download: true`) fetches VOC 2012 (2 GB) there, or get VOCtrainval_11-May-2012.tar "
    "from http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ and extract it into the root"
)


def _resize(image: Image.Image, mask: Image.Image, size: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
    """Image bilinear, mask nearest (class ids must not be blended)."""
    if image.size == size:
        return image, mask
    return image.resize(size, Image.Resampling.BILINEAR), mask.resize(size, Image.Resampling.NEAREST)


class VOCSegmentation(Dataset):
    """VOC segmentation samples from parallel lists of image and palette-PNG mask files.

    Eval: with ``image_size``, the shorter side is resized to it (mask nearest); ``None`` keeps the
    file's size. Train: the shorter side is resized to a random ``[0.5, 2] x crop``, padded where
    smaller than the crop (image 0, mask 255 so padding is ignored), randomly cropped to
    ``crop x crop`` and flipped with probability 1/2; ``crop`` is ``image_size`` or 480.
    """

    def __init__(
        self, images: list[str], masks: list[str], *, image_size: int | None = None, train: bool = False
    ) -> None:
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        self.images, self.masks = list(images), list(masks)
        self.image_size = image_size
        self.train = train
        self.classes = list(CLASSES)

    def __len__(self) -> int:
        return len(self.images)

    def _load(self, index: int) -> tuple[Image.Image, Image.Image]:
        with Image.open(self.images[index]) as image_file, Image.open(self.masks[index]) as mask_file:
            if mask_file.mode not in ("P", "L"):
                raise ValueError(
                    f"mask {self.masks[index]!r} is mode {mask_file.mode!r}; expected a palette (P) or "
                    f"grayscale (L) PNG whose values are class ids"
                )
            return image_file.convert("RGB"), mask_file.copy()

    def _train_transform(self, image: Image.Image, mask: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        crop = self.image_size or DEFAULT_CROP
        shorter = round(crop * float(torch.empty(()).uniform_(*SCALE_RANGE)))
        image, mask = _resize(image, mask, shorter_side_size(*image.size, shorter))
        tensor, target = pil_to_float(image), torch.from_numpy(np.array(mask, dtype=np.int64))
        height, width = target.shape
        pad_h, pad_w = max(crop - height, 0), max(crop - width, 0)
        if pad_h or pad_w:
            tensor = F.pad(tensor, (0, pad_w, 0, pad_h), value=0.0)
            target = F.pad(target, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        top = int(torch.randint(0, target.shape[0] - crop + 1, ()))
        left = int(torch.randint(0, target.shape[1] - crop + 1, ()))
        tensor = tensor[:, top : top + crop, left : left + crop]
        target = target[top : top + crop, left : left + crop]
        if torch.rand(()) < 0.5:
            tensor, target = tensor.flip(-1), target.flip(-1)
        return tensor.contiguous(), target.contiguous()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self._load(index)
        if image.size != mask.size:
            raise ValueError(f"image {self.images[index]!r} is {image.size} but its mask is {mask.size}")
        if self.train:
            return self._train_transform(image, mask)
        if self.image_size is not None:
            image, mask = _resize(image, mask, shorter_side_size(*image.size, self.image_size))
        return pil_to_float(image), torch.from_numpy(np.array(mask, dtype=np.int64))

    def __repr__(self) -> str:
        return f"VOCSegmentation(n={len(self)}, image_size={self.image_size}, train={self.train})"


class CocoVOCMasks(VOCSegmentation):
    """COCO images as VOC segmentation samples: the instance masks of VOC's 20 categories painted with VOC
    class ids (other categories are background); crowd regions and pixels two instances claim are 255.
    Images with none of those categories are left out. Same transforms as VOC."""

    def __init__(self, image_dir: str | Path, annotation_file: str | Path, *, image_size: int | None = None,
                 train: bool = False) -> None:
        import contextlib
        import io

        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco = COCO(str(annotation_file))
        self.label_of_category = {cat: label for label, cat in enumerate(COCO_CATEGORIES_OF_VOC, start=1)}
        self.coco_ids = [i for i in sorted(self.coco.imgs) if any(
            a["category_id"] in self.label_of_category for a in self.coco.imgToAnns.get(i, []))]
        files = [str(Path(image_dir) / self.coco.imgs[i]["file_name"]) for i in self.coco_ids]
        super().__init__(files, files, image_size=image_size, train=train)

    def _load(self, index: int) -> tuple[Image.Image, Image.Image]:
        info = self.coco.imgs[self.coco_ids[index]]
        with Image.open(self.images[index]) as image_file:
            image = image_file.convert("RGB")
        mask = np.zeros((info["height"], info["width"]), dtype=np.uint8)
        claims = np.zeros_like(mask)
        ignore = np.zeros(mask.shape, dtype=bool)
        for ann in self.coco.imgToAnns.get(info["id"], []):
            label = self.label_of_category.get(ann["category_id"])
            if label is None:
                continue
            region = self.coco.annToMask(ann).astype(bool)
            if ann.get("iscrowd", 0):
                ignore |= region
                continue
            mask[region] = label
            claims += region
        mask[(claims > 1) | ignore] = IGNORE_INDEX
        return image, Image.fromarray(mask, mode="L")


def _check_layout(root: Path, split: str) -> None:
    voc = root / VOC_DIR
    for path in (voc / "JPEGImages", voc / "SegmentationClass", voc / "ImageSets" / "Segmentation" / f"{split}.txt"):
        if not path.exists():
            raise DatasetNotFoundError(f"dataset 'voc' {split!r}: {str(path)!r} does not exist; {GET_IT}")


def _build(r: DatasetRequest) -> Dataset:
    from torchvision.datasets import VOCSegmentation as TorchvisionVOC

    if r.root is None:
        raise DatasetNotFoundError(
            f"dataset 'voc' needs a root (config `data.root`): the folder that holds {str(VOC_DIR)!r}; {GET_IT}"
        )
    folder = Path(r.root).expanduser()
    if not r.download:
        _check_layout(folder, r.split)
    try:
        files = TorchvisionVOC(str(folder), year="2012", image_set=r.split, download=r.download)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise DatasetNotFoundError(f"dataset 'voc': {str(folder / VOC_DIR)!r} not found ({err}); {GET_IT}") from err
    dataset = VOCSegmentation(files.images, files.targets, image_size=r.image_size, train=r.train_transforms)
    return subset(dataset, r.num_samples, r.seed)


register_dataset(
    "voc",
    DatasetSpec(build=_build, splits=SPLITS, classes=len(CLASSES), tasks=("segmentation",)),
    help="PASCAL VOC 2012 segmentation (21 classes, 255 = ignore; needs root, download=True fetches)",
)
