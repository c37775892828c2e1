"""Task heads: modules that read named feature levels of a trunk and return predictions and loss terms.

One interface for every task, so a model is a trunk plus heads and the training recipes never ask
which task they hold (timm's ``forward_head``, torchvision's backbone + heads):

* :class:`ClassificationHead`: the backbone's own classifier stage (pool + fc) on the last level, CE;
* :class:`DetectionHead`: torchvision's Faster R-CNN parts (FPN, RPN, RoI heads) on one level per stride;
* :class:`SegmentationHead`: DeepLabv3 (ASPP on the last level, an FCN auxiliary head on the one before).

Each head class picks its levels from the trunk's level shapes (:meth:`Head.select_levels`), so the
same head serves an unsplit trunk, a student whose bottleneck feeds the first level, and a shared
multi-task body.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import Any, ClassVar, Literal

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
from splitbench.models.images import Size

IGNORE_INDEX = 255  # segmentation pixels that count for neither loss nor metric (VOC's object borders)
Shapes = dict[str, tuple[int, ...]]  # feature level -> output shape of one image (C, H, W), or (C,)


class HeadArgs(BaseModel):
    """A head's settings (the config's ``head:`` section), validated like every other key."""

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


def strides(shapes: Shapes, image_size: int) -> dict[str, int]:
    """Downsampling factor of every feature-map level (vector levels are left out)."""
    return {name: image_size // shape[-1] for name, shape in shapes.items() if len(shape) == 3}


class Head(nn.Module, ABC):
    """Reads ``levels`` of a trunk's features; returns (predictions, named loss terms).

    Predictions are a tensor with one row per image, or a list with one entry per image. Loss terms
    are returned when targets are given; their sum is the task loss.
    """

    needs_image_size: ClassVar[bool] = False  # the server needs each image's (h, w) (boxes, masks)
    distills: ClassVar[bool] = False  # predictions are class logits a teacher's can be distilled into
    uses_backbone_classifier: ClassVar[bool] = False  # the head is the backbone's own classifier stage

    def __init__(self, levels: list[str]) -> None:
        super().__init__()
        self.levels = list(levels)

    @classmethod
    @abstractmethod
    def select_levels(cls, shapes: Shapes, image_size: int) -> list[str]:
        """The levels this head reads, out of a trunk's (in order)."""

    @classmethod
    def stages_to_dilate(cls, shapes: Shapes, args: HeadArgs | None, image_size: int) -> list[str]:
        """Trunk stages whose stride this head wants traded for dilation (DeepLab's output stride)."""
        return []

    @classmethod
    def build(cls, shapes: Shapes, num_classes: int, args: HeadArgs | None, image_size: int,
              classifier: nn.Module | None = None) -> Head:
        """This head on a trunk whose levels have ``shapes``; ``classifier`` is the backbone's own classifier
        stage (what the classification head is; the other heads are built fresh and ignore it)."""
        levels = cls.select_levels(shapes, image_size)
        if not levels or any(len(shapes[n]) != 3 for n in levels):
            raise SplitbenchError(f"a {cls.__name__} needs feature maps, got {[shapes[n] for n in levels]}")
        return cls(levels, [shapes[n][0] for n in levels], num_classes, args)  # type: ignore[call-arg]

    @abstractmethod
    def forward(self, features: dict[str, torch.Tensor], sizes: list[Size], padded: Size,
                targets: Any = None) -> tuple[Any, dict[str, torch.Tensor]]: ...

    def batch_metrics(self, predictions: Any, targets: Any) -> dict[str, torch.Tensor]:
        """Cheap metrics worth logging during training (accuracy); none by default."""
        return {}

    def answer(self, prediction: Any, top_k: int = 5) -> dict[str, Any]:
        """One image's prediction (a row or an entry of this head's predictions) as plain JSON types, for a
        server's answer; each head kind says what its answer holds."""
        raise SplitbenchError(f"a {type(self).__name__} has no JSON answer yet")


class ClassificationHead(Head):
    """The backbone's own classifier stage (global pool + fc) on the last level; cross-entropy."""

    distills = True
    uses_backbone_classifier = True

    def __init__(self, levels: list[str], layers: nn.Module) -> None:
        super().__init__(levels)
        self.layers = layers

    @classmethod
    def select_levels(cls, shapes: Shapes, image_size: int) -> list[str]:
        return [list(shapes)[-1]]

    @classmethod
    def build(cls, shapes, num_classes, args, image_size, classifier=None) -> ClassificationHead:
        if classifier is None:
            raise SplitbenchError("a classification head is a backbone's own classifier stage; none was given")
        return cls(cls.select_levels(shapes, image_size), classifier)

    def forward(self, features, sizes, padded, targets=None):
        logits = self.layers(features[self.levels[0]])
        losses = {} if targets is None else {"ce": F.cross_entropy(logits, targets)}
        return logits, losses

    def batch_metrics(self, predictions: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"acc": (predictions.detach().argmax(1) == targets).float().mean()}

    def answer(self, prediction: torch.Tensor, top_k: int = 5) -> dict[str, Any]:
        """The top-k classes by softmax score (ties: the lower class first, as ``argmax``)."""
        scores, classes = prediction.detach().float().softmax(-1).sort(descending=True, stable=True)
        return {"classes": classes[:top_k].tolist(), "scores": scores[:top_k].tolist()}


class DetectionHead(Head):
    """FPN over one level per stride from 4 on (C2-C5) → RPN → RoI heads (torchvision's Faster R-CNN parts)."""

    needs_image_size = True

    def __init__(self, levels: list[str], in_channels: list[int], num_classes: int, args: DetectionHeadArgs) -> None:
        super().__init__(levels)
        count = len(in_channels) + 1  # + the max-pooled level on top
        if len(args.anchor_sizes) != count:
            raise ConfigError(f"head.anchor_sizes needs one size per FPN level: {count} "
                              f"({len(in_channels)} stages + the pooled level), got {args.anchor_sizes}")
        c = args.fpn_channels
        self.fpn = FeaturePyramidNetwork(in_channels, c, extra_blocks=LastLevelMaxPool())
        anchors = AnchorGenerator(tuple((s,) for s in args.anchor_sizes), (tuple(args.aspect_ratios),) * count)
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

    @classmethod
    def select_levels(cls, shapes: Shapes, image_size: int) -> list[str]:
        """The last level at each stride of 4 and more (ResNet: layer1-4), as torchvision's FPN backbones."""
        last_at: dict[int, str] = {}
        for name, stride in strides(shapes, image_size).items():
            if stride >= 4:
                last_at[stride] = name
        return [last_at[s] for s in sorted(last_at)]

    def forward(self, features, sizes, padded, targets=None):
        maps = self.fpn(OrderedDict((str(i), features[n]) for i, n in enumerate(self.levels)))
        first = maps["0"]
        # The RPN reads only the padded batch's shape from ImageList.tensors: a broadcast view costs nothing.
        images = ImageList(first.new_zeros(1, 1, 1, 1).expand(len(sizes), 1, *padded), sizes)
        proposals, rpn_losses = self.rpn(images, maps, targets)
        detections, box_losses = self.roi_heads(maps, proposals, sizes, targets)
        return detections, {**rpn_losses, **box_losses}

    def answer(self, prediction: dict[str, torch.Tensor], top_k: int = 5) -> dict[str, Any]:
        """Every detection (torchvision keeps them in descending score): boxes (x1, y1, x2, y2) in pixels."""
        return {"boxes": prediction["boxes"].detach().float().tolist(), "labels": prediction["labels"].tolist(),
                "scores": prediction["scores"].detach().float().tolist()}


def pad_masks(masks: torch.Tensor | list[torch.Tensor], size: Size) -> torch.Tensor:
    """Masks padded with the ignore index to ``size``, so padding never counts in the loss."""
    if isinstance(masks, torch.Tensor) and masks.shape[-2:] == size:
        return masks
    out = masks[0].new_full((len(masks), *size), IGNORE_INDEX)
    for o, m in zip(out, masks, strict=True):
        o[: m.shape[-2], : m.shape[-1]].copy_(m)
    return out


class SegmentationHead(Head):
    """DeepLabv3's head (ASPP → 3×3 conv → classes) on the last level, FCN auxiliary head on the one before."""

    needs_image_size = True

    def __init__(self, levels: list[str], in_channels: list[int], num_classes: int,
                 args: SegmentationHeadArgs) -> None:
        super().__init__(levels)
        c = args.channels
        self.classifier = nn.Sequential(
            ASPP(in_channels[-1], list(args.atrous_rates), c), nn.Conv2d(c, c, 3, padding=1, bias=False),
            nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, num_classes, 1))
        self.aux = FCNHead(in_channels[-2], num_classes) if args.aux_weight > 0 else None
        self.aux_weight = args.aux_weight

    @classmethod
    def select_levels(cls, shapes: Shapes, image_size: int) -> list[str]:
        return list(strides(shapes, image_size))[-2:]

    @classmethod
    def stages_to_dilate(cls, shapes: Shapes, args: SegmentationHeadArgs, image_size: int) -> list[str]:
        return [name for name, stride in strides(shapes, image_size).items() if stride > args.output_stride]

    def forward(self, features, sizes, padded, targets=None):
        last, before = (features[n] for n in self.levels[::-1])
        logits = F.interpolate(self.classifier(last), size=padded, mode="bilinear", align_corners=False)
        losses: dict[str, torch.Tensor] = {}
        if targets is not None:
            masks = pad_masks(targets, padded)
            losses["loss_seg"] = F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX)
            if self.aux is not None and self.training:
                aux = F.interpolate(self.aux(before), size=padded, mode="bilinear", align_corners=False)
                losses["loss_aux"] = self.aux_weight * F.cross_entropy(aux, masks, ignore_index=IGNORE_INDEX)
        if self.training:  # like torchvision's heads: losses only, no predictions to compute
            return [], losses
        return [lg[:, :h, :w].argmax(0) for lg, (h, w) in zip(logits, sizes, strict=True)], losses

    def answer(self, prediction: torch.Tensor, top_k: int = 5) -> dict[str, Any]:
        """The class mask run-length coded in row-major order ([class, run length] pairs): a mask is mostly
        long runs, so this is far shorter than one number per pixel."""
        flat = prediction.flatten()
        change = torch.nonzero(flat[1:] != flat[:-1]).flatten() + 1
        starts = torch.cat([change.new_zeros(1), change])
        lengths = torch.diff(torch.cat([starts, change.new_tensor([flat.numel()])]))
        return {"size": list(prediction.shape), "runs": torch.stack([flat[starts], lengths], 1).tolist()}
