"""Trunks: the part of a model that turns images into named feature levels, which the heads read.

* :class:`FeatureTrunk`: a backbone's feature stages, unsplit (a teacher, the server model of the
  codec baselines, the device+server halves of a naive split).
* :class:`BottleneckTrunk`: a learned bottleneck (encoder → latent coder → decoder) in place of the
  stages up to the split point, then the backbone's later stages: every learned split model. The
  device runs :meth:`BottleneckTrunk.encode` and the coder; the server :meth:`BottleneckTrunk.decode`.

Both return ``(features, likelihoods)`` from :meth:`Trunk.features`: every level's output by name and
the latent's likelihoods (none for an unsplit trunk), so recipes distil, rate-train and run heads the
same way whatever the trunk.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import nn

from splitbench.compression.latent_coders import LatentCoder
from splitbench.models.bottlenecks import Bottleneck
from splitbench.models.staged import StagedNetwork

Features = dict[str, torch.Tensor]


class Trunk(nn.Module, ABC):
    """Images → named feature levels (and the latent's likelihoods, where there is a latent)."""

    @property
    @abstractmethod
    def levels(self) -> list[str]:
        """The feature levels it outputs, in order."""

    @abstractmethod
    def features(self, batch: torch.Tensor, *, quantized: bool = False,
                 levels: Sequence[str] | None = None) -> tuple[Features, dict[str, torch.Tensor]]:
        """The outputs of ``levels`` (default: every level) for a batch of [0, 1] images; asking only for what
        the heads read lets inference free the other levels as it goes. ``quantized``: a bottleneck's decoder
        sees the test-time quantized latent (detached), as stage-2 training needs; an unsplit trunk ignores it."""

    @torch.no_grad()
    def level_shapes(self, image_size: int) -> dict[str, tuple[int, ...]]:
        """Output shape of every level for one image of the given size. The probe runs where the weights are,
        so a trunk on the meta device reports its shapes without computing anything."""
        device = next(self.parameters(), torch.empty(0)).device
        was_training = self.training
        self.eval()
        try:
            features, _ = self.features(torch.zeros(1, 3, image_size, image_size, device=device), quantized=True)
        finally:
            self.train(was_training)
        return {name: tuple(features[name].shape[1:]) for name in self.levels}


class FeatureTrunk(StagedNetwork, Trunk):
    """A backbone's feature stages (its classifier stage is a head): every stage is a level."""

    @classmethod
    def of(cls, backbone: StagedNetwork) -> FeatureTrunk:
        """The feature stages of a classifier backbone, sharing its modules (its last stage is the classifier)."""
        names = backbone.stage_names[:-1]
        return cls({n: backbone.stages[n] for n in names}, backbone.normalize)

    @property
    def levels(self) -> list[str]:
        return self.stage_names

    def split_points(self) -> list[str]:
        """Every level: a split after the last sends its features to the heads."""
        return self.stage_names

    def features(self, batch, *, quantized=False, levels=None):
        wanted = [n for n in self.stage_names if levels is None or n in levels]
        _, tapped = self(batch, stop=wanted[-1], taps=wanted)
        return tapped, {}

    def features_from(self, level: str, x: torch.Tensor) -> Features:
        """The server side of a split at ``level``: its output ``x`` and every later level's."""
        later = self.stages_after(level)
        out = {level: x}
        if later:
            _, tapped = self(x, start=later[0], taps=later)
            out.update(tapped)
        return out

    def device_part(self, level: str) -> nn.Sequential:
        """What a device runs for a split at ``level``: normalise and the stages up to it (shared modules)."""
        self.check_split_point(level)
        names = self.stage_names
        return nn.Sequential(self.normalize, *(self.stages[n] for n in names[: names.index(level) + 1]))


class BottleneckTrunk(Trunk):
    """normalise → g_a → coder | g_s → the backbone's stages after ``split_after``.

    State-dict layout: ``bottleneck.encoder.*`` (g_a, or the teacher's own stages for EB fine-tuning),
    ``bottleneck.coder.*`` (see :mod:`splitbench.compression.latent_coders`), ``bottleneck.decoder.*``
    (g_s), ``tail.stages.<stage>.*`` (the backbone's feature stages after the split).
    """

    def __init__(self, trunk: FeatureTrunk, split_after: str, bottleneck: Bottleneck, image_size: int) -> None:
        super().__init__()
        trunk.check_split_point(split_after)
        bottleneck.check_output_shape(image_size, trunk.stage_shapes(image_size)[split_after])
        self.split_after = split_after
        self.normalize = copy.deepcopy(trunk.normalize)
        self.bottleneck = bottleneck
        self.tail = StagedNetwork({n: copy.deepcopy(trunk.stages[n]) for n in trunk.stages_after(split_after)},
                                  nn.Identity())

    @property
    def levels(self) -> list[str]:
        return [self.split_after, *self.tail.stage_names]

    @property
    def coder(self) -> LatentCoder:
        return self.bottleneck.coder

    def device_network(self) -> nn.Module:
        """What the device runs before entropy coding. Built on demand, so the state dict has each weight once."""
        return nn.Sequential(self.normalize, self.bottleneck.encoder)

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """The latent y of a batch of [0, 1] images (the device side, before coding)."""
        return self.bottleneck.encoder(self.normalize(batch))

    def decode(self, y_hat: torch.Tensor, levels: Sequence[str] | None = None) -> Features:
        """The server side: the outputs of ``levels`` (default: every level, the split point's included) from
        the decoded latent."""
        return self._tail(self.bottleneck.decoder(y_hat), levels)

    def features(self, batch, *, quantized=False, levels=None):
        x = self.normalize(batch)
        if quantized:
            with torch.no_grad():
                y_hat = self.coder.quantize(self.bottleneck.encoder(x))
            return self._tail(self.bottleneck.decoder(y_hat), levels), {}
        decoded, likelihoods = self.bottleneck(x)
        return self._tail(decoded, levels), likelihoods

    def _tail(self, decoded: torch.Tensor, levels: Sequence[str] | None) -> Features:
        wanted = self.levels if levels is None else levels
        out = {self.split_after: decoded} if self.split_after in wanted else {}
        later = [n for n in self.tail.stage_names if n in wanted]
        if later:
            _, tapped = self.tail(decoded, stop=later[-1], taps=later)
            out.update(tapped)
        return out
