"""Any classifier as an ordered list of named stages, so a split point is just a stage boundary.

This is the one implementation of "split a backbone at a named point": every family declares
which submodules form each stage (a layout: data, not code; see :data:`StageMember`), and
:class:`StagedNetwork` runs them in order, can start or stop at any boundary, and can tap intermediate outputs for
distillation. Normalisation is the first op, so every pipeline is fed plain [0, 1] images.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from splitbench.errors import SplitbenchError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SplitPointError(SplitbenchError, ValueError):
    """A split point that the backbone does not have; the message lists the valid ones."""


class Normalize(nn.Module):
    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class StagedNetwork(nn.Module):
    """Stages run in order; ``forward(x, start=, stop=, taps=)`` runs any contiguous slice."""

    def __init__(self, stages: dict[str, nn.Module], normalize: nn.Module | None = None) -> None:
        super().__init__()
        self.normalize = normalize if normalize is not None else Normalize()
        self.stages = nn.ModuleDict(stages)

    @property
    def stage_names(self) -> list[str]:
        return list(self.stages.keys())

    def split_points(self) -> list[str]:
        """Stage names after which the network can be cut (every stage but the last)."""
        return self.stage_names[:-1]

    def check_split_point(self, name: str) -> None:
        if name not in self.split_points():
            raise SplitPointError(f"unknown split point {name!r}; valid: {', '.join(self.split_points())}")

    def stages_after(self, name: str) -> list[str]:
        self.check_split_point(name)
        names = self.stage_names
        return names[names.index(name) + 1 :]

    def forward(
        self,
        x: torch.Tensor,
        *,
        start: str | None = None,
        stop: str | None = None,
        taps: Iterable[str] = (),
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run from stage ``start`` (inclusive; None = normalise the image first) to ``stop`` (inclusive).

        With ``taps``, also return the outputs of those stages, as distillation losses need.
        """
        names = self.stage_names
        begin = 0 if start is None else names.index(start)
        end = len(names) if stop is None else names.index(stop) + 1
        if start is None:
            x = self.normalize(x)
        taps = set(taps)
        tapped: dict[str, torch.Tensor] = {}
        for name in names[begin:end]:
            x = self.stages[name](x)
            if name in taps:
                tapped[name] = x
        return (x, tapped) if taps else x

    @torch.no_grad()
    def stage_shapes(self, image_size: int, channels: int = 3) -> dict[str, tuple[int, ...]]:
        """Output shape (C, H, W or C) of every stage for one image of the given size.

        The probe lives where the weights do, so a network on the meta device reports its shapes
        without allocating or computing anything (how heavy backbones are checked cheaply).
        """
        device = next(self.parameters(), torch.empty(0)).device
        was_training = self.training
        self.eval()
        try:
            _, tapped = self(torch.zeros(1, channels, image_size, image_size, device=device), taps=self.stage_names)
        finally:
            self.train(was_training)
        return {name: tuple(t.shape[1:]) for name, t in tapped.items()}


def dilate_stages(network: StagedNetwork, stages: list[str]) -> None:
    """Trade the stride of ``stages`` for dilation (DeepLab's output stride), keeping every weight.

    Each named stage stops downsampling and its k×k convolutions dilate ×2 per dilated stage so far,
    which works on any conv family (torchvision's ``replace_stride_with_dilation`` exists only for
    Bottleneck ResNets; BasicBlock nets and MobileNets have no such switch).
    """
    dilation = 1
    for name in stages:
        dilation *= 2
        for module in network.stages[name].modules():
            if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)) and module.stride not in (1, (1, 1)):
                raise SplitbenchError(f"stage {name} downsamples with {type(module).__name__}, which cannot be "
                                      "dilated; use head.output_stride: 32 with this backbone")
            if not isinstance(module, nn.Conv2d):
                continue
            module.stride = (1, 1)
            k = module.kernel_size[0]
            if k > 1:
                module.dilation = (dilation, dilation)
                module.padding = (dilation * (k - 1) // 2, dilation * (module.kernel_size[1] - 1) // 2)


# A stage member: a child's dotted path ("layer1", "features"), a slice of a Sequential child
# ("features[2:4]", "blocks[5:]"), or a module class instantiated fresh per network (nn.Flatten).
StageMember = str | type[nn.Module]
StageLayout = dict[str, Sequence[StageMember]]
_SLICE = re.compile(r"^(?P<path>[\w.]+)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]$")


def _resolve(model: nn.Module, member: StageMember) -> nn.Module:
    if isinstance(member, type) and issubclass(member, nn.Module):
        return member()
    if not isinstance(member, str):
        raise TypeError(f"a stage member is a child path or a module class, got {member!r}")
    match = _SLICE.match(member)
    path = match["path"] if match else member
    try:
        module = model.get_submodule(path)
    except AttributeError:
        children = [name for name, _ in model.named_children()]
        raise KeyError(f"{type(model).__name__} has no submodule {path!r} (children: {children})") from None
    if not match:
        return module
    if not isinstance(module, nn.Sequential):
        raise TypeError(f"{member!r}: only an nn.Sequential can be sliced, {path!r} is {type(module).__name__}")
    start, stop = (int(match[k]) if match[k] else None for k in ("start", "stop"))
    part = module[start:stop]
    if len(part) == 0:
        raise KeyError(f"{member!r} selects no modules ({path!r} has {len(module)})")
    return part


def group_children(model: nn.Module, layout: StageLayout) -> dict[str, nn.Module]:
    """Build stages from a model's submodules as a layout names them; modules are shared, not copied.

    A layout names the modules of the forward pass in order; a weight no stage holds is reported by
    :func:`uncovered_parameters`.
    """
    stages: dict[str, nn.Module] = {}
    for stage, members in layout.items():
        modules = [_resolve(model, member) for member in members]
        stages[stage] = modules[0] if len(modules) == 1 else nn.Sequential(*modules)
    return stages


def uncovered_parameters(model: nn.Module, stages: dict[str, nn.Module]) -> list[str]:
    """Parameter names of ``model`` that no stage holds: a layout that drops weights is a bug."""
    held = {id(p) for stage in stages.values() for p in stage.parameters()}
    return [name for name, p in model.named_parameters() if id(p) not in held]
