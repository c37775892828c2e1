import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import tiny_raw

from splitbench.config import identity_dump
from splitbench.errors import CheckpointError, SplitbenchError
from splitbench.experiment import validate
from splitbench.runs import WEIGHTS, train_experiment
from splitbench.training.checkpoint import load_checkpoint, read_weights, save_checkpoint
from splitbench.training.trainer import StopTraining


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    config = validate(tiny_raw(train={"checkpoint_every": 2}))
    full = train_experiment(config, tmp_path / "full", progress=False)
    with pytest.raises(StopTraining):  # "killed" at step 9 (mid-epoch 2); last checkpoint at step 8
        train_experiment(config, tmp_path / "cut", progress=False, stop_after_steps=9)
    run = tmp_path / "cut" / config.run_name()
    assert not (run / WEIGHTS).exists()
    assert load_checkpoint(run / "checkpoint.pt")["position"] == {"stage": 0, "epoch": 1, "step": 2,
                                                                  "global_step": 8}
    with pytest.raises(SplitbenchError, match="--resume"):
        train_experiment(config, tmp_path / "cut", progress=False)
    resumed = train_experiment(config, tmp_path / "cut", progress=False, resume=True)
    assert same_weights(read_weights(full), read_weights(resumed))


def test_resume_across_the_entropic_student_stages(tmp_path, trained_teacher):
    config = validate(tiny_raw("entropic_student", train={"checkpoint_every": 1}))
    for name in ("full", "cut"):
        shutil.copytree(trained_teacher, tmp_path / name)
    full = train_experiment(config, tmp_path / "full", progress=False)
    with pytest.raises(StopTraining):  # 6 steps per stage: stop inside stage 2
        train_experiment(config, tmp_path / "cut", progress=False, stop_after_steps=8)
    resumed = train_experiment(config, tmp_path / "cut", progress=False, resume=True)
    assert same_weights(read_weights(full), read_weights(resumed))


def test_trained_weights_refuse_to_be_overwritten(tmp_path, trained_teacher):
    config = validate(tiny_raw())
    with pytest.raises(SplitbenchError, match="exists"):
        train_experiment(config, trained_teacher, progress=False)
    assert train_experiment(config, trained_teacher, progress=False, resume=True).exists()


def test_checkpoints_never_unpickle_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(path)
    save_checkpoint({"position": {"stage": 0}}, tmp_path / "ok.pt")
    assert load_checkpoint(tmp_path / "ok.pt") == {"position": {"stage": 0}}
    assert not list(tmp_path.glob(".*.tmp"))  # no temp files left behind


def test_a_teacher_of_another_architecture_is_a_clear_error(tmp_path, trained_teacher):
    raw = tiny_raw("entropic_student", backbone={"name": "resnet18n"},
                   teacher={"checkpoint": str(trained_teacher / "classifier-resnet10n" / WEIGHTS)})
    with pytest.raises(CheckpointError, match="does not match"):
        train_experiment(validate(raw), tmp_path, progress=False)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_keeps_replicas_identical(tmp_path):
    import yaml

    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(tiny_raw(data={"train_samples": 64, "batch_size": 8})))
    ranks = tmp_path / "ranks"
    ranks.mkdir()
    env = {**os.environ, "SPLITBENCH_RANK_WEIGHTS_DIR": str(ranks), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = subprocess.run([*torchrun, "-m", "splitbench.cli", "--no-progress", "train", str(config),
                             "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(ranks / "rank0.pt", weights_only=True)
    rank1 = torch.load(ranks / "rank1.pt", weights_only=True)
    assert same_weights(rank0, rank1)
    saved = read_weights(tmp_path / "out" / "classifier-resnet10n" / WEIGHTS)
    assert same_weights(saved, {k: v.contiguous() for k, v in rank0.items()})
    # the replicas trained (they are not both still at the seeded initialisation)
    from splitbench.models import get_backbone

    torch.manual_seed(0)
    initial = get_backbone("resnet10n", 10).state_dict()
    assert not torch.equal(initial["stages.stem.0.weight"], rank0["trunk.stages.stem.0.weight"])


def test_channels_last_training_saves_contiguous_weights_equal_to_rounding(tmp_path, trained_teacher):
    """The trainer's channels-last layout is a speed setting: the student it trains matches the one trained in
    the default layout to float rounding, and what it saves is in the default layout."""
    weights = {}
    for layout in (True, False):
        folder = tmp_path / str(layout)
        shutil.copytree(trained_teacher, folder)
        config = validate(tiny_raw("entropic_student", train={"channels_last": layout}))
        weights[layout] = read_weights(train_experiment(config, folder, progress=False))
    assert weights[True].keys() == weights[False].keys()
    assert all(t.is_contiguous() for t in weights[True].values())
    floats = [name for name, tensor in weights[True].items() if tensor.is_floating_point()]
    assert len(floats) > 20  # (the coder's integer tables follow from these)
    for name in floats:
        assert torch.allclose(weights[True][name], weights[False][name], rtol=1e-3, atol=1e-4), name


def test_a_per_step_cosine_schedule_decays_within_one_epoch_and_resumes_on_the_same_curve(tmp_path):
    """``scheduler.interval: step``: a one-epoch stage's learning rate follows the cosine over its steps (the
    per-epoch schedule would not move in one epoch), and a run cut mid-epoch resumes on the same curve."""
    stage = {"name": "train", "epochs": 1, "optimizer": {"name": "adam", "lr": 1e-3},
             "scheduler": {"name": "cosine", "interval": "step"}}
    config = validate(tiny_raw(train={"stages": [stage], "checkpoint_every": 2}))
    assert "interval" in identity_dump(config)["train"]["stages"][0]["scheduler"]
    per_epoch = validate(tiny_raw(train={"stages": [{**stage, "scheduler": {"name": "cosine"}}]}))
    assert "interval" not in identity_dump(per_epoch)["train"]["stages"][0]["scheduler"]  # added later
    full = train_experiment(config, tmp_path / "full", progress=False)
    with pytest.raises(StopTraining):
        train_experiment(config, tmp_path / "cut", progress=False, stop_after_steps=3)
    state = load_checkpoint(tmp_path / "cut" / config.run_name() / "checkpoint.pt")
    steps = state["position"]["step"]
    expected = 1e-3 * 0.5 * (1 + math.cos(math.pi * steps / state["scheduler"]["T_max"]))
    assert 0 < steps < state["scheduler"]["T_max"]
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(expected)
    resumed = train_experiment(config, tmp_path / "cut", progress=False, resume=True)
    assert same_weights(read_weights(full), read_weights(resumed))


def test_a_run_folder_written_before_a_stage_setting_existed_is_still_reusable(tmp_path):
    """A stage setting added since (``scheduler.interval``) is absent from an older run's config.yaml: that run
    is still this config's at the default, and refused once the setting differs."""
    import yaml

    from splitbench.runs import CONFIG, Run

    config = validate(tiny_raw())
    run = Run(config, tmp_path)
    stored = config.model_dump(mode="json")
    for stage in stored["train"]["stages"]:
        del stage["scheduler"]["interval"]  # as written before the field existed
    run.folder.mkdir(parents=True)
    (run.folder / CONFIG).write_text(yaml.safe_dump(stored))
    run.check_reusable()
    stages = [{**s, "scheduler": {"name": "cosine", "interval": "step"}} for s in stored["train"]["stages"]]
    per_step = Run(validate(tiny_raw(train={"stages": stages})), tmp_path)
    with pytest.raises(SplitbenchError, match=r"trained with other settings \(train.stages.0.scheduler"):
        per_step.check_reusable()


def test_stages_train_at_their_own_batch_size_and_resume_across_them(tmp_path, trained_teacher):
    """``train.stages.N.batch_size``: 96 images make 12 steps at 8 in stage 1 and 3 at 32 in stage 2; a run cut
    inside stage 2 resumes to the same weights; a batch larger than the data fails before anything trains."""
    raw = tiny_raw("entropic_student", train={"checkpoint_every": 1})
    raw["train"]["stages"][0]["batch_size"] = 8
    raw["train"]["stages"][1]["batch_size"] = 32
    config = validate(raw)
    assert identity_dump(config)["train"]["stages"][0]["batch_size"] == 8
    assert "batch_size" not in identity_dump(validate(tiny_raw("entropic_student")))["train"]["stages"][0]
    for name in ("full", "cut", "big"):
        shutil.copytree(trained_teacher, tmp_path / name)
    full = train_experiment(config, tmp_path / "full", progress=False)
    state = load_checkpoint(tmp_path / "full" / config.run_name() / "checkpoint.pt")
    assert state["position"]["global_step"] == 12 + 3
    with pytest.raises(StopTraining):
        train_experiment(config, tmp_path / "cut", progress=False, stop_after_steps=13)
    resumed = train_experiment(config, tmp_path / "cut", progress=False, resume=True)
    assert same_weights(read_weights(full), read_weights(resumed))
    raw["train"]["stages"][1]["batch_size"] = 128
    big = validate(raw)
    with pytest.raises(ValueError, match="no full batch of 128"):
        train_experiment(big, tmp_path / "big", progress=False)
    assert not (tmp_path / "big" / big.run_name() / "checkpoint.pt").exists()
