"""The unsplit model: trained on its task, it is the teacher of every other method.

For classification it is the backbone with its own classifier head; for detection and segmentation,
the backbone's feature stages under a Faster R-CNN or DeepLabv3 head. Evaluated on raw 8-bit pixels.
"""

from __future__ import annotations

from splitbench.codecs.raw import RawPixels
from splitbench.methods.base import BuildContext, Method
from splitbench.pipelines.codec import InputCodecPipeline
from splitbench.training.recipes import TaskTraining


class Classifier(Method, name="classifier", stages=("train",), tasks=("classification", "detection", "segmentation")):
    """The unsplit model (the teacher), trained on its task loss; evaluated on raw 8-bit pixels."""

    def needs_training(self, config) -> bool:
        """A pretrained or user-weights backbone with no training stages is evaluated as loaded."""
        b = config.backbone
        return bool(config.train.stages) or not (b.pretrained or b.weights)

    def build(self, ctx: BuildContext, args, teacher):
        return ctx.unsplit_network()

    def recipe(self, ctx, args, model, teacher):
        return TaskTraining(model)

    def pipeline(self, ctx, args, model, teacher):
        return InputCodecPipeline(RawPixels(), model if model is not None else self.build(ctx, args, None), ctx.device)
