"""Image transforms for real data: the defaults by image size, and user pipelines from the config.

A config names torchvision transforms (``data.transforms.train`` / ``.eval``), each step a class name
or ``{ClassName: {keyword: value}}``; the loader appends ``ToTensor`` (every image reaches a model as
floats in [0, 1], never normalised), so a pipeline lists only what changes the image.

Without a pipeline, the defaults follow the image size. ImageNet's RandomResizedCrop (8–100 % of the
area) is right for 224 px crops of large photos; on 32–96 px images it leaves a few pixels of the
object, so small images get the CIFAR-style padded random crop and a flip instead.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from splitbench.errors import ConfigError

CROP_RATIO = 0.875  # eval resize = size / 0.875, then center crop (the usual ImageNet protocol)
SMALL_IMAGE = 128  # below this, the small-image defaults


def default_transforms(image_size: int, train: bool) -> Callable:
    """≥ 128 px: RandomResizedCrop + flip, eval resize to size/0.875 + center crop (ImageNet's protocol).
    Smaller: resize + center crop to the size, then for training a random crop with size/8 reflected
    padding + flip."""
    from torchvision import transforms as T

    if image_size >= SMALL_IMAGE:
        if train:
            return T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor()])
        return T.Compose([T.Resize(int(image_size / CROP_RATIO)), T.CenterCrop(image_size), T.ToTensor()])
    steps: list = [T.Resize(image_size), T.CenterCrop(image_size)]
    if train:
        steps += [T.RandomCrop(image_size, padding=max(1, image_size // 8), padding_mode="reflect"),
                  T.RandomHorizontalFlip()]
    return T.Compose([*steps, T.ToTensor()])


def _step(spec: str | dict[str, Any], where: str) -> Any:
    from torchvision import transforms as T

    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, dict) and len(spec) == 1:
        name, kwargs = next(iter(spec.items()))
        kwargs = kwargs or {}
    else:
        raise ConfigError(f"{where}: a step is a transform name or {{Name: {{arguments}}}}, got {spec!r}")
    known = sorted(n for n, obj in vars(T).items() if inspect.isclass(obj) and not n.startswith("_"))
    if name not in known:
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "; use a class of torchvision.transforms"
        raise ConfigError(f"{where}: unknown transform {name!r}{hint}")
    if name in ("ToTensor", "Normalize", "PILToTensor"):
        raise ConfigError(f"{where}: {name} is not for configs: images always reach the model as [0, 1] tensors "
                          f"(the loader adds ToTensor, the model normalises)")
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{where}: the arguments of {name} are a mapping, got {kwargs!r}")
    try:
        return getattr(T, name)(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}): {error}") from None


def build_transforms(steps: Sequence[str | dict[str, Any]], where: str = "data.transforms") -> Callable:
    """A config's pipeline (torchvision class names with their arguments), then ``ToTensor``."""
    from torchvision import transforms as T

    return T.Compose([*(_step(s, f"{where}[{i}]") for i, s in enumerate(steps)), T.ToTensor()])
