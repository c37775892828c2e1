"""Entropic Student (Matsubara et al., WACV 2022): a distilled bottleneck with a learned entropy model.

Variants by entropy model: ``fp`` (factorized prior), ``shp`` (scale hyperprior), ``mshp``
(mean-scale hyperprior; z has ``hyper_channels`` channels, 16 as published). Two stages
(:class:`~splitbench.training.recipes.EntropicStudentTraining`): ``bottleneck`` distils the teacher's
features from the split point on with β·bits (y and z, summed over the batch); ``tail`` trains the
later stages and heads on the test-time quantized latent, 0.5·task + 0.5·KL for a classifier.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from splitbench.compression.latent_coders import FactorizedPrior, LatentCoder, MeanScaleHyperprior, ScaleHyperprior
from splitbench.methods.base import RATE_WARMUP, BottleneckMethod, DistillArgs, added_later
from splitbench.models.builders import BottleneckArgs
from splitbench.training.recipes import EntropicStudentTraining

CODERS = {"shp": ScaleHyperprior, "mshp": MeanScaleHyperprior}


class EntropicStudentArgs(BottleneckArgs, DistillArgs):
    variant: Literal["fp", "shp", "mshp"] = "fp"
    beta: float = Field(gt=0, description="rate weight on bits (y + z) summed over the batch")
    hyper_channels: int = Field(16, ge=1, description="channels of the hyper-latent z (shp, mshp)")
    kd_temperature: float = Field(1.0, gt=0)
    kd_weight: float = Field(0.5, ge=0, le=1, description="weight of KL; the task loss gets 1 − kd_weight")
    rate_warmup: float = added_later(0.0, ge=0, le=1, description=RATE_WARMUP + ", in stage 1")

    def coder(self) -> LatentCoder:
        if self.variant == "fp":
            return FactorizedPrior(self.channels)
        return CODERS[self.variant](self.channels, self.hyper_channels)


class EntropicStudent(BottleneckMethod, name="entropic_student", args=EntropicStudentArgs,
                      stages=("bottleneck", "tail"), variant_field="variant", rate=("beta",)):
    """Entropic Student: distilled bottleneck + entropy model (fp, shp, mshp), two training stages."""

    def recipe(self, ctx, args: EntropicStudentArgs, model, teacher):
        return EntropicStudentTraining(model, teacher, args.beta, args.kd_weight, args.kd_temperature, args.distill,
                                       args.rate_warmup)
