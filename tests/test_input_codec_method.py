"""The input-codec pipeline: a process pool changes nothing but speed, codec settings and worker
count reach the runtime description, and a bitstream not produced by this encode is still decoded
(and rejected when corrupt)."""

from __future__ import annotations

import pytest
import torch

from splitbench.codecs import CodecError, get_codec
from splitbench.data import get_dataset
from splitbench.errors import ConfigError
from splitbench.experiment import validate
from splitbench.models.backbones import get_backbone
from splitbench.models.builders import classifier_network
from splitbench.pipelines import InputCodecPipeline


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    data = get_dataset("shapes", "val", image_size=32, num_samples=12)
    return torch.stack([data[i][0] for i in range(12)])


def run(pipeline: InputCodecPipeline, images: torch.Tensor) -> tuple[list[bytes], torch.Tensor]:
    payloads = pipeline.mobile(images)
    return payloads, pipeline.decode(payloads)


def test_pool_gives_identical_bytes_and_images(images):
    model = classifier_network(get_backbone("resnet10n", 4), 32)
    serial = InputCodecPipeline(get_codec("webp", 50), model, torch.device("cpu"), workers=1)
    pooled = InputCodecPipeline(get_codec("webp", 50), model, torch.device("cpu"), workers=2)
    try:
        expected = run(serial, images)
        for _ in range(2):  # the pool is kept across batches
            payloads, decoded = run(pooled, images)
            assert payloads == expected[0]
            assert torch.equal(decoded, expected[1])
        runtime = pooled.describe_runtime()
        assert runtime["workers"] == 2 and serial.describe_runtime()["workers"] == 1
        assert runtime["codec"] == get_codec("webp", 50).describe()
        assert runtime["codec"]["quality"] == 50
        assert set(runtime["timing"]) == {"entropy_encode_ms_mean", "entropy_decode_ms_mean"}
        assert all(v > 0 for v in runtime["timing"].values())
        assert pooled.codec_samples == {"encode": 24, "decode": 24}
    finally:
        pooled.close()
    assert pooled.pool._pool is None


def test_foreign_and_corrupt_payloads_are_decoded_here(images):
    network = classifier_network(get_backbone("resnet10n", 4), 32)
    pipeline = InputCodecPipeline(get_codec("jpeg", 50), network, torch.device("cpu"))
    payloads = pipeline.mobile(images[:2])
    reference = pipeline.decode(payloads)
    pipeline.encode(pipeline.mobile_forward(images[2:4]))  # what encode kept belongs to other images
    assert torch.equal(pipeline.decode(payloads), reference)
    with pytest.raises(CodecError):
        pipeline.decode([payloads[0][: len(payloads[0]) // 2]])


def test_codec_options_are_validated_and_named():
    raw = {"method": "input_codec", "backbone": {"name": "resnet10n"},
           "method_args": {"codec": "hevc", "quality": 30, "options": {"preset": "fast"}}}
    assert validate(raw).run_name() == "input_codec-hevc-presetfast-resnet10n-quality30"
    with pytest.raises(ConfigError, match="allowed: preset, tune"):
        validate({**raw, "method_args": {"codec": "hevc", "options": {"presets": "fast"}}})
    with pytest.raises(ConfigError, match="unknown codec 'jpg'"):
        validate({**raw, "method_args": {"codec": "jpg"}})
