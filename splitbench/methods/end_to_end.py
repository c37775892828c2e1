"""End-to-End (Singh et al., ICIP 2020): the factorized-prior bottleneck and the whole network trained from
the task loss alone, task + β·bits per image, in one stage; the layers after the split start from the
teacher's. β multiplies the mean bits per image (see :class:`~splitbench.methods.base.RateArgs`); the
published β ∈ {1.28e-8 … 3.2768e-6} go with that (Entropic Student's β multiplies bits summed over the batch).
"""

from __future__ import annotations

from typing import ClassVar

from splitbench.methods.base import Method, RateArgs, register_method
from splitbench.models.builders import BottleneckArgs, bottleneck_student
from splitbench.training.recipes import TaskRateTraining


class EndToEndArgs(BottleneckArgs, RateArgs):
    pass


@register_method
class EndToEnd(Method):
    """End-to-End: factorized-prior bottleneck and the whole network trained with the task loss + β·bits per image."""

    name = "end_to_end"
    Args: ClassVar = EndToEndArgs
    stages = ("train",)
    teacher = "build"  # the layers after the split start from the teacher's
    tasks = ("classification", "detection", "segmentation")
    variant_name = "fp"
    rate_fields = ("beta",)

    def build(self, ctx, args: EndToEndArgs, teacher):
        return bottleneck_student(teacher, args, ctx.image_size)

    def recipe(self, ctx, args: EndToEndArgs, model, teacher):
        return TaskRateTraining(model, args.beta)
