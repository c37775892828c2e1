"""Bottleneck layouts: encoder g_a → latent coder → decoder g_s, shaped to replace a backbone's first stages.

Two layouts, both rebuilding the split point's output exactly (shape-checked):

* the published Entropic Student bottleneck (bias-free 5×5/2 convs with GDN down to a 2×2 conv; 2×2 convs
  with inverse GDN back up), generalised over the split point: one stride-2 conv per halving of the
  resolution the split point has, so one builder serves every backbone and split;
* sc2bench's CR+BQ stack (``larger_resnet``), a BatchNorm/ReLU convolution stack from Head Network
  Distillation, below.
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
    in_channels: int, hidden: Sequence[int], latent_channels: int, simplified_gdn: bool = False,
    conv_bias: bool = False,
) -> nn.Sequential:
    """Strided 5×5 convs with GDN (one per halving), then a 2×2 conv to the latent channels."""
    _check_channels(in_channels, hidden, latent_channels)
    gdn = _gdn(simplified_gdn)
    layers: list[nn.Module] = []
    channels = in_channels
    for width in hidden:
        layers += [nn.Conv2d(channels, width, 5, stride=2, padding=2, bias=conv_bias), gdn(width)]
        channels = width
    layers.append(nn.Conv2d(channels, latent_channels, 2, stride=1, padding=0, bias=conv_bias))
    return nn.Sequential(*layers)


def build_decoder(
    latent_channels: int, hidden: Sequence[int], out_channels: int, simplified_gdn: bool = False,
    conv_bias: bool = False,
) -> nn.Sequential:
    """2×2 convs with inverse GDN, paddings alternating 1, 0, 1, …: with an even number of hidden
    layers (the published layout has two) this adds back the pixel the encoder's 2×2 conv removed."""
    _check_channels(latent_channels, hidden, out_channels)
    gdn = _gdn(simplified_gdn)
    layers: list[nn.Module] = []
    channels = latent_channels
    for i, width in enumerate(hidden):
        layers += [nn.Conv2d(channels, width, 2, padding=1 - i % 2, bias=conv_bias), gdn(width, inverse=True)]
        channels = width
    layers.append(nn.Conv2d(channels, out_channels, 2, padding=1 - len(hidden) % 2, bias=conv_bias))
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


def gdn_bottleneck(shape: tuple[int, ...], image_size: int, coder: LatentCoder, *,
                   encoder_channels: Sequence[int] | None = None, decoder_channels: Sequence[int] | None = None,
                   simplified_gdn: bool = False, conv_bias: bool = False) -> Bottleneck:
    """g_a → ``coder`` → g_s rebuilding a split point of output ``shape``: the published layout, one strided
    5×5 conv + GDN per halving (widths 96, 48, then 48), a 2×2 conv to the latent; 2×2 convs + IGDN back
    up (widths 2×, 1× the split point's channels).

    The published convs have no bias, and GDN/IGDN are odd functions, so that network is odd in its input
    (f(−x) = −f(x)); it has to find the offset of a post-ReLU target (mean ≈ 0.6 std here) in the image's
    own DC. ``conv_bias`` adds the biases: on the embedded data a layer1 autoencoder then reaches a relative
    MSE of 0.49 in 150 steps where the bias-free one stays at 1.4 (worse than predicting the mean)."""
    if len(shape) != 3:
        raise BottleneckShapeError(f"a learned bottleneck rebuilds a feature map, but the split point outputs {shape}")
    c, _, w = shape
    n_strides = strides_for(image_size // w)
    encoder_channels = list(encoder_channels or ([96, 48] + [48] * (n_strides - 2))[:n_strides])
    if len(encoder_channels) != n_strides:
        raise BottleneckShapeError(f"the split point is {n_strides} halvings deep, so encoder_channels needs "
                                   f"{n_strides} entries, got {encoder_channels}")
    return Bottleneck(build_encoder(3, encoder_channels, coder.channels, simplified_gdn, conv_bias), coder,
                      build_decoder(coder.channels, list(decoder_channels or [2 * c, c]), c, simplified_gdn, conv_bias))



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


# ---------------------------------------------------------------- CR+BQ's larger_resnet stack
#
# The CR+BQ bottleneck of sc2bench: a BatchNorm/ReLU convolution stack from Head Network Distillation.
#
# sc2bench's CR+BQ replaces a ResNet's first stages with a conv/BN/ReLU encoder ending in a 2×2
# convolution to the (1-12) bottleneck channels, whose output is 8-bit quantized, and a conv/BN/ReLU
# decoder back to the split point's shape. Two layouts exist, chosen here by the split point's
# stride; the module order (and so every state-dict index) is the reference's:
#
# ``stride 4`` (split after ``layer1``): the layout of sc2bench's published ImageNet CR+BQ configs
# and checkpoints (``larger_resnet_bottleneck`` with ``bottleneck_idx: 12``; in sc2bench 0.1.1 the
# same stack is the ResNet stem followed by ``larger_resnet_layer1_bottleneck``)
#
#     encoder  0 conv 7×7/2 3→64   1 BN  2 ReLU  3 maxpool 3/2
#              4 conv 2×2 64→64    5 BN  6 conv 2×2 64→256  7 BN  8 ReLU
#              9 conv 2×2 256→64  10 BN 11 conv 2×2 64→c              (padding 1: +1 pixel each)
#     decoder  0 BN  1 ReLU  2 conv 2×2 c→64  3 BN  4 conv 2×2 64→128  5 BN  6 ReLU
#              7 conv 2×2 128→C  8 BN  9 conv 2×2 C→C  10 BN  11 ReLU     (no padding: −1 each)
#
# ``stride 8`` (split after ``layer2``): sc2bench 0.1.1's ``larger_resnet_bottleneck`` (default
# ``bottleneck_idx=7``; C = 512 for ResNet-50/101/152, where every decoder width is 512)
#
#     encoder  0 conv 7×7/2 3→64  1 BN  2 ReLU  3 maxpool 3/2  4 BN  5 ReLU  6 conv 2×2/2 64→c (pad 1)
#     decoder  0 BN  1 ReLU  2 conv 2×2 c→C (pad 1)  3 BN  4 ReLU  5 conv 2×2 C→C (pad 1)  6 BN  7 ReLU
#              8 conv 2×2 C→C  9 BN  10 ReLU  11 conv 2×2 C→C  12 avgpool 2/1
#
# C is the split point's channel count (sc2bench's ``output_channel`` / its fixed 512); all
# convolutions are bias-free. The latent is the last encoder convolution's output, before any
# BatchNorm, so it is signed.



STRIDES = (4, 8)  # split-point strides the layouts reach


def _conv(cin: int, cout: int, kernel: int = 2, stride: int = 1, padding: int = 0) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)


def _stem() -> list[nn.Module]:
    """The ResNet stem (conv 7×7/2, BN, ReLU, max-pool 3/2): stride 4."""
    return [_conv(3, 64, 7, 2, 3), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]


def larger_resnet_layers(latent_channels: int, out_channels: int, stride: int) -> tuple[nn.Sequential, nn.Sequential]:
    """(encoder, decoder) of the layout for a split point of ``stride`` with ``out_channels`` channels."""
    if min(latent_channels, out_channels) < 1:
        raise ValueError(f"channel counts must be >= 1, got {latent_channels} and {out_channels}")
    c, out = latent_channels, out_channels
    if stride == 4:
        encoder = [*_stem(), _conv(64, 64, padding=1), nn.BatchNorm2d(64), _conv(64, 256, padding=1),
                   nn.BatchNorm2d(256), nn.ReLU(inplace=True), _conv(256, 64, padding=1), nn.BatchNorm2d(64),
                   _conv(64, c, padding=1)]
        decoder = [nn.BatchNorm2d(c), nn.ReLU(inplace=True), _conv(c, 64), nn.BatchNorm2d(64), _conv(64, 128),
                   nn.BatchNorm2d(128), nn.ReLU(inplace=True), _conv(128, out), nn.BatchNorm2d(out), _conv(out, out),
                   nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
    elif stride == 8:
        encoder = [*_stem(), nn.BatchNorm2d(64), nn.ReLU(inplace=True), _conv(64, c, stride=2, padding=1)]
        decoder = [nn.BatchNorm2d(c), nn.ReLU(inplace=True), _conv(c, out, padding=1), nn.BatchNorm2d(out),
                   nn.ReLU(inplace=True), _conv(out, out, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True),
                   _conv(out, out), nn.BatchNorm2d(out), nn.ReLU(inplace=True), _conv(out, out),
                   nn.AvgPool2d(2, stride=1)]
    else:
        raise BottleneckShapeError(
            f"the larger_resnet bottleneck replaces a ResNet up to a stride-4 (layer1) or stride-8 (layer2) "
            f"split point; this split point has stride {stride}"
        )
    return nn.Sequential(*encoder), nn.Sequential(*decoder)


def build_larger_resnet_bottleneck(coder: LatentCoder, split_shape: tuple[int, ...], image_size: int) -> Bottleneck:
    """The sc2bench CR+BQ bottleneck for a split point whose output is ``split_shape`` (C, H, W)."""
    if len(split_shape) != 3:
        raise BottleneckShapeError(f"a learned bottleneck rebuilds a feature map, but the split point outputs "
                                   f"{tuple(split_shape)}")
    channels, _, width = split_shape
    encoder, decoder = larger_resnet_layers(coder.channels, channels, image_size // width)
    return Bottleneck(encoder, coder, decoder)
