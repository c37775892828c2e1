"""Data room: shapes determinism and labels, task forms, registry errors, real-data paths."""

from __future__ import annotations

import collections
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from splitbench.data import (
    DatasetNotFoundError,
    ShapesDataset,
    collate_detection,
    get_dataset,
    list_datasets,
    num_classes,
)
from splitbench.data.shapes import CLASSES, TASKS, generate
from splitbench.errors import ConfigError
from splitbench.registry import UnknownNameError


def _same(a, b) -> bool:
    """Structural equality of nested tensors / dicts / tuples / ints."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.fixture(scope="module")
def val_samples():
    return [generate(0, "val", i) for i in range(300)]


# --- shapes: determinism --------------------------------------------------------------------------


def test_same_seed_split_index_gives_identical_samples():
    a = get_dataset("shapes", "val", task="multitask", num_samples=20)
    b = get_dataset("shapes", "val", task="multitask", num_samples=20)
    for i in (0, 7, 19, 3):  # random access, any order
        assert _same(a[i], b[i])
    assert _same(a[-1], a[19])


def test_dataloader_worker_count_does_not_change_data():
    ds = get_dataset("shapes", "val", task="detection", num_samples=24, image_size=32)
    kw = {"batch_size": 5, "collate_fn": collate_detection}
    serial = list(DataLoader(ds, num_workers=0, **kw))
    parallel = list(DataLoader(ds, num_workers=2, **kw))
    assert _same(serial, parallel)


def test_seeds_and_splits_differ():
    base = generate(0, "train", 5).image
    assert not torch.equal(base, generate(1, "train", 5).image)
    assert not torch.equal(base, generate(0, "val", 5).image)
    train = torch.stack([generate(0, "train", i, 32).image for i in range(50)])
    test = torch.stack([generate(0, "test", i, 32).image for i in range(50)])
    assert not any(torch.equal(x, y) for x in train for y in test)


def test_default_sizes_and_override():
    assert len(get_dataset("shapes", "train")) == 5000
    assert len(get_dataset("shapes", "val")) == 1000
    assert len(get_dataset("shapes", "test", num_samples=7)) == 7
    with pytest.raises(IndexError):
        get_dataset("shapes", "test", num_samples=7)[7]


# --- shapes: annotations --------------------------------------------------------------------------


def test_image_range_dtype_and_8bit_levels(val_samples):
    for s in val_samples[:50]:
        assert s.image.dtype == torch.float32 and s.image.shape == (3, 96, 96)
        assert s.image.min() >= 0.0 and s.image.max() <= 1.0
        as_uint8 = (s.image * 255).round().to(torch.uint8)
        assert torch.equal(as_uint8.float() / 255, s.image)  # exactly what a codec's uint8 input decodes to


def test_label_is_class_of_largest_visible_object(val_samples):
    for s in val_samples:
        per_class = torch.bincount(s.mask.flatten(), minlength=11)[1:]
        assert int(per_class.argmax()) == s.label
        per_object = torch.bincount(s.instances.flatten())[1:]
        assert int(s.labels[per_object.argmax()]) == s.label
        rivals = [*per_object.sort(descending=True).values[1:].tolist(), 0]
        assert per_object.max() >= 1.3 * max(rivals)  # clearly the largest


def test_boxes_match_mask_extents(val_samples):
    for s in val_samples[:100]:
        assert s.boxes.dtype == torch.float32 and s.labels.dtype == torch.int64
        assert len(s.boxes) == len(s.labels) == int(s.instances.max())
        for j, (box, label) in enumerate(zip(s.boxes, s.labels, strict=True)):
            ys, xs = torch.nonzero(s.instances == j + 1, as_tuple=True)
            expected = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
            assert box.tolist() == expected
            assert (s.mask[s.instances == j + 1] == label + 1).all()
        # Per class, the boxes of that class enclose exactly the extent of its mask pixels.
        for c in s.mask.unique().tolist():
            if c == 0:
                continue
            ys, xs = torch.nonzero(s.mask == c, as_tuple=True)
            mine = s.boxes[s.labels == c - 1]
            assert mine[:, 0].min() == xs.min() and mine[:, 2].max() == xs.max() + 1
            assert mine[:, 1].min() == ys.min() and mine[:, 3].max() == ys.max() + 1


def test_mask_values_and_object_sizes(val_samples):
    fractions = []
    for s in val_samples:
        assert s.mask.dtype == torch.int64 and s.mask.shape == (96, 96)
        assert s.mask.min() >= 0 and s.mask.max() <= 10
        assert (s.mask == 0).any()  # some background always shows
        fractions.append((s.mask == s.label + 1).float().mean().item())
    assert min(fractions) > 0.05 and np.median(fractions) > 0.12 and max(fractions) < 0.6


def test_all_classes_appear_balanced(val_samples):
    labels = collections.Counter(s.label for s in val_samples)
    assert set(labels) == set(range(10)) and len(CLASSES) == 10
    assert min(labels.values()) >= 0.4 * len(val_samples) / 10
    assert max(labels.values()) <= 1.8 * len(val_samples) / 10
    objects = collections.Counter(x for s in val_samples for x in s.labels.tolist())
    assert set(objects) == set(range(10))
    assert collections.Counter(len(s.labels) for s in val_samples).keys() >= {1, 2, 3}


def test_image_size_is_configurable():
    s = generate(3, "test", 11, image_size=224)
    assert s.image.shape == (3, 224, 224) and s.mask.shape == (224, 224)
    small = get_dataset("shapes", "test", image_size=32, num_samples=5)
    assert small[0][0].shape == (3, 32, 32)


# --- shapes: task forms and augmentation -------------------------------------------------------


def test_every_task_form():
    forms = {task: get_dataset("shapes", "val", task=task, num_samples=3)[1] for task in TASKS}
    ref = generate(0, "val", 1)
    image, label = forms["classification"]
    assert torch.equal(image, ref.image) and isinstance(label, int) and label == ref.label
    image, target = forms["detection"]
    assert set(target) == {"boxes", "labels"} and _same(target["boxes"], ref.boxes)
    assert target["boxes"].shape == (len(target["labels"]), 4)
    image, mask = forms["segmentation"]
    assert mask.dtype == torch.int64 and torch.equal(mask, ref.mask)
    image, target = forms["multitask"]
    assert set(target) == {"label", "boxes", "labels", "mask"} and target["label"] == ref.label


def test_train_flip_is_consistent_and_reproducible():
    ds = get_dataset("shapes", "train", task="multitask", num_samples=40)
    assert ds.train_transforms and not get_dataset("shapes", "val").train_transforms
    torch.manual_seed(0)
    first = [ds[i] for i in range(40)]
    torch.manual_seed(0)
    assert _same(first, [ds[i] for i in range(40)])
    flipped = 0
    for i, (image, target) in enumerate(first):
        ref = ds.sample(i)
        if torch.equal(image, ref.image):
            assert torch.equal(target["mask"], ref.mask)
            continue
        flipped += 1
        assert torch.equal(image, ref.image.flip(-1)) and torch.equal(target["mask"], ref.mask.flip(-1))
        ys, xs = torch.nonzero(target["mask"] > 0, as_tuple=True)
        assert target["boxes"][:, 0].min() == xs.min() and target["boxes"][:, 2].max() == xs.max() + 1
    assert 5 < flipped < 35
    plain = get_dataset("shapes", "train", num_samples=3, train_transforms=False)
    assert torch.equal(plain[2][0], generate(0, "train", 2).image)


def test_collate_detection():
    ds = get_dataset("shapes", "val", task="detection", num_samples=4, image_size=32)
    images, targets = collate_detection([ds[i] for i in range(4)])
    assert images.shape == (4, 3, 32, 32) and len(targets) == 4 and "boxes" in targets[0]
    mixed = [ds[0], (torch.zeros(3, 40, 32), ds[1][1])]
    images, targets = collate_detection(mixed)
    assert isinstance(images, list) and images[1].shape == (3, 40, 32)


# --- registry and errors --------------------------------------------------------------------------


def test_registry_lists_and_counts():
    names = list_datasets()
    assert {"shapes", "imagefolder", "imagenet", "cifar10", "cifar100", "stl10"} <= set(names)
    assert num_classes("shapes") == 10 and num_classes("cifar100") == 100
    assert ShapesDataset.classes == CLASSES


def test_unknown_name_split_task_name_the_allowed_ones():
    with pytest.raises(UnknownNameError, match="known: .*shapes"):
        get_dataset("shapez", "train")
    with pytest.raises(ValueError, match="train, val, test"):
        get_dataset("shapes", "training")
    with pytest.raises(ValueError, match="classification, detection, segmentation, multitask"):
        get_dataset("shapes", "train", task="depth")
    with pytest.raises(ValueError, match="allowed: train, test"):
        get_dataset("cifar10", "val", root="/nonexistent")
    with pytest.raises(ValueError, match="allowed: classification"):
        get_dataset("imagefolder", "train", task="detection", root="/nonexistent")


# --- real-data paths ------------------------------------------------------------------------------


@pytest.fixture
def tiny_folder(tmp_path):
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 3), ("val", 2)):
        for cls in ("cat", "dog"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for k in range(per_class):
                pixels = rng.integers(0, 256, (50 + 7 * k, 70, 3), dtype=np.uint8)
                ext = "png" if k % 2 else "JPEG"
                Image.fromarray(pixels).save(folder / f"img{k}.{ext}")
    return tmp_path


def test_imagefolder_reads_a_tiny_folder(tiny_folder):
    train = get_dataset("imagefolder", "train", root=str(tiny_folder), image_size=32)
    assert len(train) == 6 and train.classes == ["cat", "dog"]
    assert sorted(label for _, label in train) == [0, 0, 0, 1, 1, 1]
    image, _ = train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1
    val = get_dataset("imagenet", "val", root=str(tiny_folder), image_size=24)
    assert len(val) == 4 and val[3][0].shape == (3, 24, 24) and val[3][1] == 1
    assert num_classes("imagefolder", root=str(tiny_folder)) == 2
    assert len(get_dataset("imagefolder", "train", root=str(tiny_folder), num_samples=4)) == 4


def test_imagefolder_missing_root_or_split_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="needs a root.*<root>/<split>/<class>"):
        get_dataset("imagenet", "val")
    expected = re.escape(str(tmp_path / "test")) + ".*<root>/<split>/<class>"
    with pytest.raises(FileNotFoundError, match=expected):
        get_dataset("imagefolder", "test", root=str(tmp_path))
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetNotFoundError, match="class folder"):
        get_dataset("imagefolder", "train", root=str(tmp_path))


@pytest.mark.parametrize("name", ["cifar10", "stl10", "food101"])
def test_torchvision_set_with_empty_root_is_clear_and_does_not_download(name, tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    for module in (tvd.cifar, tvd.stl10, tvd.food101):  # the names those modules call
        monkeypatch.setattr(module, "download_and_extract_archive", no_download)
    expected = "looked in .*" + re.escape(str(tmp_path)) + ".*download=True.*download: true"
    with pytest.raises(DatasetNotFoundError, match=expected):
        get_dataset(name, "train", root=str(tmp_path))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DatasetNotFoundError, match="needs a root"):
        get_dataset(name, "test")


def test_small_images_keep_the_whole_object_by_default(tiny_folder):
    """At 32 px the default training crop is a padded random crop of the whole resized image (ImageNet's
    RandomResizedCrop would keep as little as 8 % of it): eval is exactly the resized center crop, and a
    training sample differs from it by at most the padding's shift."""
    from torchvision import transforms as T

    from splitbench.data.transforms import default_transforms

    image = Image.open(next((tiny_folder / "train" / "cat").glob("*.JPEG"))).convert("RGB")
    evaluated = default_transforms(32, train=False)(image)
    assert torch.equal(evaluated, T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()])(image))
    torch.manual_seed(0)
    trained = [default_transforms(32, train=True)(image) for _ in range(8)]
    assert all(t.shape == (3, 32, 32) for t in trained)
    shifts = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)]

    def matches(t: torch.Tensor) -> bool:
        for candidate in (t, t.flip(-1)):
            for dy, dx in shifts:
                a = candidate[:, max(dy, 0):32 + min(dy, 0), max(dx, 0):32 + min(dx, 0)]
                b = evaluated[:, max(-dy, 0):32 + min(-dy, 0), max(-dx, 0):32 + min(-dx, 0)]
                if torch.equal(a, b):
                    return True
        return False

    assert all(matches(t) for t in trained)


def test_config_transforms_reach_the_folder_loader(tiny_folder):
    steps = [{"Resize": {"size": [40, 40]}}, {"CenterCrop": {"size": 20}}, "RandomHorizontalFlip"]
    train = get_dataset("imagefolder", "train", root=str(tiny_folder), image_size=32, transforms=steps)
    assert train[0][0].shape == (3, 20, 20)
    with pytest.raises(ConfigError, match="does not take data.transforms"):
        get_dataset("shapes", "train", transforms=steps)


def test_transform_typos_and_bad_arguments_are_named():
    from splitbench.data.transforms import build_transforms

    typo = r"data.transforms\[1\]: unknown transform 'RandomCropp'; did you mean 'RandomCrop'"
    with pytest.raises(ConfigError, match=typo):
        build_transforms(["RandomHorizontalFlip", "RandomCropp"])
    with pytest.raises(ConfigError, match=r"RandomCrop\(sise=3\)"):
        build_transforms([{"RandomCrop": {"sise": 3}}])
    with pytest.raises(ConfigError, match="Normalize is not for configs"):
        build_transforms([{"Normalize": {"mean": [0.5], "std": [0.5]}}])


def test_a_config_with_transforms_for_generated_data_fails_at_load():
    from splitbench.experiment import load_configs

    with pytest.raises(ConfigError, match="'shapes' does not take data.transforms"):
        load_configs("shapes/teacher.yaml", ["data.transforms={train: [RandomHorizontalFlip]}"])
    with pytest.raises(ConfigError, match="did you mean 'RandomCrop'"):
        load_configs("shapes/teacher.yaml", ["data.dataset=imagefolder", "data.transforms={eval: [RandomCropp]}"])
