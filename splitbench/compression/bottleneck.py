"""Learned bottlenecks: encoder g_a → latent coder → decoder g_s, shaped to replace a backbone's head.

The layout follows the published Entropic Student bottleneck (bias-free 5×5/2 convs with GDN down
to a 2×2 conv; 2×2 convs with inverse GDN back up), generalised over the split point: one
stride-2 conv per halving of the resolution the split point has, so one builder serves every
backbone and split.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from splitbench.compression.latent_coders import LatentCoder
from splitbench.errors import SplitbenchError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    from compressai.layers import GDN, GDN1


class BottleneckShapeError(SplitbenchError, ValueError):
    """The bottleneck cannot reproduce the split point's output shape; the message has both shapes."""


def _gdn(simplified: bool) -> type[nn.Module]:
    """GDN, or GDN1 (|x| instead of x², no square root) as sc2bench's bottlenecks use: same parameters."""
    return GDN1 if simplified else GDN


def build_encoder(
    in_channels: int, hidden: Sequence[int], latent_channels: int, simplified_gdn: bool = False
) -> nn.Sequential:
    """Strided 5×5 convs with GDN (one per halving), then a 2×2 conv to the latent channels."""
    _check_channels(in_channels, hidden, latent_channels)
    gdn = _gdn(simplified_gdn)
    layers: list[nn.Module] = []
    channels = in_channels
    for width in hidden:
        layers += [nn.Conv2d(channels, width, 5, stride=2, padding=2, bias=False), gdn(width)]
        channels = width
    layers.append(nn.Conv2d(channels, latent_channels, 2, stride=1, padding=0, bias=False))
    return nn.Sequential(*layers)


def build_decoder(
    latent_channels: int, hidden: Sequence[int], out_channels: int, simplified_gdn: bool = False
) -> nn.Sequential:
    """2×2 convs with inverse GDN, paddings alternating 1, 0, 1, …: with an even number of hidden
    layers (the published layout has two) this adds back the pixel the encoder's 2×2 conv removed."""
    _check_channels(latent_channels, hidden, out_channels)
    gdn = _gdn(simplified_gdn)
    layers: list[nn.Module] = []
    channels = latent_channels
    for i, width in enumerate(hidden):
        layers += [nn.Conv2d(channels, width, 2, padding=1 - i % 2, bias=False), gdn(width, inverse=True)]
        channels = width
    layers.append(nn.Conv2d(channels, out_channels, 2, padding=1 - len(hidden) % 2, bias=False))
    return nn.Sequential(*layers)


def _check_channels(first: int, hidden: Sequence[int], last: int) -> None:
    if min(first, last, *hidden) < 1:
        raise ValueError(f"channel counts must be >= 1, got {first} → {list(hidden)} → {last}")


def strides_for(split_stride: int) -> int:
    """Number of stride-2 encoder convs that reach a split point downsampled by ``split_stride``."""
    n = round(math.log2(split_stride)) if split_stride > 0 else -1
    if n < 1 or 2**n != split_stride:
        raise BottleneckShapeError(f"split point stride {split_stride} is not a power of two ≥ 2")
    return n


class Bottleneck(nn.Module):
    """g_a → coder → g_s. ``forward`` is the training path; pipelines call encoder/coder/decoder directly."""

    def __init__(self, encoder: nn.Module, coder: LatentCoder, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.coder = coder
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        y = self.encoder(x)
        y_hat, likelihoods = self.coder(y)
        return self.decoder(y_hat), likelihoods

    def decode_quantized(self, x: torch.Tensor) -> torch.Tensor:
        """What the server sees at test time, without running the entropy coder."""
        return self.decoder(self.coder.quantize(self.encoder(x)))

    @torch.no_grad()
    def check_output_shape(self, image_size: int, expected: tuple[int, ...]) -> None:
        was_training = self.training
        self.eval()
        try:
            got = tuple(self.decoder(self.encoder(torch.zeros(1, 3, image_size, image_size))).shape[1:])
        finally:
            self.train(was_training)
        if got != tuple(expected):
            raise BottleneckShapeError(
                f"bottleneck decoder outputs {got} for a {image_size}px image, but the split point "
                f"outputs {tuple(expected)}; adjust the encoder strides or decoder channels"
            )
