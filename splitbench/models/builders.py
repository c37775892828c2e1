"""Networks built from backbones and from other networks, shared by every method:

* :func:`unsplit_network`: a backbone's feature stages under a task head (the teacher of every task);
* :func:`student`: a bottleneck in place of a teacher's stages up to the split point, under copies of
  the teacher's heads (Entropic Student, End-to-End, CR+BQ, EB fine-tuning);
* :func:`stage_bottleneck`: the teacher's own stages with a coder after them (EB fine-tuning; the
  learned layouts are in :mod:`splitbench.models.bottlenecks`);
* :func:`head_on_trunk` and :func:`compose`: heads trained on a shared, frozen trunk, and the
  multi-task model joining them.
"""

from __future__ import annotations

import copy

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn

from splitbench.compression.latent_coders import FactorizedPrior, LatentCoder
from splitbench.config import added_later
from splitbench.errors import CheckpointError, ConfigError
from splitbench.models.bottlenecks import Bottleneck, BottleneckShapeError, gdn_bottleneck
from splitbench.models.heads import ClassificationHead, Head, HeadArgs, strides
from splitbench.models.network import CLASSIFIER, SplitNetwork
from splitbench.models.staged import StagedNetwork, dilate_stages
from splitbench.models.trunks import BottleneckTrunk, FeatureTrunk


class BottleneckArgs(BaseModel):
    """The learned bottleneck shared by Entropic Student, End-to-End and CR+BQ (``method_args``)."""

    model_config = ConfigDict(extra="forbid")

    split_after: str = "layer1"
    channels: int = Field(24, ge=1, description="latent channels")
    encoder_channels: list[PositiveInt] | None = Field(None, description="default: 96, 48, then 48 per extra stride")
    decoder_channels: list[PositiveInt] | None = Field(None, description="default: 2×, 1× the split point's channels")
    simplified_gdn: bool = Field(False, description="GDN1 (|x|, no square root) as in sc2bench, instead of GDN")
    conv_bias: bool = added_later(False, description="biases on the bottleneck's convs (published: none; see "
                                               "gdn_bottleneck for why small datasets want them)")

    def coder(self) -> LatentCoder:
        """The latent coder these settings describe (a factorized prior unless a method says otherwise)."""
        return FactorizedPrior(self.channels)


def unsplit_network(backbone: StagedNetwork, task: str, head: type[Head], num_classes: int,
                    head_args: HeadArgs | None, image_size: int) -> SplitNetwork:
    """``backbone``'s feature stages under a ``head`` for ``task`` (sharing the backbone's modules). The
    backbone's last stage is its classifier: the classification head, dropped for the other tasks."""
    trunk = FeatureTrunk.of(backbone)
    dilate_stages(trunk, head.stages_to_dilate(trunk.stage_shapes(image_size), head_args, image_size))
    shapes = trunk.level_shapes(image_size)
    classifier = backbone.stages[backbone.stage_names[-1]]
    built = head.build(shapes, num_classes, head_args, image_size, classifier)
    return SplitNetwork(trunk, {task: built}, max(strides(shapes, image_size).values()))


def classifier_network(backbone: StagedNetwork, image_size: int) -> SplitNetwork:
    """A classifier backbone as a network: its feature stages and its own classifier stage as the head."""
    return unsplit_network(backbone, CLASSIFIER, ClassificationHead, 0, None, image_size)


def student(teacher: SplitNetwork, split_after: str, bottleneck: Bottleneck, image_size: int) -> SplitNetwork:
    """``bottleneck`` in place of the teacher trunk's stages up to ``split_after``, its decoder feeding the
    level the teacher's split point fed, under copies of the teacher's heads. The teacher is not changed."""
    trunk: FeatureTrunk = teacher.trunk  # type: ignore[assignment]
    return SplitNetwork(BottleneckTrunk(trunk, split_after, bottleneck, image_size),
                        copy.deepcopy(dict(teacher.heads)), teacher.stride)


def split_shape(teacher: SplitNetwork, split_after: str, image_size: int) -> tuple[int, ...]:
    """The teacher's output shape at the split point (one image), checking the split point first."""
    trunk: FeatureTrunk = teacher.trunk  # type: ignore[assignment]
    trunk.check_split_point(split_after)
    return trunk.stage_shapes(image_size)[split_after]


def bottleneck_student(teacher: SplitNetwork, args: BottleneckArgs, image_size: int,
                       coder: LatentCoder | None = None) -> SplitNetwork:
    """The GDN bottleneck ``args`` describe (with ``coder``, default ``args.coder()``) in a student of ``teacher``."""
    shape = split_shape(teacher, args.split_after, image_size)
    bottleneck = gdn_bottleneck(shape, image_size, coder or args.coder(), encoder_channels=args.encoder_channels,
                                decoder_channels=args.decoder_channels, simplified_gdn=args.simplified_gdn,
                                conv_bias=args.conv_bias)
    return student(teacher, args.split_after, bottleneck, image_size)


def stage_bottleneck(teacher: SplitNetwork, split_after: str, image_size: int, coder: LatentCoder) -> Bottleneck:
    """The teacher's own stages up to ``split_after`` as the encoder and ``coder`` on their output, no decoder
    (EB fine-tuning). A pooled (C,) output is coded as (C, 1, 1), so every coder sees a feature map."""
    shape = split_shape(teacher, split_after, image_size)
    if shape[0] != coder.channels:
        raise BottleneckShapeError(f"{split_after} outputs {shape}; the coder has {coder.channels} channels")
    trunk: FeatureTrunk = teacher.trunk  # type: ignore[assignment]
    names = trunk.stage_names[: trunk.stage_names.index(split_after) + 1]
    encoder: nn.Module = StagedNetwork({n: copy.deepcopy(trunk.stages[n]) for n in names}, nn.Identity())
    decoder: nn.Module = nn.Identity()
    if len(shape) == 1:
        encoder, decoder = nn.Sequential(encoder, nn.Unflatten(1, (shape[0], 1, 1))), nn.Flatten(1)
    elif len(shape) != 3:
        raise BottleneckShapeError(f"cannot code the {shape} output of {split_after}: expected (C,) or (C, H, W)")
    return Bottleneck(encoder, coder, decoder)


def head_on_trunk(body: SplitNetwork, task: str, head: type[Head], num_classes: int, head_args: HeadArgs | None,
                  image_size: int) -> SplitNetwork:
    """A new ``head`` reading a shared body's levels; the body's trunk is shared (not copied) and not dilated."""
    shapes = body.trunk.level_shapes(image_size)
    stride = max(strides(shapes, image_size).values())
    if head.stages_to_dilate(shapes, head_args, image_size):
        raise ConfigError(f"head.output_stride: a shared body is not dilated, so a head on it runs at stride "
                          f"{stride}; set head.output_stride: {stride}")
    return SplitNetwork(body.trunk, {task: head.build(shapes, num_classes, head_args, image_size)},
                        stride)


def compose(body: SplitNetwork, heads: dict[str, SplitNetwork], names: dict[str, str]) -> SplitNetwork:
    """Join the heads of runs trained on a shared body (``names``: task → run) onto that body. Every run must hold
    the body's trunk weights exactly, else its head was trained on another encoder and the error names it."""
    reference = body.trunk.state_dict()
    for task, run in heads.items():
        theirs = run.trunk.state_dict()
        if theirs.keys() != reference.keys():
            raise CheckpointError(f"run {names[task]}: its body has other layers than the shared body")
        for key, value in reference.items():
            if not torch.equal(value.to(theirs[key].device), theirs[key]):
                raise CheckpointError(f"run {names[task]} was trained on another encoder/body: trunk.{key} differs "
                                      "from the shared body's; retrain that head on this body")
    joined = {**body.heads, **{task: run.heads[task] for task, run in heads.items()}}
    return SplitNetwork(body.trunk, joined, max(run.stride for run in [body, *heads.values()]))
