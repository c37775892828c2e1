"""The images a device client sends, as numpy (torch-free): a folder of image files, labelled by sub-folder.

A folder laid out ``FOLDER/<class>/<image>`` (torchvision's ImageFolder) gives labels: the index of the class
folder's name in sorted order. A flat folder gives images without labels (the record then has no accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splitbench.errors import SplitbenchError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".ppm")


@dataclass(frozen=True)
class Sample:
    """One image to send: float32 RGB (3, h, w) in [0, 1], and its class label where known."""

    index: int
    image: np.ndarray
    label: int | None = None
    name: str = ""


def read_image(path: Path) -> np.ndarray:
    """An image file as float32 RGB (3, h, w) in [0, 1]."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.float32)
    except OSError as error:
        raise SplitbenchError(f"cannot read image {path}: {error}") from None
    return np.ascontiguousarray(array.transpose(2, 0, 1) / 255)


def folder_samples(folder: Path, limit: int | None = None) -> list[Sample]:
    """The images under ``folder`` (sorted), labelled by class sub-folder where there are sub-folders."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SplitbenchError(f"no image folder at {folder}")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if classes:
        files = [(f, i) for i, c in enumerate(classes) for f in sorted((folder / c).iterdir())
                 if f.suffix.lower() in IMAGE_SUFFIXES]
    else:
        files = [(f, None) for f in sorted(folder.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise SplitbenchError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    files = files[:limit] if limit else files
    return [Sample(i, read_image(f), label, str(f.relative_to(folder))) for i, (f, label) in enumerate(files)]
