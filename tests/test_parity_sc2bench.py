"""splitbench reproduces sc2bench: the same checkpoint gives the same predictions and the same entropy-coded bytes.

The parity tests need sc2bench (the optional ``parity`` extra) and skip without it; the strict
key-mapping tests run everywhere on a state dict written in sc2bench's key names.
"""

from __future__ import annotations

import argparse
import functools
import warnings

import pytest
import torch

from splitbench.compat.sc2bench import (
    PREFIXES,
    Sc2benchArchitecture,
    build_model,
    convert_state_dict,
    infer_architecture,
    load_sc2bench,
    read_checkpoint,
    tail_prefixes,
)
from splitbench.compression.bitstream import unpack
from splitbench.errors import CheckpointError
from splitbench.models.bottleneck_classifier import BottleneckClassifier
from splitbench.pipeline import LearnedPipeline

SIZE = 64
BOTTLENECKS = {
    "fp": ("FPBasedResNetBottleneck", {"num_bottleneck_channels": 24, "num_target_channels": 64}),
    "shp": ("SHPBasedResNetBottleneck",
            {"num_latent_channels": 16, "num_bottleneck_channels": 24, "num_target_channels": 64}),
    "mshp": ("MSHPBasedResNetBottleneck",
             {"num_latent_channels": 16, "num_bottleneck_channels": 24, "num_target_channels": 64}),
}


def _reference(variant: str):
    """sc2bench's splittable ResNet-18 with random weights, made to code something non-trivial, then update()."""
    pytest.importorskip("sc2bench")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sc2bench.models.backbone import splittable_resnet

    torch.manual_seed(0)
    key, kwargs = BOTTLENECKS[variant]
    with warnings.catch_warnings():  # CompressAI deprecates the constructor argument sc2bench uses
        warnings.simplefilter("ignore", DeprecationWarning)
        ref = splittable_resnet({"key": key, "kwargs": kwargs}, resnet_name="resnet18", num_classes=10,
                                skips_avgpool=False, skips_fc=False).eval()
    layer = ref.bottleneck_layer
    with torch.no_grad():  # random weights give a near-constant latent; widen it (some values escape the tables)
        (layer.encoder if variant == "fp" else layer.g_a)[-1].weight.mul_(40)
        for p in layer.entropy_bottleneck.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ref.update()
    return ref


@pytest.mark.parametrize("variant", ["fp", "shp", "mshp"])
def test_same_predictions_and_bytes_as_sc2bench(variant):
    ref = _reference(variant)
    model = load_sc2bench(ref.state_dict(), image_size=SIZE)
    pipeline = LearnedPipeline(model)
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        normalized = model.normalize(x)  # sc2bench normalises in its data transforms
        expected = ref(normalized)
        # sc2bench codes one image per forward call (its size analysis needs batch 1)
        strings = [[s[0] for s in ref.bottleneck_layer.encode(normalized[i : i + 1])["strings"]] for i in range(3)]
    payloads = pipeline.mobile(x)
    assert [list(unpack(p).segments) for p in payloads] == strings
    assert len({len(p) for p in payloads}) > 1  # the samples really differ
    got = pipeline.server(payloads)
    assert (got - expected).abs().max().item() < 1e-5
    layer = ref.bottleneck_layer  # the device runs g_a, and for MSHP also h_a and h_s (it needs the scales)
    device_side = [layer.encoder] if variant == "fp" else [layer.g_a, layer.h_a, layer.h_s]
    expected_params = {"fp": 138_672, "shp": 138_672 + 38_400, "mshp": 138_672 + 60_800}[variant]
    assert pipeline.mobile_params() == sum(p.numel() for m in device_side for p in m.parameters()) == expected_params


def test_reads_torchdistill_checkpoint_files(tmp_path):
    state = _sc2bench_state()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": state, "optimizer": {}, "best_value": 0.5, "lr_scheduler": None,
                "args": argparse.Namespace(config="x.yaml")}, path)
    assert read_checkpoint(path).keys() == state.keys()
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")


# ---- strict mapping, without sc2bench: a splitbench model's state dict renamed to sc2bench's keys


@functools.cache
def _model_and_state() -> tuple[BottleneckClassifier, dict[str, torch.Tensor]]:
    arch = Sc2benchArchitecture("fp", "resnet18", 10, 24, (96, 48), (128, 64))
    inverse = {v: k for k, v in {**PREFIXES, **tail_prefixes("resnet18")}.items()
               if not k.startswith(("bottleneck_layer.g_", "bottleneck_layer.h_", "bottleneck_layer.gaussian"))}
    model = build_model(arch, SIZE)
    state = {}
    for key, value in model.state_dict().items():
        prefix = next(p for p in inverse if key.startswith(p))
        state[inverse[prefix] + key[len(prefix) :]] = value
    return model, state


def _sc2bench_state() -> dict[str, torch.Tensor]:
    return dict(_model_and_state()[1])


def test_architecture_is_read_off_the_weights():
    arch = infer_architecture(_sc2bench_state())
    assert (arch.variant, arch.backbone, arch.num_classes) == ("fp", "resnet18", 10)
    assert (arch.encoder_channels, arch.latent_channels, arch.decoder_channels) == ((96, 48), 24, (128, 64))


def test_unexpected_and_missing_keys_are_errors():
    model, state = _model_and_state()
    loaded = load_sc2bench(state, image_size=SIZE).state_dict()  # the clean state loads, strictly
    tables = {k for k, v in model.state_dict().items() if not torch.equal(v, loaded[k])}
    assert {k.rsplit(".", 1)[1] for k in tables} == {"_offset", "_quantized_cdf", "_cdf_length"}  # built, as
    assert loaded["bottleneck.coder.entropy_bottleneck._offset"].numel() == 24  # sc2bench's update() would
    with pytest.raises(CheckpointError, match="outside the mapping.*pre_transform.weight"):
        convert_state_dict({**state, "pre_transform.weight": torch.zeros(1)}, model, "resnet18")
    with pytest.raises(CheckpointError, match="mapped to nothing.*encoder.9.weight"):
        convert_state_dict({**state, "bottleneck_layer.encoder.9.weight": torch.zeros(1)}, model, "resnet18")
    missing = {k: v for k, v in state.items() if k != "layer3.0.bn1.weight"}
    with pytest.raises(CheckpointError, match="not in the checkpoint.*tail.stages.layer3.0.bn1.weight"):
        convert_state_dict(missing, model, "resnet18")
    with pytest.raises(CheckpointError, match=r"fc.weight: shape \(5, 512\)"):
        convert_state_dict({**state, "fc.weight": torch.zeros(5, 512)}, model, "resnet18")
    with pytest.raises(CheckpointError, match="no splitbench counterpart"):
        load_sc2bench({k: v for k, v in state.items() if "encoder" not in k}, image_size=SIZE)
