"""Real image data: ImageNet-style folders and torchvision classification sets, by name.

Images come out as float tensors in [0, 1], never normalised: models normalise internally, so a
codec and a model see the same input. Nothing downloads unless ``download=True`` is asked for,
and a missing dataset is one :class:`~splitbench.data.base.DatasetNotFoundError` that says where
we looked and how to get the data (torchvision's own "Dataset not found" errors are converted).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from torch.utils.data import Dataset

from splitbench.data.base import DatasetNotFoundError, DatasetRequest, DatasetSpec, register_dataset, subset
from splitbench.data.transforms import build_transforms, default_transforms

FOLDER_LAYOUT = "<root>/<split>/<class>/<image>, e.g. <root>/train/n01440764/n01440764_10026.JPEG"
DEFAULT_IMAGE_SIZE = 224


def request_transforms(r: DatasetRequest) -> Callable:
    """The config's pipeline for this request, or the defaults for its image size."""
    if r.transforms is not None:
        return build_transforms(r.transforms, f"data.transforms.{'train' if r.train_transforms else 'eval'}")
    return default_transforms(r.image_size or DEFAULT_IMAGE_SIZE, r.train_transforms)


# --- ImageNet-style folders ------------------------------------------------------------------------


def _need_root(name: str, root: str | None) -> Path:
    if root is None:
        raise DatasetNotFoundError(
            f"dataset {name!r} needs a root folder (config `data.root`); layout: {FOLDER_LAYOUT}"
        )
    return Path(root).expanduser()


def _split_dir(name: str, root: str | None, split: str) -> Path:
    path = _need_root(name, root) / split
    if not path.is_dir():
        raise DatasetNotFoundError(
            f"dataset {name!r}: split folder {str(path)!r} does not exist; layout: {FOLDER_LAYOUT}"
        )
    return path


def _build_folder(r: DatasetRequest, *, name: str) -> Dataset:
    """An ImageNet-style folder (a folder cannot be downloaded)."""
    from torchvision.datasets import ImageFolder

    path = _split_dir(name, r.root, r.split)
    try:
        dataset = ImageFolder(str(path), transform=request_transforms(r))
    except FileNotFoundError as err:  # no class folders, or no images in them
        raise DatasetNotFoundError(f"dataset {name!r}: {err} Expected layout: {FOLDER_LAYOUT}") from err
    return subset(dataset, r.num_samples, r.seed)


def _folder_classes(name: str, splits: tuple[str, ...], root: str | None) -> int:
    """Class count = class folders of the first split present (they must agree across splits)."""
    base = _need_root(name, root)
    for split in splits:
        if (base / split).is_dir():
            return sum(1 for entry in (base / split).iterdir() if entry.is_dir())
    raise DatasetNotFoundError(
        f"dataset {name!r}: no split folder ({', '.join(splits)}) under {str(base)!r}; "
        f"layout: {FOLDER_LAYOUT}"
    )


def _register_folder(name: str, splits: tuple[str, ...], help: str) -> None:
    spec = DatasetSpec(
        build=partial(_build_folder, name=name),
        splits=splits,
        classes=partial(_folder_classes, name, splits),
        custom_transforms=True,
    )
    register_dataset(name, spec, help)


_register_folder("imagefolder", ("train", "val", "test"), "ImageNet-style folder root/<split>/<class>/*")
_register_folder("imagenet", ("train", "val"), "ILSVRC-2012 in folder layout root/{train,val}/<wnid>/*.JPEG")


# --- torchvision classification sets ----------------------------------------------------------------


@dataclass(frozen=True)
class _TorchvisionSet:
    cls_name: str  # class in torchvision.datasets
    splits: tuple[str, ...]
    num_classes: int
    folder: str  # what torchvision looks for under root
    split_kwarg: bool  # True: ``train=bool``; False: ``split=str``
    native_size: int | None  # fixed image size; None: varies, use the ImageNet-style pipeline


_TORCHVISION_SETS = {
    "cifar10": _TorchvisionSet("CIFAR10", ("train", "test"), 10, "cifar-10-batches-py", True, 32),
    "cifar100": _TorchvisionSet("CIFAR100", ("train", "test"), 100, "cifar-100-python", True, 32),
    "stl10": _TorchvisionSet("STL10", ("train", "test"), 10, "stl10_binary", False, 96),
    "flowers102": _TorchvisionSet("Flowers102", ("train", "val", "test"), 102, "flowers-102", False, None),
    "food101": _TorchvisionSet("Food101", ("train", "test"), 101, "food-101", False, None),
}


def _not_found(name: str, root: str | None, folder: str) -> DatasetNotFoundError:
    if root is None:
        return DatasetNotFoundError(
            f"dataset {name!r} needs a root: the folder that holds {folder!r} (config `data.root`); "
            f"download=True (config `data.download: true`) fetches it there"
        )
    return DatasetNotFoundError(
        f"dataset {name!r} not found: looked in {str(Path(root).expanduser() / folder)!r}. "
        f"download=True (config `data.download: true`) fetches it there, or put the files in that folder"
    )


def _torchvision_transform(info: _TorchvisionSet, r: DatasetRequest) -> Callable:
    """A fixed-size set (CIFAR, STL) at its own size unless asked otherwise, through the size defaults."""
    if info.native_size is not None and r.transforms is None:
        return default_transforms(r.image_size or info.native_size, r.train_transforms)
    return request_transforms(r)


def _build_torchvision(r: DatasetRequest, *, name: str) -> Dataset:
    import torchvision.datasets

    info = _TORCHVISION_SETS[name]
    if r.root is None:
        raise _not_found(name, r.root, info.folder)
    split_arg = {"train": r.split == "train"} if info.split_kwarg else {"split": r.split}
    try:
        dataset = getattr(torchvision.datasets, info.cls_name)(
            str(Path(r.root).expanduser()),
            **split_arg,
            transform=_torchvision_transform(info, r),
            download=r.download,
        )
    except RuntimeError as err:
        if "not found" in str(err).lower() or "download=True" in str(err):
            raise _not_found(name, r.root, info.folder) from err
        raise
    return subset(dataset, r.num_samples, r.seed)


for _name, _info in _TORCHVISION_SETS.items():
    register_dataset(
        _name,
        DatasetSpec(partial(_build_torchvision, name=_name), splits=_info.splits, classes=_info.num_classes,
                    custom_transforms=True),
        f"torchvision {_info.cls_name} ({_info.num_classes} classes; needs root, download=True fetches)",
    )
