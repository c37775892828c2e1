"""The weights shipped with splitbench: intact, installed only for the training settings they were trained
with, refused when corrupt, and the shipped teacher is the converged one the suites rely on."""

from __future__ import annotations

import json
import shutil

import pytest

from splitbench import shipped
from splitbench.bench.suite import suite_points
from splitbench.errors import CheckpointError
from splitbench.experiment import load_configs
from splitbench.hashing import sha256_file
from splitbench.runs import Run


def test_every_shipped_file_is_intact_and_names_its_command():
    runs = shipped.shipped_runs()
    assert "classifier-resnet10n" in runs
    for entry in runs.values():
        assert sha256_file(entry.file) == entry.sha256, entry.name
        assert entry.file.stat().st_size < 10e6 and entry.command.startswith("splitbench train ")


def test_the_shipped_teacher_is_the_packaged_configs_and_converged(tmp_path):
    """Installed for the quickstart's teacher point (its evaluation settings differ from the training run's),
    it scores at least 90% top-1 on the shapes test split."""
    _, points = suite_points("suites/quickstart.yaml")
    (teacher,) = [p for p in points if p.config.method == "classifier"]
    assert teacher.shipped
    config = load_configs("shapes/teacher.yaml", ["eval.split=test", "eval.num_samples=400"])[0]
    run = Run(config, tmp_path)
    assert shipped.install(run)
    assert sha256_file(run.weights) == shipped.shipped_runs()[run.name].sha256
    record = run.evaluate(progress=False)[0]
    assert record["metrics"]["top1"] >= 0.9


def test_other_training_settings_get_nothing(tmp_path):
    config = load_configs("shapes/teacher.yaml", ["train.stages.0.epochs=3"])[0]
    run = Run(config, tmp_path)
    assert not shipped.install(run)
    assert not run.folder.exists()


def test_a_corrupt_shipped_file_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "shipped"
    shutil.copytree(shipped.SHIPPED, copy)
    entry = json.loads((copy / "MANIFEST.json").read_text())["classifier-resnet10n"]
    data = bytearray((copy / entry["file"]).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / entry["file"]).write_bytes(bytes(data))
    monkeypatch.setattr(shipped, "SHIPPED", copy)
    monkeypatch.setattr(shipped, "MANIFEST", copy / "MANIFEST.json")
    run = Run(load_configs("shapes/teacher.yaml")[0], tmp_path / "out")
    with pytest.raises(CheckpointError, match="missing or corrupt.*splitbench train shapes/teacher.yaml"):
        shipped.install(run)
    assert not run.weights.exists()
