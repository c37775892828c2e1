"""The bottleneck method family (Entropic Student SHP/MSHP, End-to-End, CR+BQ, EB fine-tuning, naive split):
each trains through ``train_experiment`` and evaluates through ``evaluate_experiment`` on the same split
protocol, the server decodes exactly the test-time quantized latent, and bad settings fail at build time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_raw
from torch import nn

from splitbench.compression.bitstream import BitstreamError, pack, unpack
from splitbench.compression.latent_coders import FactorizedPrior
from splitbench.data import get_dataset
from splitbench.errors import ConfigError
from splitbench.experiment import load_configs, validate
from splitbench.models.bottlenecks import BottleneckShapeError
from splitbench.models.builders import classifier_network, stage_bottleneck, student
from splitbench.models.staged import SplitPointError, StagedNetwork
from splitbench.pipelines import LearnedPipeline
from splitbench.runs import WEIGHTS, build_pipeline, evaluate_experiment, train_experiment

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")
ADAM = {"optimizer": {"name": "adam", "lr": 1e-3}}
ES_STAGES = [{"name": "bottleneck", "epochs": 1, **ADAM}, {"name": "tail", "epochs": 1, "optimizer": {"name": "sgd"}}]

CASES = {  # id: (method, method_args, stages, variant, rate_param)
    "es-shp": ("entropic_student", {"variant": "shp", "beta": 0.1, "channels": 8, "hyper_channels": 4}, ES_STAGES,
               "shp", {"beta": 0.1}),
    "es-mshp": ("entropic_student", {"variant": "mshp", "beta": 0.1, "channels": 8, "hyper_channels": 4}, ES_STAGES,
                "mshp", {"beta": 0.1}),
    "end_to_end": ("end_to_end", {"beta": 1e-4, "channels": 8}, [{"name": "train", "epochs": 1, **ADAM}],
                   "fp", {"beta": 1e-4}),
    "cr_bq": ("cr_bq", {"channels": 2}, [{"name": "bottleneck", "epochs": 1, **ADAM}], "8bit", {"channels": 2}),
    "eb_finetune": ("eb_finetune", {"beta": 1e-4, "split_after": "layer2"}, [{"name": "train", "epochs": 1, **ADAM}],
                    "layer2", {"beta": 1e-4}),
}


def config(method: str, method_args: dict, teacher_out, stages: list | None = None):
    raw = tiny_raw(method, method_args=method_args,
                   teacher={"checkpoint": str(teacher_out / "classifier-resnet10n" / WEIGHTS)},
                   eval={"device": "cpu"}, data={"train_samples": 32, "val_samples": 20})
    raw["method_args"] = method_args  # not merged with tiny_raw's Entropic Student defaults
    if stages is not None:
        raw["train"]["stages"] = stages
    return validate(raw)


def val_images(n: int = 20) -> torch.Tensor:
    data = get_dataset("shapes", "val", image_size=32, num_samples=n)
    return torch.stack([data[i][0] for i in range(n)])


@pytest.mark.parametrize("case", list(CASES))
def test_train_then_evaluate_through_the_split_protocol(case, trained_teacher, tmp_path):
    method, args, stages, variant, rate_param = CASES[case]
    cfg = config(method, args, trained_teacher, stages)
    train_experiment(cfg, tmp_path, progress=False)
    record = evaluate_experiment(cfg, tmp_path, progress=False)
    assert (record["method"], record["variant"], record["rate_param"]) == (method, variant, rate_param)
    assert record["num_samples"] == 20 and 0 <= record["metrics"]["top1"] <= record["metrics"]["top5"] <= 1

    pipeline = build_pipeline(cfg, tmp_path, CPU)
    images = val_images()
    groups = pipeline.mobile_forward(images)
    payloads = pipeline.encode(groups)
    assert record["data_size"]["bytes_mean"] == pytest.approx(np.mean([len(p) for p in payloads]))
    model = pipeline.network
    with torch.no_grad():
        expected = model.trunk.coder.quantize(groups[0].latent)
    (decoded,) = pipeline.decode(payloads)
    assert torch.equal(decoded.latent, expected)  # the server sees the test-time quantized latent
    first = groups[0]._replace(indices=[0, 1, 2], sizes=groups[0].sizes[:3], latent=groups[0].latent[:3])
    assert pipeline.encode([first]) == payloads[:3]  # per-sample bitstreams at any batch size
    corrupt = bytearray(payloads[0])
    corrupt[len(corrupt) // 2] ^= 0x08
    with pytest.raises(BitstreamError):  # the container's checksum stops it before the decoder
        pipeline.server([bytes(corrupt)])
    if method != "eb_finetune":  # a GDN encoder: an image size it cannot take is refused, not decoded
        with pytest.raises(BitstreamError, match=r"\(2, 2\) is too small"):
            pipeline.server([pack((2, 2), unpack(payloads[0]).segments)])

    stats = pipeline.encoder_stats(images[:1])
    assert record["encoder"] == stats
    device = pipeline.mobile_state()
    assert not any(k.startswith("tail") or ".decoder." in k for k in device)
    if variant == "mshp":  # the hyperprior's transforms and all coder tables are on the device
        assert {"coder.h_a.0.weight", "coder.h_s.4.weight", "coder.gaussian_conditional.quantized_cdf",
                "coder.entropy_bottleneck.quantized_cdf"} <= set(device)
    if method == "eb_finetune":  # the device runs the teacher's stages up to the split, unchanged in shape
        assert any(k.startswith("network.1.stages.layer2") for k in device)
        assert stats["params"] == sum(p.numel() for p in model.trunk.bottleneck.encoder.parameters())


def test_naive_split_is_the_teacher_with_raw_features(trained_teacher, tmp_path):
    cfg = config("naive_split", {"split_after": "layer2", "dtype": "float16"}, trained_teacher)
    record = evaluate_experiment(cfg, trained_teacher, progress=False, results=tmp_path / "r.jsonl")
    assert record["variant"] == "float16" and record["rate_param"] == {"split_after": "layer2"}
    # layer2 of resnet10n at 32 px: 64 × 4 × 4 float16 values + a 7-byte container header (3-D shape)
    assert record["data_size"]["bytes_mean"] == 64 * 4 * 4 * 2 + 7
    cfg32 = config("naive_split", {"split_after": "layer2"}, trained_teacher)
    pipeline = build_pipeline(cfg32, trained_teacher, CPU)
    images = val_images(8)
    with torch.no_grad():
        assert torch.allclose(pipeline.server(pipeline.mobile(images)), pipeline.network.predict(images), atol=1e-5)
    with pytest.raises(SplitPointError, match="valid: stem, layer1, layer2, layer3, layer4"):
        build_pipeline(config("naive_split", {"split_after": "fc"}, trained_teacher), trained_teacher, CPU)


@pytest.mark.parametrize(("method", "args", "key"), [
    ("entropic_student", {"beta": 0}, "beta"),
    ("entropic_student", {"beta": -1, "variant": "mshp"}, "beta"),
    ("end_to_end", {"beta": 0}, "beta"),
    ("eb_finetune", {"beta": -1e-6}, "beta"),
    ("cr_bq", {"channels": 0}, "channels"),
    ("entropic_student", {"beta": 1, "variant": "shp", "hyper_channels": 0}, "hyper_channels"),
    ("entropic_student", {"beta": 1, "variant": "gmm"}, "variant"),
    ("naive_split", {"dtype": "int8"}, "dtype"),
])
def test_bad_method_args_fail_at_config_load(method, args, key, tmp_path):
    with pytest.raises(ConfigError, match=f"method_args.{key}"):
        config(method, args, tmp_path)


def test_bad_split_points_and_shapes_fail_at_build_time(trained_teacher):
    for method, args in (("entropic_student", {"beta": 1, "split_after": "layer9"}),
                         ("eb_finetune", {"beta": 1, "split_after": "head"})):
        with pytest.raises(SplitPointError, match="valid: stem, layer1"):
            build_pipeline(config(method, args, trained_teacher), trained_teacher, CPU)
    # three decoder layers break the padding pattern: 7×7 where the split point has 8×8
    cfg = config("cr_bq", {"channels": 2, "decoder_channels": [8, 8, 8]}, trained_teacher)
    with pytest.raises(BottleneckShapeError, match=r"outputs \(32, 7, 7\).*outputs \(32, 8, 8\)"):
        build_pipeline(cfg, trained_teacher, CPU)


@pytest.mark.parametrize("suite", ["shapes", "imagenet"])
def test_family_configs_load_and_validate(suite):
    names = ["entropic_student_shp", "entropic_student_mshp", "end_to_end", "cr_bq", "eb_finetune", "naive_split"]
    for name in names:
        configs = load_configs(f"{suite}/{name}.yaml")
        assert configs and len({c.run_name() for c in configs}) == len(configs), name
    mshp = load_configs(f"{suite}/entropic_student_mshp.yaml")[0].args()
    assert mshp.variant == "mshp" and mshp.hyper_channels == 16


def test_an_entropy_bottleneck_after_a_pooled_stage_codes_a_vector():
    net = StagedNetwork({"body": nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU()),
                         "pool": nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1)), "fc": nn.Linear(8, 5)})
    teacher = classifier_network(net, 32)
    model = student(teacher, "pool", stage_bottleneck(teacher, "pool", 32, FactorizedPrior(8)), 32)
    out = model(torch.rand(2, 3, 32, 32))
    assert out.predictions["classification"].shape == (2, 5) and out.features["pool"].shape == (2, 8)
    assert out.likelihoods["y"].shape == (2, 8, 1, 1)
    model.trunk.coder.update()
    pipeline = LearnedPipeline(model)
    images = torch.rand(3, 3, 32, 32)
    assert pipeline.server(pipeline.mobile(images)).shape == (3, 5)
    with pytest.raises(BottleneckShapeError, match=r"outputs \(8, 16, 16\); the coder has 4 channels"):
        stage_bottleneck(teacher, "body", 32, FactorizedPrior(4))
