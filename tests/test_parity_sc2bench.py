"""splitbench reproduces sc2bench: the same checkpoint gives the same predictions and the same entropy-coded bytes.

The parity tests need sc2bench (the optional ``parity`` extra) and skip without it; the strict
key-mapping tests run everywhere on a state dict written in sc2bench's key names.
"""

from __future__ import annotations

import argparse
import functools
import struct
import warnings

import pytest
import torch
from torch import nn

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
from splitbench.compression.bitstream import header_size, unpack
from splitbench.compression.latent_coders import Quantize8Bit
from splitbench.errors import CheckpointError
from splitbench.models.network import SplitNetwork
from splitbench.pipelines import LearnedPipeline

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
        normalized = model.trunk.normalize(x)  # sc2bench normalises in its data transforms
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
def _model_and_state() -> tuple[SplitNetwork, dict[str, torch.Tensor]]:
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
    assert loaded["trunk.bottleneck.coder.entropy_bottleneck._offset"].numel() == 24  # sc2bench's update() would
    with pytest.raises(CheckpointError, match="outside the mapping.*pre_transform.weight"):
        convert_state_dict({**state, "pre_transform.weight": torch.zeros(1)}, model, "resnet18")
    with pytest.raises(CheckpointError, match="mapped to nothing.*encoder.9.weight"):
        convert_state_dict({**state, "bottleneck_layer.encoder.9.weight": torch.zeros(1)}, model, "resnet18")
    missing = {k: v for k, v in state.items() if k != "layer3.0.bn1.weight"}
    with pytest.raises(CheckpointError, match="not in the checkpoint.*trunk.tail.stages.layer3.0.bn1.weight"):
        convert_state_dict(missing, model, "resnet18")
    with pytest.raises(CheckpointError, match=r"fc.weight: shape \(5, 512\)"):
        convert_state_dict({**state, "fc.weight": torch.zeros(5, 512)}, model, "resnet18")
    with pytest.raises(CheckpointError, match="not an sc2bench ResNet bottleneck checkpoint"):
        load_sc2bench({k: v for k, v in state.items() if "encoder" not in k}, image_size=SIZE)


# ---- CR+BQ: sc2bench's larger_resnet_bottleneck stack with torchdistill's 8-bit quantizer

CRBQ_CHANNELS = 12


def _randomize_batchnorm(model: nn.Module) -> None:
    """Random affine parameters and running statistics in every BatchNorm (eval mode uses the statistics)."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))


def _crbq_reference(split_after: str):
    """sc2bench's CR+BQ ResNet-50 (the smallest ResNet its stack fits) with 8-bit quantization, random weights.

    ``layer2``: sc2bench 0.1.1's ``larger_resnet_bottleneck`` in place of conv1..layer2 (tail layer3-4,
    as its ``short_module_names`` for this layer). ``layer1``: the layout of sc2bench's published ImageNet
    CR+BQ checkpoints, which 0.1.1 no longer builds by name; it is the ResNet stem followed by 0.1.1's
    ``larger_resnet_layer1_bottleneck``, module for module, so the test composes it from those.
    """
    pytest.importorskip("sc2bench")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sc2bench.models.backbone import SplittableResNet, splittable_resnet
        from sc2bench.models.layer import SimpleBottleneck, larger_resnet_layer1_bottleneck
        from sc2bench.transforms.misc import SimpleDequantizer, SimpleQuantizer
        from torchvision.models import resnet50

    torch.manual_seed(0)
    quantizer, dequantizer = SimpleQuantizer(num_bits=8), SimpleDequantizer(num_bits=8)
    if split_after == "layer2":
        ref = splittable_resnet(
            {"key": "larger_resnet_bottleneck",
             "kwargs": {"bottleneck_channel": CRBQ_CHANNELS, "compressor_transform": quantizer,
                        "decompressor_transform": dequantizer}},
            resnet_name="resnet50", num_classes=10, skips_avgpool=False, skips_fc=False,
            short_module_names=["layer3", "layer4"])
    else:
        resnet = resnet50(num_classes=10)
        inner = larger_resnet_layer1_bottleneck(CRBQ_CHANNELS)
        stem = [resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool]
        bottleneck = SimpleBottleneck(nn.Sequential(*stem, *inner.encoder), inner.decoder, quantizer, dequantizer)
        ref = SplittableResNet(bottleneck, resnet, skips_avgpool=False, skips_fc=False)
    _randomize_batchnorm(ref)
    return ref.eval()


@pytest.mark.parametrize(("split_after", "encoder_params", "latent_side"),
                         [("layer2", 12_736, 9), ("layer1", 160_832, 20)])
def test_crbq_same_predictions_and_payload_as_sc2bench(split_after, encoder_params, latent_side):
    from torchdistill.common.file_util import get_binary_object_size

    ref = _crbq_reference(split_after)
    model = load_sc2bench(ref.state_dict(), image_size=SIZE)
    coder = model.trunk.coder
    assert (model.trunk.split_after, coder.channels, coder.integer_zero_point) == (split_after, CRBQ_CHANNELS, True)
    pipeline = LearnedPipeline(model)
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    # sc2bench quantizes with one min/max per forward call and evaluates at batch size 1; so does this
    # comparison (per-sample on both sides, so the device's float sums run in the same order)
    payloads = [pipeline.mobile(x[i : i + 1])[0] for i in range(3)]
    with torch.no_grad():
        normalized = model.trunk.normalize(x)
        expected = torch.cat([ref(normalized[i : i + 1]) for i in range(3)])
        sent = [ref.bottleneck_layer.encode(normalized[i : i + 1])["z"] for i in range(3)]
    # the server runs in channels-last layout and, for the three bitstreams at once, as one batch: both change
    # only the float summation order
    tolerance = 1e-5 * max(1.0, expected.abs().max().item())
    got = torch.cat([pipeline.server([p]) for p in payloads])
    assert (got - expected).abs().max().item() < tolerance
    batched = pipeline.server(payloads)
    assert (batched - expected).abs().max().item() < tolerance

    # what sc2bench's QuantizedTensor carries, byte for byte: float32 scale, the zero point (an int
    # in [0, 255], one byte), the uint8 values; our bitstream is that plus the container header
    for payload, quantized in zip(payloads, sent, strict=True):
        values = quantized.tensor
        assert values.shape == (1, CRBQ_CHANNELS, latent_side, latent_side)
        carried = struct.pack("<fB", float(quantized.scale), quantized.zero_point) + values.numpy().tobytes()
        assert unpack(payload).segments == (carried,)
        assert len(payload) == header_size(payload) + len(carried) == 6 + 5 + values.numel()
        # sc2bench's FileSizeAnalyzer counts the pickle of {'z': QuantizedTensor}: hundreds of bytes more
        assert len(payload) < get_binary_object_size({"z": quantized}, unit_size=1)
    assert len({p[header_size(p):][:5] for p in payloads}) == 3  # per-sample scale and zero point
    assert pipeline.mobile_params() == sum(p.numel() for p in ref.bottleneck_layer.encoder.parameters()) \
        == encoder_params


def test_integer_zero_point_quantizer_is_torchdistills():
    """Quantize8Bit(integer_zero_point=True) against torchdistill's quantize/dequantize_tensor, which
    sc2bench's SimpleQuantizer/SimpleDequantizer(num_bits=8) call: signed, all-positive (zero point
    clamps to 0) and all-negative (clamps to 255, values below clip) tensors."""
    pytest.importorskip("sc2bench")
    from torchdistill.common.tensor_util import dequantize_tensor, quantize_tensor

    coder = Quantize8Bit(4, integer_zero_point=True).eval()
    g = torch.Generator().manual_seed(3)
    for y in (torch.randn(1, 4, 5, 7, generator=g) * 3, torch.rand(1, 4, 5, 7, generator=g) + 2,
              -torch.rand(1, 4, 5, 7, generator=g) - 2):
        ref = quantize_tensor(y, num_bits=8)
        carried = struct.pack("<fB", float(ref.scale), ref.zero_point) + ref.tensor.numpy().tobytes()
        strings = coder.compress(y)
        assert strings == [(carried,)]
        assert torch.equal(coder.decompress(strings, y.shape[-2:]), dequantize_tensor(ref))
        assert torch.equal(coder.quantize(y), dequantize_tensor(ref))


@pytest.mark.parametrize(("split_after", "latent_side"), [("layer1", 20), ("layer2", 9)])
def test_crbq_checkpoint_mapping_is_strict(split_after, latent_side):
    """Without sc2bench: a CR+BQ state dict in sc2bench's key names (ResNet-18, whose split point widths
    splitbench's layout follows) loads strictly, its layout read off the weights."""
    arch = Sc2benchArchitecture("crbq", "resnet18", 10, 3, (), (), split_after=split_after)
    model = build_model(arch, SIZE)
    inverse = {"trunk.bottleneck.encoder.": "bottleneck_layer.encoder.",
               "trunk.bottleneck.decoder.": "bottleneck_layer.decoder.",
               **{v: k for k, v in tail_prefixes("resnet18", split_after).items()}}
    state = {}
    for key, value in model.state_dict().items():
        prefix = next(p for p in inverse if key.startswith(p))
        state[inverse[prefix] + key[len(prefix) :]] = value
    assert infer_architecture(state) == arch
    assert ("layer2.0.conv1.weight" in state) == (split_after == "layer1")
    loaded = load_sc2bench(state, image_size=SIZE)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    assert loaded.trunk.bottleneck.encoder(torch.zeros(1, 3, SIZE, SIZE)).shape[-1] == latent_side
    with pytest.raises(CheckpointError, match="outside the mapping.*bottleneck_layer.compressor.x"):
        convert_state_dict({**state, "bottleneck_layer.compressor.x": torch.zeros(1)}, model, "resnet18")
    missing = {k: v for k, v in state.items() if k != "bottleneck_layer.decoder.0.running_var"}
    with pytest.raises(CheckpointError, match="not in the checkpoint.*trunk.bottleneck.decoder.0.running_var"):
        convert_state_dict(missing, model, "resnet18")
    with pytest.raises(CheckpointError, match="with [36] encoder convolutions"):  # another bottleneck_idx
        infer_architecture({**state, "bottleneck_layer.encoder.20.weight": torch.zeros(3, 3, 2, 2)})
