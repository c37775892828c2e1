"""Suites: expansion and validation, an end-to-end tiny suite, resume after a kill, failures recorded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from splitbench.bench import report
from splitbench.bench import suite as suite_mod
from splitbench.bench import work as work_mod
from splitbench.bench.suite import run_suite, suite_points
from splitbench.cli import main
from splitbench.codecs import list_codecs
from splitbench.errors import ConfigError
from splitbench.experiment import load_configs
from splitbench.methods import list_methods

TINY = {
    "base.yaml": """
data: {dataset: shapes, image_size: 32, train_samples: 96, val_samples: 40, batch_size: 32}
backbone: {name: resnet10n}
train: {max_steps_per_epoch: 1, device: cpu, amp: false}
eval: {batch_size: 40, workers: 1, device: cpu}
""",
    "teacher.yaml": """
base: base.yaml
method: classifier
train: {stages: [{name: train, epochs: 1}]}
""",
    "student.yaml": """
base: base.yaml
method: entropic_student
method_args: {split_after: layer1, channels: 4, beta: 0.1}
train:
  stages:
    - {name: bottleneck, epochs: 1}
    - {name: tail, epochs: 1, optimizer: {name: sgd, lr: 1.0e-2}}
""",
    "codec.yaml": """
base: base.yaml
method: input_codec
sweep: {method_args.codec: [jpeg, webp], method_args.quality: [10, 50, 90]}
""",
}
SUITE = """
experiments:
  - teacher.yaml
  - config: student.yaml
    set: {method_args.beta: [0.1, 1.0]}
  - config: codec.yaml
    set: {method_args.codec: jpeg, method_args.quality: [10, 50]}
report: {log_x: true}
"""  # 5 points: teacher, 2 students, 2 JPEG qualities


def write_suite(folder: Path, text: str = SUITE, name: str = "suite.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for file, content in TINY.items():
        (folder / file).write_text(content)
    (folder / name).write_text(text)
    return folder / name


def read_records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()
            and p.parent != out}


class Counter:
    """Wraps a function (it still runs) and counts calls; ``fail_on`` raises before the Nth call."""

    def __init__(self, fn, fail_on: int | None = None, error: BaseException | None = None):
        self.fn, self.fail_on, self.error, self.calls = fn, fail_on, error, []

    def __call__(self, config, *args, **kwargs):
        self.calls.append(config.run_name())
        if self.fail_on == len(self.calls):
            raise self.error or KeyboardInterrupt()
        return self.fn(config, *args, **kwargs)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """One full run of the tiny suite through the CLI (shared: training is the slow part)."""
    folder = tmp_path_factory.mktemp("suite")
    suite, out = write_suite(folder), folder / "out"
    assert main(["--no-progress", "bench", str(suite), "--out", str(out)]) == 0
    return suite, out


# ---------------------------------------------------------------- expansion and validation


def test_set_lists_sweep_scalars_pin(tmp_path):
    suite, points = suite_points(write_suite(tmp_path))
    names = [p.config.run_name() for p in points]
    assert names == ["classifier-resnet10n", "entropic_student-fp-resnet10n-beta0.1",
                     "entropic_student-fp-resnet10n-beta1.0", "input_codec-jpeg-resnet10n-quality10",
                     "input_codec-jpeg-resnet10n-quality50"]
    assert suite.report.log_x
    # a list replaces the config's own sweep of that key; suite-level set reaches every experiment, an
    # entry's own set wins over it, and --set comes last
    text = """
experiments:
  - config: student.yaml
    set: {method_args.beta: [0.1, 1.0], data.val_samples: 30}
  - config: codec.yaml
    set: {method_args.quality: [5]}
set: {data.val_samples: 20}
"""
    _, points = suite_points(write_suite(tmp_path, text, "s2.yaml"), ["eval.batch_size=7"])
    assert [(p.config.method_args.get("codec"), p.config.data.val_samples) for p in points] == [
        (None, 30), (None, 30), ("jpeg", 20), ("webp", 20)]
    assert [p.config.method_args.get("quality") for p in points[2:]] == [5, 5]
    assert {p.config.eval.batch_size for p in points} == {7}


def test_packaged_suites_validate():
    _, quick = suite_points("suites/quickstart.yaml")
    on_test = ["eval.split=test", "eval.num_samples=1000"]  # the configs as they are, reported on the test split
    old = [c.hash() for n in ("shapes/teacher.yaml", "shapes/entropic_student.yaml", "shapes/input_codec.yaml")
           for c in load_configs(n, on_test)]
    assert [p.config.hash() for p in quick] == old
    _, shapes = suite_points("suites/shapes.yaml")  # covers every classification method and every codec we can run
    _, tasks = suite_points("suites/shapes_tasks.yaml")  # detection and segmentation
    _, multitask = suite_points("suites/shapes_multitask.yaml")
    missing = set(list_methods()) - {p.config.method for p in shapes + tasks + multitask}
    assert not missing, f"add {missing} to a suite in splitbench/configs/suites/"
    assert {p.config.task for p in shapes} == {"classification"}
    assert {p.config.task for p in tasks} >= {"detection", "segmentation"}
    codecs = {p.config.method_args.get("codec") for p in shapes if p.config.method == "input_codec"}
    assert codecs >= set(list_codecs()) - {"bpg"}  # bpg needs bpgenc (hevc is its coding)
    _, imagenet = suite_points("suites/imagenet.yaml")
    betas = sorted(p.config.method_args["beta"] for p in imagenet
                   if p.config.method == "entropic_student" and p.config.method_args["variant"] == "fp")
    assert betas == [0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12]
    assert {p.config.backbone.name for p in imagenet} == {"resnet50"}
    for name in ("base", "teacher", "entropic_student", "input_codec"):
        assert Path(suite_mod.PACKAGE_CONFIGS / "imagenet" / f"{name}.yaml").is_file()


@pytest.mark.parametrize(("text", "expected"), [
    ("experiment: [teacher.yaml]\n", ["unknown key 'experiment'", "did you mean 'experiments'"]),
    ("experiments: [{config: teacher.yaml, sett: {}}]\n", ["unknown key 'experiments.0.sett'", "'set'"]),
    ("experiments: [teacher.yaml]\nreport: {logx: true}\n", ["unknown key 'report.logx'", "log_x"]),
    ("experiments: []\n", ["experiments"]),
    ("experiments: [teacher.yaml]\nset: {data.image_sise: 32}\n", ["image_sise", "image_size"]),
])
def test_suite_typo_names_the_key(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        suite_points(write_suite(tmp_path, text))
    for part in expected:
        assert part in str(info.value)


def test_unknown_config_file_is_a_clear_error(tmp_path, capsys):
    path = write_suite(tmp_path, "experiments: [teacher.yaml, nope.yaml]\n")
    with pytest.raises(ConfigError, match=r"experiments\[1\].*config file not found: nope.yaml"):
        suite_points(path)
    assert main(["bench", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    assert not (tmp_path / "out" / "results.jsonl").exists()  # nothing ran
    assert main(["bench", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "out")]) == 2


# ---------------------------------------------------------------- running


def test_suite_runs_end_to_end_and_rerun_redoes_nothing(finished, monkeypatch):
    suite, out = finished
    records = read_records(out)
    assert len(records) == 5 and {r["status"] for r in records} == {"ok"}
    assert len({r["config_hash"] for r in records}) == 5
    assert (out / "report.md").is_file() and (out / "rd.png").is_file()
    before, lines = mtimes(out), (out / "results.jsonl").read_text()
    assert any(name.endswith("model.safetensors") for name in before)

    train = Counter(work_mod.train_experiment)
    evaluate = Counter(work_mod.measure_experiment)
    monkeypatch.setattr(work_mod, "train_experiment", train)
    monkeypatch.setattr(work_mod, "measure_experiment", evaluate)
    assert run_suite(suite, out, progress=False) == []
    assert train.calls == [] and evaluate.calls == []
    assert mtimes(out) == before and (out / "results.jsonl").read_text() == lines


def test_killed_midway_rerun_completes_only_missing_points(finished, tmp_path, monkeypatch):
    suite, done = finished
    out = tmp_path / "out"
    for run in ("classifier-resnet10n", "entropic_student-fp-resnet10n-beta0.1",
                "entropic_student-fp-resnet10n-beta1.0"):  # trained earlier (training is the slow part)
        shutil.copytree(done / run, out / run)
    # Killed as the 3rd point (student beta=1.0) starts evaluating, after its training.
    monkeypatch.setattr(work_mod, "measure_experiment", Counter(work_mod.measure_experiment, fail_on=3))
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, out, progress=False)
    assert len(read_records(out)) == 2
    trained = {k: v for k, v in mtimes(out).items() if k.endswith("model.safetensors")}
    assert len(trained) == 3

    monkeypatch.undo()
    monkeypatch.setattr(report, "write_report", lambda *a, **k: {})  # the end-to-end test covers it
    train = Counter(work_mod.train_experiment)
    evaluate = Counter(work_mod.measure_experiment)
    monkeypatch.setattr(work_mod, "train_experiment", train)
    monkeypatch.setattr(work_mod, "measure_experiment", evaluate)
    assert run_suite(suite, out, progress=False) == []
    assert evaluate.calls == ["entropic_student-fp-resnet10n-beta1.0", "input_codec-jpeg-resnet10n-quality10",
                              "input_codec-jpeg-resnet10n-quality50"]
    assert train.calls == ["entropic_student-fp-resnet10n-beta1.0"]  # called, but finds it finished
    assert {k: v for k, v in mtimes(out).items() if k in trained} == trained
    records = read_records(out)
    assert len(records) == 5 and len({r["config_hash"] for r in records}) == 5


def test_failed_point_is_recorded_and_retried(finished, tmp_path, monkeypatch):
    _, done = finished
    out = tmp_path / "out"
    shutil.copytree(done / "classifier-resnet10n", out / "classifier-resnet10n")
    text = """
experiments:
  - config: codec.yaml
    set: {method_args.codec: jpeg, method_args.quality: 30}
  - config: codec.yaml           # no such teacher run: fails, the suite goes on
    set: {method_args.codec: webp, method_args.quality: 30, teacher.run: no-such-teacher}
  - config: codec.yaml
    set: {method_args.codec: webp, method_args.quality: 60}
"""
    suite = write_suite(tmp_path / "cfg", text)
    args = ["--no-progress", "bench", str(suite), "--out", str(out)]
    assert main(args) == 1
    records = read_records(out)
    assert [r["status"] for r in records] == ["ok", "failed", "ok"]
    failed = records[1]
    for key in ("method", "variant", "task", "dataset", "split", "backbone", "rate_param", "config_hash",
                "config", "created", "versions"):
        assert key in failed
    assert failed["variant"] == "webp" and failed["rate_param"] == {"quality": 30}
    assert failed["error"].startswith("CheckpointError: teacher weights not found")
    assert "metrics" not in failed
    assert "Failed points" in (out / "report.md").read_text()

    monkeypatch.setattr(report, "write_report", lambda *a, **k: {})
    assert main(args) == 1  # the failed point is retried, the others are not
    records = read_records(out)
    assert [r["status"] for r in records] == ["ok", "failed", "ok", "failed"]
    assert records[3]["config_hash"] == failed["config_hash"]


def test_failed_teacher_fails_its_dependents_clearly(tmp_path, monkeypatch):
    suite = write_suite(tmp_path)
    boom = Counter(work_mod.train_experiment, fail_on=1, error=RuntimeError("out of memory"))
    monkeypatch.setattr(work_mod, "train_experiment", boom)
    failed = run_suite(suite, tmp_path / "out", progress=False)
    assert boom.calls == ["classifier-resnet10n"]  # nothing that needs the teacher was trained
    assert [f.run for f in failed][0] == "classifier-resnet10n" and len(failed) == 5
    assert failed[0].error == "RuntimeError: out of memory"
    for f in failed[1:]:
        assert "teacher run 'classifier-resnet10n' failed to train in this suite (RuntimeError" in f.error
    assert not (tmp_path / "out" / "report.md").exists()  # nothing to report
    assert {r["status"] for r in read_records(tmp_path / "out")} == {"failed"}


def test_run_trained_with_other_settings_is_not_reused(finished, tmp_path):
    _, done = finished
    out = tmp_path / "out"
    shutil.copytree(done / "classifier-resnet10n", out / "classifier-resnet10n")
    text = "experiments: [teacher.yaml, {config: codec.yaml, set: {method_args.codec: jpeg}}]\n"
    text += "set: {data.train_samples: 64, eval.batch_size: 8}\n"  # eval settings alone would not matter
    failed = run_suite(write_suite(tmp_path / "cfg", text), out, progress=False)
    assert len(failed) == 4
    assert "trained with other settings (data.train_samples: 96 there, 64 here)" in failed[0].error
    assert "teacher run 'classifier-resnet10n' failed to train" in failed[1].error  # not the stale teacher
