"""A classifier whose stages up to the split point are replaced by a learned bottleneck.

Shared by every bottleneck method (Entropic Student, End-to-End, CR+BQ, EB fine-tuning): they
differ in the coder and in how they train, not in the network. State-dict layout:
``bottleneck.encoder.*`` (g_a, or the teacher's head stages for EB fine-tuning),
``bottleneck.coder.*`` (see :mod:`splitbench.compression.latent_coders`), ``bottleneck.decoder.*``
(g_s), ``tail.stages.<stage>.*`` (the backbone's stages after the split).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from splitbench.compression.bottleneck import (
    Bottleneck,
    BottleneckShapeError,
    build_decoder,
    build_encoder,
    strides_for,
)
from splitbench.compression.latent_coders import LatentCoder
from splitbench.models.staged import StagedNetwork
from splitbench.pipeline import SplitModel


class BottleneckClassifier(SplitModel):
    """normalise → g_a → coder | g_s → the backbone's stages after ``split_after``."""

    def __init__(self, backbone: StagedNetwork, split_after: str, bottleneck: Bottleneck, image_size: int) -> None:
        super().__init__()
        tail_names = backbone.stages_after(split_after)
        bottleneck.check_output_shape(image_size, backbone.stage_shapes(image_size)[split_after])
        self.split_after = split_after
        self.normalize = copy.deepcopy(backbone.normalize)
        self.bottleneck = bottleneck
        self.tail = StagedNetwork({n: copy.deepcopy(backbone.stages[n]) for n in tail_names}, nn.Identity())

    @property
    def coder(self):  # type: ignore[override]
        return self.bottleneck.coder

    @property
    def tail_stages(self) -> list[str]:
        return self.tail.stage_names

    def mobile_network(self) -> nn.Module:
        # Built on demand rather than registered, so the state dict has each weight once.
        return nn.Sequential(self.normalize, self.bottleneck.encoder)

    def server_forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.tail(self.bottleneck.decoder(y_hat))

    def decode_features(self, y_hat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Server side for a task head: every stage output from the decoded latent, the split point's included."""
        features = self.bottleneck.decoder(y_hat)
        _, tapped = self.tail(features, taps=self.tail_stages)
        tapped[self.split_after] = features
        return tapped

    def forward(
        self, images: torch.Tensor, *, quantized: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Training path: (logits, stage outputs incl. the split point's, likelihoods).

        ``quantized`` feeds the decoder the test-time quantized latent (detached), as stage-2
        training of the Entropic Student requires; otherwise the coder's noisy proxy is used.
        """
        x = self.normalize(images)
        if quantized:
            with torch.no_grad():
                y_hat = self.coder.quantize(self.bottleneck.encoder(x))
            features, likelihoods = self.bottleneck.decoder(y_hat), {}
        else:
            features, likelihoods = self.bottleneck(x)
        logits, tapped = self.tail(features, taps=self.tail_stages)
        tapped[self.split_after] = features
        return logits, tapped, likelihoods


def build_bottleneck_classifier(
    backbone: StagedNetwork,
    split_after: str,
    image_size: int,
    coder: LatentCoder,
    *,
    encoder_channels: Sequence[int] | None = None,
    decoder_channels: Sequence[int] | None = None,
    simplified_gdn: bool = False,
) -> BottleneckClassifier:
    """g_a → ``coder`` → g_s in place of the stages up to ``split_after``, the later stages from ``backbone``.

    Defaults follow the published layout: encoder widths 96, 48 (48 per extra halving), decoder
    widths 2×, 1× the split point's channels.
    """
    backbone.check_split_point(split_after)
    shape = backbone.stage_shapes(image_size)[split_after]
    if len(shape) != 3:
        raise BottleneckShapeError(f"a learned bottleneck rebuilds a feature map, but {split_after} outputs {shape}")
    c, _, w = shape
    n_strides = strides_for(image_size // w)
    encoder_channels = list(encoder_channels or ([96, 48] + [48] * (n_strides - 2))[:n_strides])
    if len(encoder_channels) != n_strides:
        raise BottleneckShapeError(
            f"split after {split_after} is {n_strides} halvings deep, so encoder_channels needs "
            f"{n_strides} entries, got {encoder_channels}"
        )
    bottleneck = Bottleneck(
        build_encoder(3, encoder_channels, coder.channels, simplified_gdn),
        coder,
        build_decoder(coder.channels, list(decoder_channels or [2 * c, c]), c, simplified_gdn),
    )
    return BottleneckClassifier(backbone, split_after, bottleneck, image_size)


def build_split_classifier(
    backbone: StagedNetwork, split_after: str, image_size: int, coder: LatentCoder
) -> BottleneckClassifier:
    """The unmodified ``backbone`` with ``coder`` at ``split_after`` (EB fine-tuning): the device runs the
    stages up to the split, the server the rest; no bottleneck layers are added.

    A pooled (C,) split output is coded as (C, 1, 1), so every coder sees a feature map.
    """
    backbone.check_split_point(split_after)
    shape = backbone.stage_shapes(image_size)[split_after]
    if shape[0] != coder.channels:
        raise BottleneckShapeError(f"{split_after} outputs {shape}; the coder has {coder.channels} channels")
    names = backbone.stage_names[: backbone.stage_names.index(split_after) + 1]
    head: nn.Module = StagedNetwork({n: copy.deepcopy(backbone.stages[n]) for n in names}, nn.Identity())
    decoder: nn.Module = nn.Identity()
    if len(shape) == 1:
        head, decoder = nn.Sequential(head, nn.Unflatten(1, (shape[0], 1, 1))), nn.Flatten(1)
    elif len(shape) != 3:
        raise BottleneckShapeError(f"cannot code the {shape} output of {split_after}: expected (C,) or (C, H, W)")
    return BottleneckClassifier(backbone, split_after, Bottleneck(head, coder, decoder), image_size)
