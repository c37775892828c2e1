"""Backbones by name, each returned as a :class:`StagedNetwork` ready to split at a named stage.

torchvision and timm build the networks; a family only declares, as data, which submodules make
up each stage (:data:`LAYOUTS`). Stage names:

- ResNets (torchvision ``resnet*``, timm ``resnest*``, the narrow ``resnet*n``): stem, layer1-4, head.
- RegNetY (timm), MobileNetV3 and EfficientNet (torchvision): stem, stage1-4, head, where stage *k*
  ends at stride 2^(k+1) (MobileNet/EfficientNet ``features`` indices grouped by resolution).

So every family has a stride-4 split point (``layer1``/``stage1``), where the Entropic Student
bottleneck goes. Any other timm or torchvision CNN works by prefix, ``timm:<arch>`` or
``torchvision:<arch>``: its layout is derived (timm's ``feature_info``; torchvision's ResNet
children or ``features`` grouped by resolution) and checked against the model's own forward.
Pretrained weights are loaded into the original model *before* it is regrouped, so a user's
torchvision/timm checkpoint loads with strict key checking.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from splitbench.errors import CheckpointError, SplitbenchError
from splitbench.models.staged import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalize,
    StagedNetwork,
    StageLayout,
    group_children,
    uncovered_parameters,
)
from splitbench.registry import Registry, UnknownNameError

Source = Literal["torchvision", "timm"]
BackboneFactory = Callable[..., StagedNetwork]
BACKBONES: Registry[BackboneFactory] = Registry("backbone")

# Stage layouts (stage name -> submodules, see splitbench.models.staged.StageMember).
TORCHVISION_RESNET: StageLayout = {
    "stem": ["conv1", "bn1", "relu", "maxpool"],
    "layer1": ["layer1"], "layer2": ["layer2"], "layer3": ["layer3"], "layer4": ["layer4"],
    "head": ["avgpool", nn.Flatten, "fc"],
}
TIMM_RESNET: StageLayout = {  # timm ResNet, ResNeSt (deep stem: conv1 is a Sequential)
    "stem": ["conv1", "bn1", "act1", "maxpool"],
    "layer1": ["layer1"], "layer2": ["layer2"], "layer3": ["layer3"], "layer4": ["layer4"],
    "head": ["global_pool", "fc"],
}
TIMM_REGNET: StageLayout = {
    "stem": ["stem"], "stage1": ["s1"], "stage2": ["s2"], "stage3": ["s3"], "stage4": ["s4", "final_conv"],
    "head": ["head"],
}
_TORCHVISION_HEAD = ["avgpool", nn.Flatten, "classifier"]
MOBILENET_V3_LARGE: StageLayout = {
    "stem": ["features[0:2]"], "stage1": ["features[2:4]"], "stage2": ["features[4:7]"],
    "stage3": ["features[7:13]"], "stage4": ["features[13:]"], "head": _TORCHVISION_HEAD,
}
MOBILENET_V3_SMALL: StageLayout = {
    "stem": ["features[0:1]"], "stage1": ["features[1:2]"], "stage2": ["features[2:4]"],
    "stage3": ["features[4:9]"], "stage4": ["features[9:]"], "head": _TORCHVISION_HEAD,
}
EFFICIENTNET: StageLayout = {  # b0-b7 and v2-s/m/l share the index layout
    "stem": ["features[0:2]"], "stage1": ["features[2:3]"], "stage2": ["features[3:4]"],
    "stage3": ["features[4:6]"], "stage4": ["features[6:]"], "head": _TORCHVISION_HEAD,
}

# name -> (source, layout). The registry below is generated from this table.
LAYOUTS: dict[str, tuple[Source, StageLayout]] = {
    **{f"resnet{d}": ("torchvision", TORCHVISION_RESNET) for d in (18, 34, 50, 101, 152)},
    **{f"resnest{v}": ("timm", TIMM_RESNET) for v in ("14d", "26d", "50d", "101e", "200e", "269e")},
    **{f"regnety_{v}": ("timm", TIMM_REGNET) for v in ("002", "004", "006", "008", "016", "032", "040", "064",
                                                         "080", "120", "160", "320")},
    "mobilenet_v3_large": ("torchvision", MOBILENET_V3_LARGE),
    "mobilenet_v3_small": ("torchvision", MOBILENET_V3_SMALL),
    **{f"efficientnet_b{i}": ("torchvision", EFFICIENTNET) for i in range(8)},
    **{f"efficientnet_v2_{s}": ("torchvision", EFFICIENTNET) for s in ("s", "m", "l")},
}
GENERIC_PREFIXES: tuple[Source, ...] = ("timm", "torchvision")


class PretrainedUnavailableError(SplitbenchError):
    """Pretrained weights were asked for but cannot be fetched (offline) or read."""


class LayoutError(SplitbenchError, ValueError):
    """A model cannot be cut into stages as its layout says (a weight left out, or a forward that is no chain)."""


def _load_weights_file(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a torchvision/timm-format state dict, strictly: a key mismatch is an error, not a warning."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt file, pickle with code, wrong format
        raise CheckpointError(f"cannot read weights {path}: {error}") from error
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"weights {path} do not match {type(model).__name__}: {error}") from error


def _replace_last_linear(model: nn.Module, num_classes: int) -> None:
    """Give a pretrained torchvision classifier ``num_classes`` outputs (its last Linear is the classifier)."""
    name, linear = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    if linear.out_features != num_classes:
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, nn.Linear(linear.in_features, num_classes))


def create_model(source: Source, arch: str, num_classes: int, pretrained: bool) -> nn.Module:
    """The original torchvision/timm model (random init unless ``pretrained``); offline errors say what to do."""
    if source == "torchvision":
        import torchvision

        if arch not in torchvision.models.list_models():
            raise UnknownNameError(f"torchvision has no model {arch!r}; see torchvision.models.list_models()")
        if not pretrained:
            return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        try:
            model = torchvision.models.get_model(arch, weights="DEFAULT")
        except Exception as error:  # no network, no cache
            raise PretrainedUnavailableError(
                f"cannot fetch torchvision's pretrained {arch} ({error}); download it on a machine with "
                f"network access, or pass a local file with backbone.weights"
            ) from error
        _replace_last_linear(model, num_classes)
        return model
    import timm

    if not timm.is_model(arch):
        raise UnknownNameError(f"timm has no model {arch!r}; see timm.list_models()")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # otherwise timm retries a blocked hub for ~46 s
    try:
        return timm.create_model(arch, pretrained=pretrained, num_classes=num_classes)
    except Exception as error:
        if not pretrained:
            raise
        raise PretrainedUnavailableError(
            f"cannot fetch timm's pretrained {arch} ({error}); unset HF_HUB_OFFLINE on a machine with "
            f"network access, or pass a local file with backbone.weights"
        ) from error


def _normalize_for(model: nn.Module) -> Normalize:
    """The input normalisation the weights expect (timm records it per model; torchvision uses ImageNet's)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return Normalize(cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD))


def stage(model: nn.Module, layout: StageLayout, normalize: nn.Module | None = None) -> StagedNetwork:
    """Wrap ``model`` (sharing its modules) as a :class:`StagedNetwork`; every weight must land in a stage."""
    stages = group_children(model, layout)
    missing = uncovered_parameters(model, stages)
    if missing:
        raise LayoutError(
            f"the stage layout of {type(model).__name__} leaves out {len(missing)} weights "
            f"(first: {', '.join(missing[:4])}); add their modules to a stage"
        )
    return StagedNetwork(stages, normalize)


# -- layouts for models nobody registered ------------------------------------------------------------


def _stage_names(n: int) -> list[str]:
    return ["stem"] + [f"stage{i}" for i in range(1, n - 1)] + ["head"]


def timm_layout(model: nn.Module) -> StageLayout:
    """Cut a timm model after each module its ``feature_info`` names (e.g. ``layer1`` or ``blocks.2``)."""
    cuts: dict[str, set[int]] = {}
    for info in getattr(model, "feature_info", None) or []:
        match = re.fullmatch(r"(\w+)(?:\.(\d+))?", info["module"])
        if match is None:
            raise LayoutError(f"cannot cut {type(model).__name__} at {info['module']!r}; register a stage layout")
        cuts.setdefault(match[1], set())
        if match[2] is not None:
            cuts[match[1]].add(int(match[2]))
    if not cuts:
        raise LayoutError(f"{type(model).__name__} has no feature_info to derive stages from; register a layout")
    stages: list[list[str]] = [[]]
    for name, child in model.named_children():
        if name not in cuts:
            stages[-1].append(name)
        elif not cuts[name]:
            stages[-1].append(name)
            stages.append([])
        else:
            start = 0
            for index in sorted(cuts[name]):
                stages[-1].append(f"{name}[{start}:{index + 1}]")
                stages.append([])
                start = index + 1
            if start < len(child):
                stages[-1].append(f"{name}[{start}:]")
    stages = [s for s in stages if s]
    return dict(zip(_stage_names(len(stages)), stages, strict=True))


@torch.no_grad()
def features_layout(model: nn.Module, image_size: int = 64) -> StageLayout:
    """torchvision ``features`` + ``avgpool`` + ``classifier`` models: ``features`` indices grouped by resolution."""
    was_training = model.training
    model.eval()
    x, sizes = torch.zeros(1, 3, image_size, image_size), []
    try:
        for block in model.features:
            x = block(x)
            sizes.append(x.shape[-1])
    finally:
        model.train(was_training)
    starts = [0] + [i for i in range(1, len(sizes)) if sizes[i] != sizes[i - 1]]
    groups: list[list[str | type[nn.Module]]] = [
        [f"features[{a}:{b}]"] for a, b in zip(starts, [*starts[1:], ""], strict=True)
    ]
    flattens = any(isinstance(m, nn.Flatten) for m in model.classifier.modules())  # e.g. ConvNeXt
    groups.append(["avgpool", "classifier"] if flattens else list(_TORCHVISION_HEAD))
    return dict(zip(_stage_names(len(groups)), groups, strict=True))


def derive_layout(source: Source, model: nn.Module) -> StageLayout:
    if source == "timm":
        return timm_layout(model)
    children = {name for name, _ in model.named_children()}
    if {"conv1", "bn1", "relu", "maxpool", "layer4", "avgpool", "fc"} <= children:
        return TORCHVISION_RESNET
    if {"features", "avgpool", "classifier"} <= children and isinstance(model.features, nn.Sequential):
        return features_layout(model)
    raise LayoutError(f"no stage layout for torchvision's {type(model).__name__}; register one in LAYOUTS")


@torch.no_grad()
def check_chain(model: nn.Module, staged: StagedNetwork, image_size: int = 64) -> None:
    """A derived layout is only right if running the stages in order is the model's own forward."""
    was_training = model.training
    model.eval()
    try:
        x = torch.rand(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
        expected, got = model(staged.normalize(x)), staged(x)
    except RuntimeError as error:
        name = type(model).__name__
        raise LayoutError(f"{name} fails when run stage by stage ({error}); register a stage layout") from error
    finally:
        model.train(was_training)
    if expected.shape != got.shape or not torch.allclose(expected, got, rtol=1e-4, atol=1e-4):
        raise LayoutError(f"{type(model).__name__} does not run as a chain of its stages; register a stage layout")


# -- factories ---------------------------------------------------------------------------------------


def _factory(source: Source, arch: str, layout: StageLayout | None) -> BackboneFactory:
    """One builder for every family: create the original model, load weights, cut it into stages."""

    def build(num_classes: int = 1000, pretrained: bool = False, weights: str | None = None) -> StagedNetwork:
        model = create_model(source, arch, num_classes, pretrained)
        if weights:
            _load_weights_file(model, weights)
        staged = stage(model, layout or derive_layout(source, model), _normalize_for(model))
        if layout is None:
            check_chain(model, staged)
        return staged

    names = ", ".join(layout) if layout else "derived"
    build.__doc__ = f"{source} {arch}; stages {names}"
    return build


def _narrow_resnet(layers: list[int], channels: tuple[int, ...]) -> BackboneFactory:
    """A narrow timm ResNet for CPU experiments on the embedded data (no pretrained weights exist)."""

    def build(num_classes: int = 1000, pretrained: bool = False, weights: str | None = None) -> StagedNetwork:
        from timm.models.resnet import BasicBlock, ResNet

        if pretrained:
            raise PretrainedUnavailableError("narrow ResNets are for the embedded data; no pretrained weights")
        model = ResNet(BasicBlock, layers, num_classes=num_classes, channels=channels, stem_width=channels[0])
        if weights:
            _load_weights_file(model, weights)
        return stage(model, TIMM_RESNET)

    return build


for _name, (_source, _layout) in LAYOUTS.items():
    BACKBONES.add(_name, _factory(_source, _name, _layout))
BACKBONES.add(
    "resnet10n",
    _narrow_resnet([1, 1, 1, 1], (32, 64, 128, 256)),
    help="narrow ResNet-10 (BasicBlock, widths 32-256) for CPU runs on the embedded data",
)
BACKBONES.add(
    "resnet18n",
    _narrow_resnet([2, 2, 2, 2], (32, 64, 128, 256)),
    help="narrow ResNet-18 (BasicBlock, widths 32-256) for CPU runs on the embedded data",
)


def get_backbone(
    name: str, num_classes: int = 1000, *, pretrained: bool = False, weights: str | None = None
) -> StagedNetwork:
    """A registered backbone, or any timm/torchvision CNN as ``timm:<arch>`` / ``torchvision:<arch>``."""
    source, sep, arch = name.partition(":")
    if sep and name not in BACKBONES:
        if source not in GENERIC_PREFIXES:
            raise UnknownNameError(f"unknown backbone source {source!r}; use one of {', '.join(GENERIC_PREFIXES)}")
        return _factory(source, arch, None)(num_classes=num_classes, pretrained=pretrained, weights=weights)  # type: ignore[arg-type]
    try:
        factory = BACKBONES.get(name)
    except UnknownNameError as error:
        raise UnknownNameError(f"{error}; or any timm/torchvision CNN as timm:<arch> / torchvision:<arch>") from None
    return factory(num_classes=num_classes, pretrained=pretrained, weights=weights)


def list_backbones() -> list[str]:
    return BACKBONES.names()
