"""The CR+BQ bottleneck of sc2bench: a BatchNorm/ReLU convolution stack from Head Network Distillation.

sc2bench's CR+BQ replaces a ResNet's first stages with a conv/BN/ReLU encoder ending in a 2×2
convolution to the (1-12) bottleneck channels, whose output is 8-bit quantized, and a conv/BN/ReLU
decoder back to the split point's shape. Two layouts exist, chosen here by the split point's
stride; the module order (and so every state-dict index) is the reference's:

``stride 4`` (split after ``layer1``): the layout of sc2bench's published ImageNet CR+BQ configs
and checkpoints (``larger_resnet_bottleneck`` with ``bottleneck_idx: 12``; in sc2bench 0.1.1 the
same stack is the ResNet stem followed by ``larger_resnet_layer1_bottleneck``)::

    encoder  0 conv 7×7/2 3→64   1 BN  2 ReLU  3 maxpool 3/2
             4 conv 2×2 64→64    5 BN  6 conv 2×2 64→256  7 BN  8 ReLU
             9 conv 2×2 256→64  10 BN 11 conv 2×2 64→c              (padding 1: +1 pixel each)
    decoder  0 BN  1 ReLU  2 conv 2×2 c→64  3 BN  4 conv 2×2 64→128  5 BN  6 ReLU
             7 conv 2×2 128→C  8 BN  9 conv 2×2 C→C  10 BN  11 ReLU     (no padding: −1 each)

``stride 8`` (split after ``layer2``): sc2bench 0.1.1's ``larger_resnet_bottleneck`` (default
``bottleneck_idx=7``; C = 512 for ResNet-50/101/152, where every decoder width is 512)::

    encoder  0 conv 7×7/2 3→64  1 BN  2 ReLU  3 maxpool 3/2  4 BN  5 ReLU  6 conv 2×2/2 64→c (pad 1)
    decoder  0 BN  1 ReLU  2 conv 2×2 c→C (pad 1)  3 BN  4 ReLU  5 conv 2×2 C→C (pad 1)  6 BN  7 ReLU
             8 conv 2×2 C→C  9 BN  10 ReLU  11 conv 2×2 C→C  12 avgpool 2/1

C is the split point's channel count (sc2bench's ``output_channel`` / its fixed 512); all
convolutions are bias-free. The latent is the last encoder convolution's output, before any
BatchNorm, so it is signed.
"""

from __future__ import annotations

from torch import nn

from splitbench.compression.bottleneck import Bottleneck, BottleneckShapeError
from splitbench.compression.latent_coders import LatentCoder

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
