"""Detection and segmentation: the task models, their split pipeline and the CLI path on shapes."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_raw
from test_cli import run

from splitbench.compression.bitstream import BitstreamError, pack, unpack
from splitbench.errors import ConfigError
from splitbench.experiment import load_configs, validate
from splitbench.models.backbones import get_backbone
from splitbench.models.builders import unsplit_network
from splitbench.models.heads import DetectionHead, DetectionHeadArgs, SegmentationHead, SegmentationHeadArgs
from splitbench.models.images import pad_images
from splitbench.models.staged import dilate_stages
from splitbench.models.trunks import FeatureTrunk
from splitbench.runs import build_pipeline, train_experiment

DETECTION_HEAD = {"fpn_channels": 16, "representation_size": 32, "anchor_sizes": [4, 8, 16, 32, 64],
                  "proposals_train": 50, "proposals_test": 20, "rpn_batch_size_per_image": 32,
                  "box_batch_size_per_image": 16, "detections_per_image": 10}
SEGMENTATION_HEAD = {"channels": 16, "atrous_rates": [1, 2, 3]}
HEADS = {"detection": DETECTION_HEAD, "segmentation": SEGMENTATION_HEAD}


def task_raw(task: str, method: str = "classifier", **sections) -> dict:
    if method == "classifier":
        sections = {"backbone": {"name": "resnet10n", "init_run": "classifier-resnet10n"}, **sections}
    raw = tiny_raw(method, task=task, **{"head": HEADS[task], **sections})
    raw["eval"]["num_samples"] = 12
    return raw


@pytest.fixture(scope="module")
def task_out(tmp_path_factory, trained_teacher):
    """The classifier, then a detector and a segmenter started from it, then an Entropic Student of each."""
    out = tmp_path_factory.mktemp("task_out")
    shutil.copytree(trained_teacher, out, dirs_exist_ok=True)
    for task in HEADS:
        train_experiment(validate(task_raw(task)), out, progress=False)
        train_experiment(validate(task_raw(task, "entropic_student")), out, progress=False)
    return out


def test_padding_is_per_image_and_masks_pad_with_ignore():
    images = [torch.rand(3, 20, 30), torch.rand(3, 33, 10)]
    batch, sizes = pad_images(images, 32)
    assert batch.shape == (2, 3, 64, 32) and sizes == [(20, 30), (33, 10)]
    assert torch.equal(batch[0, :, :20, :30], images[0]) and batch[0, :, 20:].abs().sum() == 0
    alone, _ = pad_images([images[0]], 32)
    assert alone.shape == (1, 3, 32, 32)  # an image's padding does not depend on the others


def test_dilation_keeps_weights_and_sets_the_output_stride():
    backbone = get_backbone("resnet10n", 10)
    trunk = FeatureTrunk.of(backbone)
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    assert trunk.stage_shapes(64)["layer4"][1:] == (2, 2)
    dilate_stages(trunk, ["layer3", "layer4"])
    assert trunk.stage_shapes(64)["layer4"][1:] == (8, 8)
    assert all(torch.equal(before[k], v) for k, v in trunk.state_dict().items())
    model = unsplit_network(get_backbone("resnet10n", 10), "segmentation", SegmentationHead, 11,
                            SegmentationHeadArgs(**SEGMENTATION_HEAD), 64)
    assert model.stride == 8 and model.heads["segmentation"].levels == ["layer3", "layer4"]
    detector = unsplit_network(get_backbone("resnet10n", 10), "detection", DetectionHead, 11,
                               DetectionHeadArgs(**DETECTION_HEAD), 64)
    assert detector.stride == 32 and detector.heads["detection"].levels == ["layer1", "layer2", "layer3", "layer4"]


def test_detection_head_needs_one_anchor_size_per_level():
    with pytest.raises(ConfigError, match="one size per FPN level: 5"):
        unsplit_network(get_backbone("resnet10n", 10), "detection", DetectionHead, 11,
                        DetectionHeadArgs(anchor_sizes=[8, 16]), 64)


def test_config_errors_name_the_key_the_task_and_the_run():
    with pytest.raises(ConfigError, match="head.fpn_channel.*did you mean 'fpn_channels'"):
        validate(task_raw("detection", head={"fpn_channel": 8}))
    with pytest.raises(ConfigError, match="task 'classification' has no head settings"):
        validate(tiny_raw(head={"channels": 8}))
    with pytest.raises(ConfigError, match="does not implement task 'detection'; it does: classification"):
        validate(tiny_raw("eb_finetune", task="detection", method_args={"beta": 0.1}))  # before anything runs
    with pytest.raises(ConfigError, match="unknown task 'detecton'; known: classification, detection"):
        validate(tiny_raw(task="detecton"))


def test_init_run_must_be_a_trained_classifier(tmp_path, task_out):
    with pytest.raises(Exception, match="no trained run at"):
        train_experiment(validate(task_raw("detection")), tmp_path, progress=False)
    raw = task_raw("segmentation", backbone={"name": "resnet10n", "init_run": "classifier-resnet10n-detection"})
    shutil.copytree(task_out / "classifier-resnet10n-detection", tmp_path / "classifier-resnet10n-detection")
    with pytest.raises(ConfigError, match="is a detection run"):
        train_experiment(validate(raw), tmp_path, progress=False)


def test_detector_trunk_starts_from_the_classifier(task_out):
    """Trained one step from the classifier's weights: its stem moved a little, not from a fresh init."""
    from splitbench.runs import load_run

    _, classifier = load_run(task_out, "classifier-resnet10n", torch.device("cpu"))
    pipeline = build_pipeline(validate(task_raw("detection")), task_out, torch.device("cpu"))
    trunk = pipeline.network.trunk
    a = classifier.trunk.stages["stem"][0].weight
    b = trunk.stages["stem"][0].weight
    fresh = get_backbone("resnet10n", 10).stages["stem"][0].weight
    assert (a - b).abs().mean() < 0.5 * (fresh - b).abs().mean()


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_student_bytes_are_exact_per_image_whatever_the_batch(task, task_out):
    """Images of two sizes in one batch: each sample's bitstream equals the one it gets alone, decodes to
    the same prediction, and carries its image size."""
    pipeline = build_pipeline(validate(task_raw(task, "entropic_student")), task_out, torch.device("cpu"))
    images = [torch.rand(3, 32, 32), torch.rand(3, 40, 24), torch.rand(3, 32, 32)]
    payloads = pipeline.mobile(images)
    alone = [pipeline.mobile([im])[0] for im in images]
    assert payloads == alone
    # one container per image: its dims are the image size, its segment the coder's string (no nested container)
    streams = [unpack(p, ndim=2, num_segments=1) for p in payloads]
    assert [s.shape for s in streams] == [(32, 32), (40, 24), (32, 32)]
    groups = pipeline.mobile_forward(images)
    strings = {i: s for g in groups for i, s in zip(g.indices, pipeline.coder.compress(g.latent), strict=True)}
    assert [s.segments for s in streams] == [strings[i] for i in range(3)]
    together = pipeline.server(payloads)
    for i, payload in enumerate(payloads):
        single = pipeline.server([payload])[0]
        if task == "segmentation":
            assert together[i].shape == images[i].shape[1:] and torch.equal(together[i], single)
        else:
            assert torch.allclose(together[i]["boxes"], single["boxes"], atol=1e-4)
    estimate = pipeline.estimate_bits(images)
    assert estimate.shape == (3,) and (estimate / 8 <= torch.tensor([len(p) for p in payloads])).all()


def test_student_bitstreams_reject_corruption_and_wrong_sizes(task_out):
    pipeline = build_pipeline(validate(task_raw("detection", "entropic_student")), task_out, torch.device("cpu"))
    payload = pipeline.mobile(torch.rand(1, 3, 32, 32))[0]
    corrupt = bytearray(payload)
    corrupt[len(corrupt) // 2] ^= 0x10
    with pytest.raises(BitstreamError):
        pipeline.server([bytes(corrupt)])
    string = unpack(payload, ndim=2, num_segments=1).segments[0]
    # the latent's shape comes from the image size, not the wire, and the size is bounded before decoding
    with pytest.raises(BitstreamError, match="over this model's limit"):
        pipeline.server([pack((60000, 60000), [string])])
    assert len(pipeline.server([pack((20, 30), [string])])) == 1  # a smaller image: the same padded latent


@pytest.mark.parametrize("task,metrics", [("detection", {"map", "map50", "map75"}),
                                          ("segmentation", {"miou", "pixel_acc"})])
def test_cli_evaluates_students_and_codecs_into_task_records_and_a_report(task, metrics, task_out, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(task_out, out)
    (out / "results.jsonl").unlink(missing_ok=True)
    student = tmp_path / "student.yaml"
    student.write_text(yaml.safe_dump(task_raw(task, "entropic_student")))
    codec = tmp_path / "codec.yaml"
    codec.write_text(yaml.safe_dump({**task_raw(task, "input_codec"), "sweep": {"method_args.quality": [10, 90]}}))
    teacher = tmp_path / "teacher.yaml"
    teacher.write_text(yaml.safe_dump(task_raw(task)))
    for config in (student, codec, teacher):
        assert run("evaluate", config, "--out", out) == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["method"] for r in records] == ["entropic_student", "input_codec", "input_codec", "classifier"]
    for record in records:
        assert record["task"] == task and set(record["metrics"]) == metrics and record["num_samples"] == 12
        assert all(0 <= v <= 1 for v in record["metrics"].values())
    es, jpeg_low, jpeg_high, raw = records
    assert es["encoder"]["params"] > 0 and "estimate_bytes_mean" in es["data_size"]
    assert jpeg_low["data_size"]["bytes_mean"] < jpeg_high["data_size"]["bytes_mean"] < raw["data_size"]["bytes_mean"]
    assert raw["data_size"]["bytes_mean"] > 32 * 32 * 3  # raw pixels in their container
    assert run("report", out / "results.jsonl", "--out", tmp_path / "report") == 0
    assert (tmp_path / "report" / "rd.png").stat().st_size > 0
    label = {"detection": "mAP@[.5:.95]", "segmentation": "mIoU"}[task]
    assert label in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.parametrize("folder,task,classes", [("coco", "detection", 81), ("voc", "segmentation", 21)])
def test_full_size_recipes_build(folder, task, classes):
    """The COCO/VOC ResNet-50 configs build their teacher (on the meta device: shapes only) and every
    student on it, at the configured image size; the bottleneck's decoder feeds the head's first level."""
    from splitbench.runs import Run

    teacher_config = load_configs(f"{folder}/teacher.yaml", ["backbone.pretrained=false"])[0]
    ctx = Run(teacher_config, Path("unused")).context(torch.device("cpu"))
    assert teacher_config.task == task and ctx.num_classes == classes
    with torch.device("meta"):
        teacher = teacher_config.method_spec.build(ctx, None, None)
    levels = teacher.heads[task].levels
    assert levels[0] == ("layer1" if task == "detection" else "layer3")
    for name in ("entropic_student", "end_to_end", "cr_bq"):
        config = load_configs(f"{folder}/{name}.yaml", ["backbone.pretrained=false"])[0]
        student = config.method_spec.build(Run(config, Path("unused")).context(torch.device("cpu")), config.args(),
                                           teacher)
        assert student.trunk.split_after == "layer1" and student.heads[task].levels == levels
    for name in ("input_codec", "entropic_student"):
        assert load_configs(f"{folder}/{name}.yaml")[0].data.dataset == folder
