"""Every method's training recipe, stage by stage: exactly the parameters the published recipe trains are
trainable (the rest, and the teacher, are frozen, BatchNorm statistics included), and a few optimizer steps
on one batch lower the stage's loss."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_raw
from test_tasks import task_raw

from splitbench.config import StageConfig
from splitbench.experiment import validate
from splitbench.runs import Run, train_experiment
from splitbench.training.trainer import _optimizer

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
ALL = ("trunk.", "heads.")
BOTTLENECK = ("trunk.bottleneck.",)
TAIL = ("trunk.bottleneck.decoder.", "trunk.tail.", "heads.")
ES = {"bottleneck": BOTTLENECK, "tail": TAIL}
ADAM = {"optimizer": {"name": "adam", "lr": 1e-3}}
# case: (method, method_args, task, trained prefixes per stage)
CASES = {
    "classifier": ("classifier", {}, "classification", {"train": ALL}),
    "entropic_student": ("entropic_student", {"beta": 0.1, "channels": 8}, "classification", ES),
    "entropic_student-mshp": ("entropic_student", {"beta": 0.1, "channels": 8, "variant": "mshp",
                                                   "hyper_channels": 4}, "classification", ES),
    "entropic_student-detection": ("entropic_student", {"beta": 0.1, "channels": 8}, "detection", ES),
    "end_to_end": ("end_to_end", {"beta": 1e-3, "channels": 8}, "classification", {"train": ALL}),
    "cr_bq": ("cr_bq", {"channels": 2}, "classification", {"bottleneck": BOTTLENECK}),
    "eb_finetune": ("eb_finetune", {"beta": 1e-3, "split_after": "layer2"}, "classification", {"train": ALL}),
    "neural_codec": ("neural_codec", {"arch": "mbt2018-mean", "N": 8, "M": 12, "lmbda": 0.01}, "classification",
                     {"rate_distortion": ("",)}),
    "multitask_head": ("multitask_head", {"beta": 0.1}, "detection", {"train": ("heads.",)}),
}


@pytest.fixture(scope="module")
def recipes_out(tmp_path_factory, trained_teacher) -> Path:
    """The session's teacher, a detector trained from it, and an Entropic Student body (for the multi-task head)."""
    folder = tmp_path_factory.mktemp("recipes")
    shutil.copytree(trained_teacher, folder, dirs_exist_ok=True)
    train_experiment(validate(task_raw("detection")), folder, progress=False)
    train_experiment(validate(tiny_raw("entropic_student")), folder, progress=False)
    return folder


def recipe(case: str, out: Path):
    method, args, task, stages = CASES[case]
    raw = task_raw(task, method) if task != "classification" else tiny_raw(method)
    raw["method_args"] = args
    raw["train"]["stages"] = [{"name": s, "epochs": 1, **ADAM} for s in stages]
    config = validate(raw)
    run = Run(config, out)
    ctx = run.context(CPU)
    teacher = run.teacher(CPU) if config.method_spec.teacher == "build" else None
    torch.manual_seed(0)
    model = config.method_spec.build(ctx, config.args(), teacher)
    return config, run, config.method_spec.recipe(ctx, config.args(), model, teacher), stages


def batch(run: Run, size: int = 8):
    dataset = run.dataset("train", 32, train=False)
    items = [dataset[i] for i in range(size)]
    collate = run.config.task_spec.collate or torch.utils.data.default_collate
    return collate(items)


@pytest.mark.parametrize("case", list(CASES))
def test_each_stage_trains_what_the_recipe_says_and_lowers_its_loss(case, recipes_out):
    config, run, module, stages = recipe(case, recipes_out)
    images, targets = batch(run)
    names = dict(module.model.named_parameters())
    for stage, trained in stages.items():
        module.set_stage(stage)
        trainable = {n for n, p in names.items() if p.requires_grad}
        expected = {n for n in names if n.startswith(trained)}
        assert trainable == expected, f"{stage}: trains {sorted(trainable ^ expected)[:4]} contrary to the recipe"
        others = [p for name, p in module.named_parameters() if not name.startswith("model.")]
        assert not any(p.requires_grad for p in others)  # the teacher never trains
        frozen_buffers = {n: b.clone() for n, b in module.model.named_buffers()
                          if not n.startswith(trained) and b.is_floating_point()}
        optimizer = _optimizer(StageConfig(name=stage, epochs=1, **ADAM), module.parameter_groups(1e-3, 10.0))
        losses = []
        module.train()
        for _ in range(8):
            torch.manual_seed(0)  # the same noise and sampling every step: one objective, followed downhill
            loss = module(images, targets)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        assert losses[-1] < losses[0], f"{stage}: loss went {losses[0]:.4g} -> {losses[-1]:.4g}"
        for name, buffer in module.model.named_buffers():  # a frozen BatchNorm keeps its statistics
            if name in frozen_buffers:
                assert torch.equal(buffer, frozen_buffers[name]), f"{stage}: frozen {name} changed"
        module.end_stage(stage)


@pytest.mark.parametrize("case", ["entropic_student", "cr_bq"])
def test_stage_one_distils_only_the_levels_asked_for(case, recipes_out):
    """``distill`` picks the teacher levels of the head-distillation stage: the loss is that level's summed MSE
    (plus the rate term where there is one), and a level the trunk does not have is named in a config error."""
    from splitbench.errors import ConfigError
    from splitbench.training.losses import feature_distillation, rate_bits

    method, args, task, stages = CASES[case]
    CASES["layer4"] = (method, {**args, "distill": ["layer4"]}, task, stages)
    try:
        _, run, module, _ = recipe("layer4", recipes_out)
        images, targets = batch(run)
        module.set_stage("bottleneck")
        module.eval()
        torch.manual_seed(0)
        logs = module(images, targets)
        with torch.no_grad():
            teacher, _ = module.teacher.trunk.features(images)
            torch.manual_seed(0)
            student, likelihoods = module.model.trunk.features(images)
        expected = feature_distillation(student, teacher, ["layer4"])
        if module.beta is not None:
            expected = expected + args["beta"] * rate_bits(likelihoods, "sum") + module.model.trunk.coder.aux_loss()
        assert torch.allclose(logs["loss"], expected, rtol=1e-5)
        CASES["layer4"][1]["distill"] = ["layer5"]
        with pytest.raises(ConfigError, match=r"\['layer5'\] are not levels of the student's trunk; it has layer1"):
            recipe("layer4", recipes_out)
    finally:
        del CASES["layer4"]


@pytest.mark.parametrize("case", ["entropic_student", "end_to_end"])
def test_rate_warmup_ramps_beta_from_zero_over_its_fraction_of_the_stage(case, recipes_out):
    """``method_args.rate_warmup``: at the stage's start the loss carries no rate term, half-way through the
    ramp half of it, after the ramp all of it (the trainer sets ``progress`` before every step)."""
    method, args, task, stages = CASES[case]
    CASES["warm"] = (method, {**args, "rate_warmup": 0.5}, task, stages)
    try:
        _, run, module, _ = recipe("warm", recipes_out)
    finally:
        del CASES["warm"]
    images, targets = batch(run)
    module.set_stage(module.stages[0])
    module.eval()

    def loss_and_bits(progress: float) -> tuple[float, float]:
        module.progress = progress
        torch.manual_seed(0)
        with torch.no_grad():
            logs = module(images, targets)
        return float(logs["loss"]), float(logs["bytes"]) * 8

    no_rate, bits = loss_and_bits(0.0)
    half, _ = loss_and_bits(0.25)
    full, _ = loss_and_bits(0.5)
    assert full == pytest.approx(loss_and_bits(1.0)[0], rel=1e-6)
    per_batch = len(images) if case == "entropic_student" else 1  # ES: bits summed over the batch; E2E: mean
    assert full - no_rate == pytest.approx(args["beta"] * bits * per_batch, rel=1e-3)
    assert half - no_rate == pytest.approx(0.5 * (full - no_rate), rel=1e-3)
