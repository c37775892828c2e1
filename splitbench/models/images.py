"""Batches of images of any sizes: padding to a stride, grouping by size.

Detection and segmentation data come as lists of images of different sizes; classification data as
one stacked tensor. Every image is padded on its own (bottom/right) to a multiple of the trunk's
stride, so a sample's latent, and its bytes, never depend on the other images of its batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Images = torch.Tensor | list[torch.Tensor]
Size = tuple[int, int]


def image_sizes(images: Images) -> list[Size]:
    """Each image's (h, w)."""
    if isinstance(images, torch.Tensor) and images.dim() == 3:
        images = [images]
    return [(int(im.shape[-2]), int(im.shape[-1])) for im in images]


def padded_size(sizes: list[Size], multiple: int) -> Size:
    """The largest (h, w) of ``sizes`` rounded up to a multiple of ``multiple``."""
    h, w = (math.ceil(max(s[i] for s in sizes) / multiple) * multiple for i in (0, 1))
    return h, w


def pad_images(images: Images, multiple: int, fill: float = 0.0) -> tuple[torch.Tensor, list[Size]]:
    """One (B, C, H, W) tensor, each image zero-padded bottom/right to the batch's largest size rounded up to
    ``multiple``; and each image's own (h, w). (torchvision's GeneralizedRCNNTransform also resizes and
    normalises; here the dataset sized the images and the trunk normalises.)"""
    if isinstance(images, torch.Tensor) and images.dim() == 3:
        images = [images]
    sizes = image_sizes(images)
    h, w = padded_size(sizes, multiple)
    if isinstance(images, torch.Tensor) and images.shape[-2:] == (h, w):
        return images, sizes
    batch = images[0].new_full((len(images), images[0].shape[0], h, w), fill)
    for b, im in zip(batch, images, strict=True):
        b[:, : im.shape[-2], : im.shape[-1]].copy_(im)
    return batch, sizes


def pad_replicate(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad a batch bottom/right to a multiple of ``multiple`` (a neural codec's downsampling)."""
    height, width = x.shape[-2:]
    ph, pw = padded_size([(height, width)], multiple)
    return x if (ph, pw) == (height, width) else F.pad(x, (0, pw - width, 0, ph - height), mode="replicate")


def group_by_size(images: Images) -> list[tuple[list[int], torch.Tensor]]:
    """Indices and stacked images of each image size in the batch: one group for a stacked tensor."""
    if isinstance(images, torch.Tensor):
        return [(list(range(images.shape[0])), images)]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.shape), []).append(i)
    return [(idx, torch.stack([images[i] for i in idx])) for idx in groups.values()]


def in_order(parts: list[tuple[list[int], object]]) -> object:
    """Reassemble per-group outputs (a tensor of rows or a list per group) into batch order.

    One group covering the batch is returned as it is (a classifier's logits stay one tensor);
    several groups give a list with one entry per sample."""
    if len(parts) == 1 and parts[0][0] == list(range(len(parts[0][0]))):
        return parts[0][1]
    out: dict[int, object] = {}
    for indices, output in parts:
        out.update(zip(indices, output, strict=True))  # type: ignore[call-overload]
    return [out[i] for i in range(len(out))]
