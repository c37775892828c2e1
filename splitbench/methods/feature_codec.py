"""Feature compression with a standard codec: the unmodified teacher, split at a named stage.

The device runs the teacher up to ``split_after`` and codes the feature map with
:class:`~splitbench.codecs.FeatureCodec` (8-bit min–max per channel group, the ranges inside the
bitstream); the server decodes it and runs the remaining stages. Nothing is trained, so this is
the baseline a learned bottleneck at the same split point has to beat.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from splitbench.codecs import FeatureCodec, get_codec
from splitbench.complexity import count_macs
from splitbench.methods.base import BuildContext, Method, MethodArgs, register_method
from splitbench.methods.input_codec import CodecOption, CodecPipeline, check_codec, codec_variant, quality_param
from splitbench.models.staged import StagedNetwork


def head_of(network: StagedNetwork, split_after: str) -> nn.Sequential:
    """The stages a device runs, up to and including ``split_after`` (shares the network's modules)."""
    network.check_split_point(split_after)
    names = network.stage_names
    return nn.Sequential(network.normalize, *(network.stages[n] for n in names[: names.index(split_after) + 1]))


class FeatureCodecPipeline(CodecPipeline):
    """Teacher head → feature codec (pooled like the input codecs) → teacher tail."""

    def __init__(self, codec: FeatureCodec, model: StagedNetwork, split_after: str, device: torch.device,
                 workers: int | None = 1) -> None:
        super().__init__(codec, workers)
        self.model = model.to(device).eval()
        self.split_after = split_after
        self.head = head_of(self.model, split_after)
        self.resume_at = self.model.stages_after(split_after)[0]
        self.device = device

    @torch.no_grad()
    def mobile_forward(self, images: torch.Tensor) -> list[np.ndarray]:
        features = self.head(images.to(self.device)).float().cpu().numpy()
        return list(features)

    def decode(self, payloads: list[bytes]) -> torch.Tensor:
        return torch.from_numpy(np.stack(self.decode_samples(payloads))).to(self.device)

    @torch.no_grad()
    def server_forward(self, decoded: torch.Tensor) -> torch.Tensor:
        return self.model(decoded, start=self.resume_at)

    def mobile_state(self) -> dict[str, torch.Tensor]:
        state = dict(self.head.named_parameters())
        state.update(self.head.named_buffers())
        return state

    def mobile_params(self) -> int:
        return sum(p.numel() for p in self.head.parameters())

    def mobile_macs(self, images: torch.Tensor) -> int:
        return count_macs(self.head, images.to(self.device))

    def describe_runtime(self) -> dict:
        return {**super().describe_runtime(), "split_after": self.split_after}


class FeatureCodecArgs(MethodArgs):
    split_after: str = "layer1"
    codec: str = "jpeg"
    quality: float = Field(75, ge=0)
    channels_per_group: int | None = Field(1, ge=1, description="channels sharing one min–max range; null = all")
    param_dtype: Literal["float16", "float32"] = "float16"
    options: dict[str, CodecOption] = Field({}, description="codec-specific settings, e.g. {preset: medium} for vvc")

    @model_validator(mode="after")
    def _known_codec(self) -> FeatureCodecArgs:
        check_codec(self.codec, self.options)
        return self


@register_method
class FeatureCodecMethod(Method):
    """Feature compression: the teacher split at a stage, its features coded with a standard image codec."""

    name = "feature_codec"
    Args: ClassVar = FeatureCodecArgs
    server_is_teacher = True

    def variant(self, args: FeatureCodecArgs) -> str:
        return codec_variant(args.codec, args.options, args.split_after)

    def rate_param(self, args: FeatureCodecArgs) -> dict:
        return quality_param(args.quality)

    def pipeline(self, ctx: BuildContext, args: FeatureCodecArgs, model, teacher) -> FeatureCodecPipeline:
        assert teacher is not None
        image_codec = get_codec(args.codec, args.quality, **args.options)
        codec = FeatureCodec(image_codec, args.channels_per_group, args.param_dtype)
        return FeatureCodecPipeline(codec, teacher, args.split_after, ctx.device, ctx.config.eval.workers)
