import json
import shutil

import pytest
import yaml
from conftest import tiny_raw

from splitbench.cli import main

REQUIRED = {"method", "variant", "task", "dataset", "split", "num_samples", "backbone", "rate_param", "metrics",
            "data_size", "encoder", "timing", "config_hash", "versions", "created"}


def write_config(path, raw):
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def run(*args):
    return main(["--no-progress", *map(str, args)])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, trained_teacher):
    """A teacher and an Entropic Student trained through the CLI in one --out."""
    out = tmp_path_factory.mktemp("cli_out")
    shutil.copytree(trained_teacher, out, dirs_exist_ok=True)
    student = write_config(out / "student.yaml", tiny_raw("entropic_student"))
    assert run("train", student, "--out", out) == 0
    return out, student


def test_train_evaluate_report_end_to_end(trained, tmp_path):
    out, student = trained
    results = tmp_path / "results.jsonl"
    shutil.copy(student, tmp_path / "student.yaml")
    codec = write_config(tmp_path / "codec.yaml", {**tiny_raw("input_codec"), "sweep": {
        "method_args.codec": ["jpeg", "webp"], "method_args.quality": [20, 80]}})
    for config in (student, codec):
        assert run("evaluate", config, "--out", out) == 0
    shutil.copy(out / "results.jsonl", results)
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(records) == 5
    for record in records:
        assert record.keys() >= REQUIRED
        assert record["num_samples"] == 40
        assert 0 <= record["metrics"]["top1"] <= record["metrics"]["top5"] <= 1
        assert record["data_size"]["bytes_mean"] > 0
    es = records[0]
    assert es["method"] == "entropic_student" and es["rate_param"] == {"beta": 0.1}
    assert es["encoder"]["params"] > 0 and es["encoder"]["macs"] > 0
    assert "estimate_bytes_mean" in es["data_size"]
    jpeg = [r for r in records if r["variant"] == "jpeg"]
    assert [r["rate_param"]["quality"] for r in jpeg] == [20, 80]
    assert jpeg[0]["data_size"]["bytes_mean"] < jpeg[1]["data_size"]["bytes_mean"]
    assert jpeg[0]["encoder"] == {"params": 0, "size_bits": 0, "macs": 0}
    assert run("report", results, "--out", tmp_path / "report") == 0
    for name in ("report.md", "rd.png", "results.csv"):
        assert (tmp_path / "report" / name).stat().st_size > 0


def test_byte_counts_are_exact_at_any_batch_size(trained, tmp_path):
    from splitbench.experiment import load_configs
    from splitbench.runs import build_pipeline, evaluate_experiment

    out, student = trained
    sizes = {}
    for batch in (1, 20):
        (config,) = load_configs(student, [f"eval.batch_size={batch}"])
        record = evaluate_experiment(config, out, progress=False, results=tmp_path / "r.jsonl")
        sizes[batch] = (record["data_size"], record["metrics"])
    assert sizes[1] == sizes[20]
    # and the recorded mean is the mean of len(bitstream) over the samples
    import torch

    from splitbench.data import get_dataset

    pipeline = build_pipeline(config, out, torch.device("cpu"))
    data = get_dataset("shapes", "val", image_size=32, num_samples=40)
    images = torch.stack([data[i][0] for i in range(40)])
    lengths = [len(b) for b in pipeline.mobile(images)]
    assert sizes[1][0]["bytes_mean"] == pytest.approx(sum(lengths) / 40)


def test_config_errors_exit_2_and_write_nothing(tmp_path, capsys):
    bad = write_config(tmp_path / "bad.yaml", {**tiny_raw(), "data": {"dataset": "shapes", "imagesize": 32}})
    assert run("train", bad, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "data.imagesize" in err and "image_size" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("section", "value", "message"), [
    ("data", {"dataset": "imagenett"}, "unknown dataset 'imagenett'; known:"),
    ("backbone", {"name": "resnet5"}, "unknown backbone 'resnet5'; known:"),
])
def test_unknown_names_exit_2_listing_known_ones(tmp_path, capsys, section, value, message):
    config = write_config(tmp_path / "c.yaml", tiny_raw(**{section: value}))
    assert run("train", config, "--out", tmp_path / "out") == 2
    assert message in capsys.readouterr().err


def test_missing_dataset_root_exits_2(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", tiny_raw(data={"dataset": "imagefolder", "root": str(tmp_path / "x")}))
    assert run("train", config, "--out", tmp_path / "out") == 2
    assert str(tmp_path / "x") in capsys.readouterr().err


def test_missing_teacher_and_corrupt_checkpoint_exit_2(tmp_path, trained, capsys):
    student = write_config(tmp_path / "s.yaml", tiny_raw("entropic_student"))
    assert run("train", student, "--out", tmp_path / "empty") == 2
    assert "teacher weights not found" in capsys.readouterr().err
    out, _ = trained
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    assert run("evaluate", student, "--out", out, "--checkpoint", garbage) == 2
    assert "cannot read weights" in capsys.readouterr().err
    results = (out / "results.jsonl").read_text() if (out / "results.jsonl").exists() else ""
    assert "garbage" not in results


def test_list_shows_every_registry(capsys):
    for what, expected in (("methods", "entropic_student"), ("backbones", "resnet50"), ("datasets", "shapes"),
                           ("codecs", "webp"), ("tasks", "segmentation")):
        assert run("list", what) == 0
        assert expected in capsys.readouterr().out


def test_a_run_folder_trained_with_other_settings_is_refused_by_every_command(trained, tmp_path, capsys):
    """Run folders are named by method, variant, backbone and rate only: resuming or evaluating one after a
    training setting changed would pass the old weights off as the new config's, so every command refuses."""
    out = tmp_path / "out"
    shutil.copytree(trained[0], out)
    (out / "results.jsonl").unlink(missing_ok=True)
    changed = write_config(tmp_path / "changed.yaml", tiny_raw("entropic_student", data={"train_samples": 64}))
    for command in (["train", changed, "--resume"], ["evaluate", changed]):
        assert run(*command, "--out", out) == 2
        err = capsys.readouterr().err
        assert "was trained with other settings (data.train_samples: 96 there, 64 here)" in err, command
        assert "use another --out, or delete that folder" in err
    assert not (out / "results.jsonl").exists()  # nothing recorded against the old weights
    evaluation_only = write_config(tmp_path / "eval.yaml", tiny_raw("entropic_student", eval={"batch_size": 7}))
    assert run("evaluate", evaluation_only, "--out", out) == 0  # how it is evaluated is not how it was trained


def test_a_bottleneck_that_cannot_rebuild_the_split_point_is_a_one_line_error(trained_teacher, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(trained_teacher, out)
    bad = tiny_raw("entropic_student")
    bad["method_args"] = {**bad["method_args"], "decoder_channels": [8]}  # one layer: 7×7 where layer1 is 8×8
    config = write_config(tmp_path / "bad.yaml", bad)
    assert run("train", config, "--out", out) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: bottleneck decoder outputs (32, 7, 7)") and "(32, 8, 8)" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert not (out / "entropic_student-fp-resnet10n-beta0.1").exists()  # nothing half-written
