"""Multi-task supervised compression (WACV 2025): one encoder and one bitstream serve every task.

Recipe: the body is an Entropic Student classifier, trained as usual (``entropic_student``, its run
``entropic_student-<variant>-<backbone>-beta<β>`` in the same --out). ``multitask_head`` then trains
one detection or segmentation head on that body, frozen, on the test-time quantized latent.
Segmentation can take two runs, as published: ``pretrain: true`` on the detection dataset's
masks (COCO), then ``from_pretrain: true`` on the segmentation set (VOC). ``multitask`` trains
nothing: it composes the body and the head runs of the same β (checking they share the body's
weights) and evaluates every task from the same bitstream.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from splitbench.errors import ConfigError
from splitbench.methods.base import BuildContext, Method, MethodArgs, format_run_name
from splitbench.models.builders import compose, head_on_trunk
from splitbench.training.recipes import TaskTraining

HEAD_TASKS = ("detection", "segmentation")


class BodyArgs(MethodArgs):
    """Which trained Entropic Student is the shared body (its β and variant; backbone from the config)."""

    beta: float = Field(gt=0, description="the body's rate weight: picks the Entropic Student run")
    variant: Literal["fp", "shp", "mshp"] = "fp"

    def body_run(self, backbone: str) -> str:
        return format_run_name("entropic_student", self.variant, backbone, "classification", {"beta": self.beta})


def load_body(ctx: BuildContext, args: BodyArgs):
    run = args.body_run(ctx.config.backbone.name)
    config, body = ctx.run(run)
    if (config.method, config.task) != ("entropic_student", "classification"):
        raise ConfigError(f"run {run} is not an Entropic Student classifier")
    return body


class MultiTaskHeadArgs(BodyArgs):
    pretrain: bool = Field(False, description="this run is a first stage (e.g. COCO's masks): its run name ends "
                                              "the variant with -pretrain and `multitask` does not use it")
    from_pretrain: bool = Field(False, description="start the head from the -pretrain run of the same beta "
                                                   "(the published two-stage segmentation recipe)")


class MultiTaskHead(Method, name="multitask_head", args=MultiTaskHeadArgs, stages=("train",), tasks=HEAD_TASKS,
                    rate=("beta",)):
    """A detection or segmentation head trained on a frozen Entropic Student body (for ``multitask``)."""

    def variant(self, args: MultiTaskHeadArgs) -> str:
        return f"{args.variant}-pretrain" if args.pretrain else args.variant

    def runs_needed(self, config, args: MultiTaskHeadArgs) -> dict[str, str]:
        needed = {args.body_run(config.backbone.name): "body"}
        if args.from_pretrain:
            needed[self.pretrain_run(config, args)] = "pretrain"
        return needed

    def pretrain_run(self, config, args: MultiTaskHeadArgs) -> str:
        return format_run_name(self.name, f"{args.variant}-pretrain", config.backbone.name, config.task,
                               self.rate_param(args))

    def build(self, ctx: BuildContext, args: MultiTaskHeadArgs, teacher):
        task = ctx.config.task_spec
        return head_on_trunk(load_body(ctx, args), task.name, task.head, ctx.num_classes, ctx.config.head_args(),
                             ctx.image_size)

    def recipe(self, ctx, args: MultiTaskHeadArgs, model, teacher):
        if args.from_pretrain:  # only when training starts: a resumed run's checkpoint replaces these weights
            task = ctx.config.task
            _, first = ctx.run(self.pretrain_run(ctx.config, args))
            model.heads[task].load_state_dict(first.heads[task].state_dict())
        return TaskTraining(model, frozen=[model.trunk], quantized=True)


class MultiTaskArgs(BodyArgs):
    heads: list[Literal["detection", "segmentation"]] = Field(
        list(HEAD_TASKS), min_length=1, description="the multitask_head runs (same β) joined to the body")


class MultiTask(Method, name="multitask", args=MultiTaskArgs, tasks=("multitask",), variant_field="variant",
                rate=("beta",)):
    """One encoder, one bitstream: the shared body + its heads, every task evaluated from the same bytes."""

    composed = True  # its folder (config only) is what `splitbench export` and `serve` take

    def head_runs(self, backbone: str, args: MultiTaskArgs) -> dict[str, str]:
        """task -> the multitask_head run (same β and variant) that serves it."""
        return {task: format_run_name("multitask_head", args.variant, backbone, task, {"beta": args.beta})
                for task in args.heads}

    def runs_needed(self, config, args: MultiTaskArgs) -> dict[str, str]:
        return {args.body_run(config.backbone.name): "body",
                **{run: "head" for run in self.head_runs(config.backbone.name, args).values()}}

    def pipeline(self, ctx, args: MultiTaskArgs, model, teacher):
        body = load_body(ctx, args)
        names = self.head_runs(ctx.config.backbone.name, args)
        heads = {task: ctx.run(run)[1] for task, run in names.items()}
        return ctx.learned_pipeline(compose(body, heads, names))
