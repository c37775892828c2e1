"""Feature compression with a standard codec: the teacher split at a stage, signed features survive,
the encoder is the teacher's head, and an evaluation writes a complete record."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_raw

from splitbench.codecs import FeatureCodec, get_codec
from splitbench.data import get_dataset
from splitbench.experiment import validate
from splitbench.models.backbones import get_backbone
from splitbench.models.builders import classifier_network
from splitbench.pipelines import FeatureCodecPipeline
from splitbench.runs import build_pipeline, evaluate_experiment

CPU = torch.device("cpu")


def config(**method_args):
    args = {"split_after": "layer1", "codec": "jpeg", "quality": 90, **method_args}
    return validate(tiny_raw("feature_codec", method_args=args, eval={"workers": 2, "device": "cpu"}))


def val_images(n: int = 8) -> torch.Tensor:
    data = get_dataset("shapes", "val", image_size=32, num_samples=n)
    return torch.stack([data[i][0] for i in range(n)])


def test_signed_features_round_trip():
    teacher = classifier_network(get_backbone("resnet10n", 4), 32)
    pipeline = FeatureCodecPipeline(FeatureCodec(get_codec("png", 6)), teacher, "layer2", CPU)
    rng = np.random.default_rng(0)
    features = [(rng.normal(size=(64, 4, 4)) * 3 - 5).astype(np.float32) for _ in range(3)]
    features[0][7] -= 40  # an all-negative channel
    decoded = pipeline.decode(pipeline.encode(features)).numpy()
    span = np.stack(features).max(axis=(2, 3)) - np.stack(features).min(axis=(2, 3))
    error = np.abs(decoded - np.stack(features)).max(axis=(2, 3))
    assert (decoded[0, 7] < -30).all()
    np.testing.assert_array_less(error, span * (0.5 / 255 + 1e-3))  # png: only the 8-bit rounding


def test_nearly_lossless_features_keep_the_teachers_predictions():
    teacher = classifier_network(get_backbone("resnet10n", 4), 32).eval()
    pipeline = FeatureCodecPipeline(FeatureCodec(get_codec("png", 6)), teacher, "layer1", CPU)
    images = val_images()
    logits = pipeline.server(pipeline.mobile(images))
    expected = teacher.predict(images)
    assert torch.allclose(logits, expected, atol=0.05 * float(expected.abs().max()))
    head = teacher.trunk.device_part("layer1")
    stats = pipeline.encoder_stats(images)
    assert stats["params"] == sum(p.numel() for p in head.parameters()) > 0
    assert stats["size_bits"] >= 32 * stats["params"] and stats["macs"] > 0
    assert "layer2" not in "".join(pipeline.mobile_state())  # nothing after the split is on the device


def test_evaluate_writes_a_record(trained_teacher, tmp_path):
    cfg = config()
    assert cfg.run_name() == "feature_codec-jpeg-layer1-resnet10n-quality90"
    record = evaluate_experiment(cfg, trained_teacher, progress=False, results=tmp_path / "r.jsonl")
    assert record["method"] == "feature_codec" and record["variant"] == "jpeg-layer1"
    assert record["rate_param"] == {"quality": 90} and record["num_samples"] == 40
    assert 0 <= record["metrics"]["top1"] <= record["metrics"]["top5"] <= 1
    pipeline = build_pipeline(cfg, trained_teacher, CPU)
    try:
        images = torch.stack([get_dataset("shapes", "val", image_size=32, num_samples=40)[i][0] for i in range(40)])
        lengths = [len(b) for b in pipeline.mobile(images)]
        assert record["data_size"]["bytes_mean"] == pytest.approx(np.mean(lengths))
        assert record["encoder"] == pipeline.encoder_stats(images[:1])
        runtime = pipeline.describe_runtime()
        assert runtime["workers"] == 2 and runtime["split_after"] == "layer1"
        assert runtime["codec"]["codec"] == "jpeg" and runtime["codec"]["channels_per_group"] == 1
    finally:
        pipeline.close()
    # the split point is validated against the backbone when the pipeline is built
    with pytest.raises(ValueError, match="valid: stem, layer1"):
        build_pipeline(config(split_after="layer9"), trained_teacher, CPU)
