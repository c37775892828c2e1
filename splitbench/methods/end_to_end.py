"""End-to-End (Singh et al., ICIP 2020): the factorized-prior bottleneck and the whole network trained from
the task loss alone, task + β·bits per image, in one stage; the layers after the split start from the
teacher's. β multiplies the mean bits per image (see :class:`~splitbench.methods.base.RateArgs`); the
published β ∈ {1.28e-8 … 3.2768e-6} go with that (Entropic Student's β multiplies bits summed over the batch).
"""

from __future__ import annotations

from splitbench.methods.base import BottleneckMethod, RateArgs
from splitbench.models.builders import BottleneckArgs
from splitbench.training.recipes import TaskRateTraining


class EndToEndArgs(BottleneckArgs, RateArgs):
    pass


class EndToEnd(BottleneckMethod, name="end_to_end", args=EndToEndArgs, stages=("train",), variant="fp",
               rate=("beta",)):
    """End-to-End: factorized-prior bottleneck and the whole network trained with the task loss + β·bits per image."""

    def recipe(self, ctx, args: EndToEndArgs, model, teacher):
        return TaskRateTraining(model, args.beta, args.rate_warmup)
