"""COCO and VOC loaders on tiny fake trees written to tmp_path (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from splitbench.data import DatasetNotFoundError, collate_detection, get_dataset, num_classes

# --- COCO ------------------------------------------------------------------------------------------

# (file, width, height); categories deliberately unsorted and non-contiguous: 1, 3, 90 -> labels 1, 2, 3.
COCO_IMAGES = [(1, "a.jpg", 40, 30), (2, "b.jpg", 30, 50), (3, "c.jpg", 16, 16)]
COCO_CATEGORIES = [{"id": 90, "name": "ninety"}, {"id": 1, "name": "one"}, {"id": 3, "name": "three"}]
COCO_ANNOTATIONS = [
    # image 1 (40x30)
    {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 6, 10, 8], "area": 70.0, "iscrowd": 0},
    {"id": 2, "image_id": 1, "category_id": 90, "bbox": [20, 2, 12, 20], "area": 200.0, "iscrowd": 0},
    {"id": 3, "image_id": 1, "category_id": 3, "bbox": [0, 0, 20, 15], "area": 250.0, "iscrowd": 1},
    {"id": 4, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 7], "area": 0.0, "iscrowd": 0},  # degenerate
    # image 2 (30x50)
    {"id": 5, "image_id": 2, "category_id": 3, "bbox": [3, 5, 6, 10], "area": 50.0, "iscrowd": 0},
    # image 3: no annotations
]


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    (tmp_path / "annotations").mkdir()
    for split in ("train", "val"):  # the same files in both splits
        (tmp_path / f"{split}2017").mkdir()
        for image_id, name, w, h in COCO_IMAGES:
            pixels = np.random.default_rng(image_id).integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / f"{split}2017" / name, quality=95)
        doc = {
            "images": [{"id": i, "file_name": n, "width": w, "height": h} for i, n, w, h in COCO_IMAGES],
            "annotations": COCO_ANNOTATIONS,
            "categories": COCO_CATEGORIES,
        }
        (tmp_path / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(doc))
    return tmp_path


def _coco(root: Path, split: str = "val", **kwargs: object):
    return get_dataset("coco", split, task="detection", root=str(root), **kwargs)


def test_coco_eval_targets_resized_mapped_with_crowd(coco_root: Path) -> None:
    dataset = _coco(coco_root, image_size=60)  # image 1 is 40x30: shorter side 30 -> 60, factor 2
    assert len(dataset) == 3 and num_classes("coco") == 81
    assert dataset.classes == ["__background__", "one", "three", "ninety"]
    image, target = dataset[0]
    assert image.shape == (3, 60, 80) and image.dtype == torch.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    # xywh -> xyxy, times 2; the degenerate box (w = 0) is gone; the crowd box stays, flagged.
    expected = [[8, 12, 28, 28], [40, 4, 64, 44], [0, 0, 40, 30]]
    assert torch.equal(target["boxes"], torch.tensor(expected, dtype=torch.float32))
    assert target["labels"].tolist() == [1, 3, 2] and target["labels"].dtype == torch.int64
    assert target["iscrowd"].tolist() == [0, 0, 1]
    assert target["area"].tolist() == [280.0, 800.0, 1000.0]  # areas scale by 2 x 2


def test_coco_portrait_image_and_empty_image(coco_root: Path) -> None:
    dataset = _coco(coco_root, image_size=15)
    image, target = dataset[1]  # 30x50: shorter side 30 -> 15, factor 1/2
    assert image.shape == (3, 25, 15)
    assert target["boxes"].tolist() == [[1.5, 2.5, 4.5, 7.5]] and target["labels"].tolist() == [2]
    image, target = dataset[2]  # 16x16, no annotations
    assert image.shape == (3, 15, 15)
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    images, targets = collate_detection([dataset[0], dataset[1]])  # different sizes: kept as a list
    assert isinstance(images, list) and len(targets) == 2


def test_coco_native_size_without_image_size(coco_root: Path) -> None:
    image, target = _coco(coco_root)[0]
    assert image.shape == (3, 30, 40)
    assert target["boxes"][0].tolist() == [4, 6, 14, 14]


def test_coco_train_drops_crowd_and_flips(coco_root: Path) -> None:
    plain_image, plain = _coco(coco_root, image_size=60)[0]
    dataset = _coco(coco_root, "train", image_size=60)
    mirrored = torch.tensor([[52, 12, 72, 28], [16, 4, 40, 44]], dtype=torch.float32)  # x -> 80 - x
    seen = set()
    torch.manual_seed(0)
    for _ in range(16):
        image, target = dataset[0]
        assert target["iscrowd"].tolist() == [0, 0] and target["labels"].tolist() == [1, 3]
        if torch.equal(target["boxes"], plain["boxes"][:2]):
            assert torch.equal(image, plain_image)
            seen.add("plain")
        else:
            assert torch.equal(target["boxes"], mirrored)
            assert torch.equal(image, plain_image.flip(-1))
            seen.add("flipped")
    assert seen == {"plain", "flipped"}


def test_coco_num_samples_subset(coco_root: Path) -> None:
    assert len(_coco(coco_root, num_samples=2)) == 2


def test_coco_missing_files_name_the_path(tmp_path: Path, coco_root: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError, match="cocodataset.org") as info:
        _coco(missing)
    assert str(missing / "val2017") in str(info.value)
    (coco_root / "annotations" / "instances_val2017.json").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        _coco(coco_root)
    assert str(coco_root / "annotations" / "instances_val2017.json") in str(info.value)
    with pytest.raises(DatasetNotFoundError, match="data.root"):
        get_dataset("coco", "val", task="detection")


# --- VOC -------------------------------------------------------------------------------------------

VOC_W, VOC_H = 30, 20
VOC_NAMES = {"train": ["2007_000001", "2007_000002"], "val": ["2007_000003"]}
PERSON = 15


def _voc_mask() -> np.ndarray:
    mask = np.zeros((VOC_H, VOC_W), dtype=np.uint8)
    mask[4:16, 7:23] = 255  # VOC-style 1-pixel "void" boundary around the object
    mask[5:15, 8:22] = PERSON
    return mask


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    mask = _voc_mask()
    palette = [0] * 768
    palette[3 * PERSON : 3 * PERSON + 3] = [192, 128, 128]
    palette[3 * 255 : 3 * 255 + 3] = [224, 224, 192]
    image = np.zeros((VOC_H, VOC_W, 3), dtype=np.uint8)
    image[...] = (0, 0, 230)  # background blue, object (and its boundary) red
    image[mask != 0] = (230, 0, 0)
    for split, names in VOC_NAMES.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for name in names:
            Image.fromarray(image).save(voc / "JPEGImages" / f"{name}.jpg", quality=95)
            png = Image.frombytes("P", (VOC_W, VOC_H), mask.tobytes())  # palette indices = class ids
            png.putpalette(palette)
            png.save(voc / "SegmentationClass" / f"{name}.png")
    return tmp_path


def _voc(root: Path, split: str = "val", **kwargs: object):
    return get_dataset("voc", split, task="segmentation", root=str(root), **kwargs)


def test_voc_eval_native_and_resized(voc_root: Path) -> None:
    assert num_classes("voc") == 21
    dataset = _voc(voc_root)
    assert len(dataset) == 1
    image, mask = dataset[0]
    assert image.shape == (3, VOC_H, VOC_W) and image.dtype == torch.float32
    assert mask.dtype == torch.int64 and torch.equal(mask, torch.from_numpy(_voc_mask().astype(np.int64)))
    # Shorter side 20 -> 40 is an exact 2x nearest upscaling of the mask: class ids and 255 kept.
    image, mask = _voc(voc_root, image_size=40)[0]
    assert image.shape == (3, 40, 60)
    assert torch.equal(mask, torch.from_numpy(_voc_mask().repeat(2, 0).repeat(2, 1).astype(np.int64)))
    image, mask = _voc(voc_root, image_size=10)[0]
    assert image.shape == (3, 10, 15) and set(mask.unique().tolist()) <= {0, PERSON, 255}


def test_voc_train_crop_pad_flip_keep_image_and_mask_aligned(voc_root: Path) -> None:
    dataset = _voc(voc_root, "train", image_size=16)
    assert len(dataset) == 2
    torch.manual_seed(0)
    padded = 0
    for _ in range(30):
        image, mask = dataset[0]
        assert image.shape == (3, 16, 16) and mask.shape == (16, 16)
        assert set(mask.unique().tolist()) <= {0, PERSON, 255}
        # Where a pixel and its 8 neighbours share a class, the image shows that class's colour.
        same = mask[1:-1, 1:-1]
        interior = torch.ones_like(same, dtype=torch.bool)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                interior &= mask[1 + dy : 15 + dy, 1 + dx : 15 + dx] == same
        red, blue = image[0, 1:-1, 1:-1], image[2, 1:-1, 1:-1]
        assert (red[interior & (same == PERSON)] > blue[interior & (same == PERSON)]).all()
        assert (blue[interior & (same == 0)] > red[interior & (same == 0)]).all()
        # Padding (image smaller than the crop) is black and ignored; VOC's own 255 never fills a row.
        if (mask[-1] == 255).all() or (mask[:, -1] == 255).all():
            padded += 1
            edge = image[:, -1, :] if (mask[-1] == 255).all() else image[:, :, -1]
            assert (edge == 0).all()
    assert padded > 0


def test_voc_missing_data_names_the_path(tmp_path: Path, voc_root: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        _voc(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "VOCdevkit" / "VOC2012" / "JPEGImages") in str(info.value)
    assert "download=True" in str(info.value)
    (voc_root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="val.txt"):
        _voc(voc_root)
    with pytest.raises(DatasetNotFoundError, match="data.root"):
        get_dataset("voc", "val", task="segmentation")


def test_coco_masks_of_voc_categories_for_segmentation(tmp_path: Path) -> None:
    """COCO's instance masks painted as VOC class ids (person -> 15, car -> 7), other categories background,
    overlaps and crowds 255; an image with no VOC category is left out."""

    def rect(x1: int, y1: int, x2: int, y2: int) -> list[list[float]]:
        return [[x1, y1, x2, y1, x2, y2, x1, y2]]

    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": rect(2, 2, 8, 8), "bbox": [2, 2, 6, 6],
         "area": 36, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 3, "segmentation": rect(6, 2, 12, 8), "bbox": [6, 2, 6, 6],
         "area": 36, "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 90, "segmentation": rect(14, 2, 18, 8), "bbox": [14, 2, 4, 6],
         "area": 24, "iscrowd": 0},
        {"id": 4, "image_id": 1, "category_id": 3, "segmentation": rect(2, 0, 12, 1), "bbox": [2, 0, 10, 1],
         "area": 10, "iscrowd": 1},
        {"id": 5, "image_id": 2, "category_id": 90, "segmentation": rect(1, 1, 5, 5), "bbox": [1, 1, 4, 4],
         "area": 16, "iscrowd": 0},
    ]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    images = [(1, "a.jpg", 20, 10), (2, "b.jpg", 8, 8)]
    for _, name, w, h in images:
        Image.fromarray(np.zeros((h, w, 3), dtype=np.uint8)).save(tmp_path / "val2017" / name)
    doc = {"images": [{"id": i, "file_name": n, "width": w, "height": h} for i, n, w, h in images],
           "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in (1, 3, 90)]}
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(doc))
    dataset = get_dataset("coco", "val", task="segmentation", root=str(tmp_path))
    assert len(dataset) == 1 and num_classes("coco", task="segmentation") == 21
    image, mask = dataset[0]
    assert image.shape == (3, 10, 20) and mask.shape == (10, 20) and mask.dtype == torch.int64
    assert int(mask[5, 4]) == 15 and int(mask[5, 10]) == 7  # person, car in VOC's ids
    assert int(mask[5, 7]) == 255 and int(mask[0, 5]) == 255  # claimed twice; crowd
    assert int(mask[5, 16]) == 0 and int(mask[9, 1]) == 0  # a non-VOC category; nothing
