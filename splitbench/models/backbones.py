"""Backbones by name, each returned as a :class:`StagedNetwork` ready to split at a named stage.

torchvision and timm build the networks; a family only declares which top-level children make
up each stage. Pretrained weights are loaded into the original model *before* it is regrouped,
so a user's torchvision/timm checkpoint loads with strict key checking.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from splitbench.errors import CheckpointError, SplitbenchError
from splitbench.models.staged import StagedNetwork, group_children
from splitbench.registry import Registry

BackboneFactory = Callable[..., StagedNetwork]
BACKBONES: Registry[BackboneFactory] = Registry("backbone")

# Stage layouts (stage name -> top-level children). ResNet-like families share one layout up to
# the names torchvision and timm give the activation and pooling layers.
TORCHVISION_RESNET = {
    "stem": ["conv1", "bn1", "relu", "maxpool"],
    "layer1": ["layer1"], "layer2": ["layer2"], "layer3": ["layer3"], "layer4": ["layer4"],
    "head": ["avgpool", nn.Flatten(1), "fc"],
}
TIMM_RESNET = {
    "stem": ["conv1", "bn1", "act1", "maxpool"],
    "layer1": ["layer1"], "layer2": ["layer2"], "layer3": ["layer3"], "layer4": ["layer4"],
    "head": ["global_pool", "fc"],
}


class PretrainedUnavailableError(SplitbenchError):
    """Pretrained weights were asked for but cannot be fetched (offline) or read."""


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


def _torchvision(arch: str) -> BackboneFactory:
    def build(num_classes: int = 1000, pretrained: bool = False, weights: str | None = None) -> StagedNetwork:
        import torchvision

        if pretrained:
            try:
                model = torchvision.models.get_model(arch, weights="DEFAULT")
            except Exception as error:  # no network, no cache
                raise PretrainedUnavailableError(
                    f"cannot fetch torchvision's pretrained {arch} ({error}); download it on a machine with "
                    f"network access, or pass a local file with backbone.weights"
                ) from error
            if num_classes != model.fc.out_features:
                model.fc = nn.Linear(model.fc.in_features, num_classes)
        else:
            model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        if weights:
            _load_weights_file(model, weights)
        return StagedNetwork(group_children(model, TORCHVISION_RESNET))

    build.__doc__ = f"torchvision {arch}; split points stem, layer1-4"
    return build


def _timm(arch: str, **kwargs) -> BackboneFactory:
    def build(num_classes: int = 1000, pretrained: bool = False, weights: str | None = None) -> StagedNetwork:
        import timm

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # otherwise timm retries a blocked hub for ~46 s
        try:
            model = timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, **kwargs)
        except Exception as error:
            if not pretrained:
                raise
            raise PretrainedUnavailableError(
                f"cannot fetch timm's pretrained {arch} ({error}); unset HF_HUB_OFFLINE on a machine with "
                f"network access, or pass a local file with backbone.weights"
            ) from error
        if weights:
            _load_weights_file(model, weights)
        return StagedNetwork(group_children(model, TIMM_RESNET))

    build.__doc__ = f"timm {arch}; split points stem, layer1-4"
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
        return StagedNetwork(group_children(model, TIMM_RESNET))

    return build


for _arch in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
    BACKBONES.add(_arch, _torchvision(_arch))
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
    return BACKBONES.get(name)(num_classes=num_classes, pretrained=pretrained, weights=weights)


def list_backbones() -> list[str]:
    return BACKBONES.names()
