"""Detection and segmentation models on a splittable backbone: a trunk of feature stages + a task head.

The trunk is the backbone's feature stages (the unsplit model, the teacher: a :class:`StagedNetwork`)
or a :class:`BottleneckClassifier` whose bottleneck replaces the stages up to the split (a student).
The head reads the trunk's stage outputs by name, so one head serves the unsplit model and every
split method, and the bottleneck decoder's output feeds the head exactly where the backbone's
split-point output did (for Faster R-CNN: the first FPN level).

Heads are torchvision's parts: Faster R-CNN (FPN, RPN, RoI heads) and DeepLabv3 (ASPP head, FCN
auxiliary head). Images are not resized inside the model (the dataset does that, as for
classification); each image is zero-padded on its own to a multiple of the trunk's stride, so a
sample's latent, and its bytes, never depend on the other images of its batch.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.segmentation.deeplabv3 import ASPP
from torchvision.models.segmentation.fcn import FCNHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from splitbench.errors import ConfigError, SplitbenchError
from splitbench.models.bottleneck_classifier import BottleneckClassifier
from splitbench.models.staged import StagedNetwork
from splitbench.pipeline import SplitModel

IGNORE_INDEX = 255  # segmentation pixels that count for neither loss nor metric (VOC's object borders)
Images = torch.Tensor | list[torch.Tensor]


class HeadArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DetectionHeadArgs(HeadArgs):
    """Faster R-CNN with FPN. Defaults are torchvision's ``fasterrcnn_resnet50_fpn``; the light shapes
    configs shrink the widths, anchors and sample counts."""

    kind: Literal["faster_rcnn"] = "faster_rcnn"
    fpn_channels: PositiveInt = 256
    representation_size: PositiveInt = Field(1024, description="width of the box head's two MLP layers")
    anchor_sizes: list[PositiveInt] = Field([32, 64, 128, 256, 512], description="one per FPN level")
    aspect_ratios: list[float] = [0.5, 1.0, 2.0]
    proposals_train: PositiveInt = Field(2000, description="RPN proposals kept before and after NMS in training")
    proposals_test: PositiveInt = 1000
    rpn_batch_size_per_image: PositiveInt = 256
    box_batch_size_per_image: PositiveInt = 512
    score_threshold: float = Field(0.05, ge=0, lt=1)
    detections_per_image: PositiveInt = 100


class SegmentationHeadArgs(HeadArgs):
    """DeepLabv3: ASPP on the last stage, an FCN auxiliary head on the one before (weight 0 = none).
    ``output_stride`` 8 dilates the last two stages instead of striding, as published."""

    kind: Literal["deeplabv3"] = "deeplabv3"
    channels: PositiveInt = Field(256, description="ASPP and head width")
    atrous_rates: list[PositiveInt] = [12, 24, 36]
    output_stride: Literal[8, 16, 32] = 8
    aux_weight: float = Field(0.5, ge=0)


HEAD_SCHEMAS: dict[str, type[HeadArgs]] = {"detection": DetectionHeadArgs, "segmentation": SegmentationHeadArgs}


# ---------------------------------------------------------------- images


def padded_size(sizes: list[tuple[int, int]], stride: int) -> tuple[int, int]:
    """The batch's largest (h, w) rounded up to a multiple of ``stride``."""
    return tuple(math.ceil(max(s[i] for s in sizes) / stride) * stride for i in (0, 1))  # type: ignore[return-value]


def pad_images(images: Images, stride: int, fill: float = 0.0) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """One (B, C, H, W) tensor, each image zero-padded bottom/right to the batch's largest size rounded up
    to ``stride``; and each image's own (h, w). (torchvision's GeneralizedRCNNTransform also resizes and
    normalises; here the dataset sized the images and the trunk normalises.)"""
    if isinstance(images, torch.Tensor) and images.dim() == 3:
        images = [images]
    sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    h, w = padded_size(sizes, stride)
    if isinstance(images, torch.Tensor) and images.shape[-2:] == (h, w):
        return images, sizes
    batch = images[0].new_full((len(images), images[0].shape[0], h, w), fill)
    for b, im in zip(batch, images, strict=True):
        b[:, : im.shape[-2], : im.shape[-1]].copy_(im)
    return batch, sizes


def pad_masks(masks: Images, size: tuple[int, int]) -> torch.Tensor:
    """Masks padded with the ignore index to ``size``, so padding never counts in the loss."""
    if isinstance(masks, torch.Tensor) and masks.shape[-2:] == size:
        return masks
    out = masks[0].new_full((len(masks), *size), IGNORE_INDEX)
    for o, m in zip(out, masks, strict=True):
        o[: m.shape[-2], : m.shape[-1]].copy_(m)
    return out


def group_by_size(images: Images) -> list[tuple[list[int], torch.Tensor | list[torch.Tensor]]]:
    """Indices and images of each image size in the batch: one group for a stacked tensor."""
    if isinstance(images, torch.Tensor):
        return [(list(range(images.shape[0])), images)]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.shape), []).append(i)
    return [(idx, torch.stack([images[i] for i in idx])) for idx in groups.values()]


# ---------------------------------------------------------------- backbone surgery


def dilate_stages(trunk: StagedNetwork, stages: list[str]) -> None:
    """Trade the stride of ``stages`` for dilation (DeepLab's output stride), keeping every weight.

    Each named stage stops downsampling and its k×k convolutions dilate ×2 per dilated stage so far,
    which works on any conv family (torchvision's ``replace_stride_with_dilation`` exists only for
    Bottleneck ResNets; BasicBlock nets and MobileNets have no such switch).
    """
    dilation = 1
    for name in stages:
        dilation *= 2
        for module in trunk.stages[name].modules():
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


def feature_trunk(backbone: StagedNetwork) -> StagedNetwork:
    """The backbone without its classification head (the last stage): the stages that output feature maps."""
    names = backbone.stage_names[:-1]
    return StagedNetwork({n: backbone.stages[n] for n in names}, backbone.normalize)


# ---------------------------------------------------------------- heads


class DetectionHead(nn.Module):
    """FPN over the trunk's stage outputs → RPN → RoI heads (torchvision's Faster R-CNN parts)."""

    def __init__(self, in_channels: list[int], num_classes: int, args: DetectionHeadArgs) -> None:
        super().__init__()
        levels = len(in_channels) + 1  # + the max-pooled level on top
        if len(args.anchor_sizes) != levels:
            raise ConfigError(f"head.anchor_sizes needs one size per FPN level: {levels} "
                              f"({len(in_channels)} stages + the pooled level), got {args.anchor_sizes}")
        c = args.fpn_channels
        self.fpn = FeaturePyramidNetwork(in_channels, c, extra_blocks=LastLevelMaxPool())
        anchors = AnchorGenerator(tuple((s,) for s in args.anchor_sizes), (tuple(args.aspect_ratios),) * levels)
        self.rpn = RegionProposalNetwork(
            anchors, RPNHead(c, anchors.num_anchors_per_location()[0]), fg_iou_thresh=0.7, bg_iou_thresh=0.3,
            batch_size_per_image=args.rpn_batch_size_per_image, positive_fraction=0.5,
            pre_nms_top_n={"training": args.proposals_train, "testing": args.proposals_test},
            post_nms_top_n={"training": args.proposals_train, "testing": args.proposals_test}, nms_thresh=0.7)
        pooler = MultiScaleRoIAlign([str(i) for i in range(len(in_channels))], output_size=7, sampling_ratio=2)
        self.roi_heads = RoIHeads(
            pooler, TwoMLPHead(c * 7 * 7, args.representation_size),
            FastRCNNPredictor(args.representation_size, num_classes), fg_iou_thresh=0.5, bg_iou_thresh=0.5,
            batch_size_per_image=args.box_batch_size_per_image, positive_fraction=0.25, bbox_reg_weights=None,
            score_thresh=args.score_threshold, nms_thresh=0.5, detections_per_img=args.detections_per_image)

    def forward(self, features: list[torch.Tensor], sizes: list[tuple[int, int]], padded: tuple[int, int],
                targets: list[dict] | None = None) -> tuple[list[dict], dict[str, torch.Tensor]]:
        maps = self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))
        # The RPN reads only the padded batch's shape from ImageList.tensors: a broadcast view costs nothing.
        images = ImageList(features[0].new_zeros(1, 1, 1, 1).expand(len(sizes), 1, *padded), sizes)
        proposals, rpn_losses = self.rpn(images, maps, targets)
        detections, box_losses = self.roi_heads(maps, proposals, sizes, targets)
        return detections, {**rpn_losses, **box_losses}


class SegmentationHead(nn.Module):
    """DeepLabv3's head (ASPP → 3×3 conv → classes) on the last stage, FCN auxiliary head on the one before."""

    def __init__(self, in_channels: list[int], num_classes: int, args: SegmentationHeadArgs) -> None:
        super().__init__()
        c = args.channels
        self.classifier = nn.Sequential(
            ASPP(in_channels[-1], list(args.atrous_rates), c), nn.Conv2d(c, c, 3, padding=1, bias=False),
            nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, num_classes, 1))
        self.aux = FCNHead(in_channels[-2], num_classes) if args.aux_weight > 0 else None
        self.aux_weight = args.aux_weight

    def forward(self, features: list[torch.Tensor], sizes: list[tuple[int, int]], padded: tuple[int, int],
                targets: Images | None = None) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        logits = F.interpolate(self.classifier(features[-1]), size=padded, mode="bilinear", align_corners=False)
        losses: dict[str, torch.Tensor] = {}
        if targets is not None:
            masks = pad_masks(targets, padded)
            losses["loss_seg"] = F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX)
            if self.aux is not None and self.training:
                aux = F.interpolate(self.aux(features[-2]), size=padded, mode="bilinear", align_corners=False)
                losses["loss_aux"] = self.aux_weight * F.cross_entropy(aux, masks, ignore_index=IGNORE_INDEX)
        if self.training:  # like torchvision's heads: losses only, no predictions to compute
            return [], losses
        return [lg[:, :h, :w].argmax(0) for lg, (h, w) in zip(logits, sizes, strict=True)], losses


HEADS: dict[str, type[nn.Module]] = {"detection": DetectionHead, "segmentation": SegmentationHead}


# ---------------------------------------------------------------- the model


class TaskModel(SplitModel):
    """trunk (stage outputs by name) → head. ``forward`` returns the task loss dict when given targets,
    else predictions: per image, ``{"boxes", "scores", "labels"}`` (xyxy pixels) or an (h, w) label map.

    As a :class:`SplitModel` (a student trunk), the device runs normalise → g_a and the server
    g_s → the later stages → the head.
    """

    def __init__(self, task: str, trunk: StagedNetwork | BottleneckClassifier, head: nn.Module,
                 levels: list[str], stride: int) -> None:
        super().__init__()
        self.task, self.trunk, self.head, self.levels, self.stride = task, trunk, head, list(levels), stride

    @property
    def is_split(self) -> bool:
        return isinstance(self.trunk, BottleneckClassifier)

    @property
    def coder(self):  # type: ignore[override]
        return self.trunk.coder

    def mobile_network(self) -> nn.Module:
        return self.trunk.mobile_network()

    def trunk_features(self, batch: torch.Tensor, *, quantized: bool = False
                       ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Every stage output of the trunk by name (the split point's included) and the latent's likelihoods."""
        if self.is_split:
            _, tapped, likelihoods = self.trunk(batch, quantized=quantized)
            return tapped, likelihoods
        _, tapped = self.trunk(batch, taps=self.trunk.stage_names)
        return tapped, {}

    def run_head(self, tapped: dict[str, torch.Tensor], sizes: list[tuple[int, int]], padded: tuple[int, int],
                 targets: Any = None) -> tuple[list, dict[str, torch.Tensor]]:
        return self.head([tapped[n] for n in self.levels], sizes, padded, targets)

    def run(self, images: Images, targets: Any = None, *, quantized: bool = False):
        """(predictions, task losses, stage outputs, likelihoods): what every training recipe needs."""
        batch, sizes = pad_images(images, self.stride)
        tapped, likelihoods = self.trunk_features(batch, quantized=quantized)
        predictions, losses = self.run_head(tapped, sizes, tuple(batch.shape[-2:]), targets)
        return predictions, losses, tapped, likelihoods

    def forward(self, images: Images, targets: Any = None):
        predictions, losses, _, _ = self.run(images, targets)
        return losses if targets is not None else predictions

    def server_forward_sized(self, y_hat: torch.Tensor, sizes: list[tuple[int, int]]) -> list:
        """The server side of a split trunk: decoded latent → predictions for images of these sizes."""
        tapped = self.trunk.decode_features(y_hat)
        padded = padded_size(sizes, self.stride)
        return self.run_head(tapped, sizes, padded)[0]


def build_task_model(task: str, backbone: StagedNetwork, num_classes: int, head_args: HeadArgs,
                     image_size: int) -> TaskModel:
    """The unsplit detector/segmenter on ``backbone``'s feature stages (its classification head dropped)."""
    trunk = feature_trunk(backbone)
    names = trunk.stage_names
    shapes = trunk.stage_shapes(image_size)
    if task == "segmentation":
        assert isinstance(head_args, SegmentationHeadArgs)
        strides = {n: image_size // shapes[n][-1] for n in names}
        dilate_stages(trunk, [n for n in names if strides[n] > head_args.output_stride])
        shapes = trunk.stage_shapes(image_size)
        levels = names[-2:]
    else:
        levels = names[1:]  # every stage after the stem: strides 4 … 32
    if any(len(shapes[n]) != 3 for n in levels):
        raise SplitbenchError(f"a {task} head needs feature maps from {levels}, got {[shapes[n] for n in levels]}")
    stride = max(image_size // shapes[n][-1] for n in names)
    head = HEADS[task]([shapes[n][0] for n in levels], num_classes, head_args)
    return TaskModel(task, trunk, head, levels, stride)


def split_task_model(teacher: TaskModel, trunk: BottleneckClassifier) -> TaskModel:
    """A student: ``trunk`` (a bottleneck in place of the teacher trunk's first stages) with the teacher's head."""
    missing = [n for n in teacher.levels if n not in [trunk.split_after, *trunk.tail_stages]]
    if missing:
        raise SplitbenchError(f"the head reads {missing}, which the split at {trunk.split_after} moves to the device; "
                              f"split at or before {teacher.levels[0]}")
    return TaskModel(teacher.task, trunk, copy.deepcopy(teacher.head), teacher.levels, teacher.stride)
