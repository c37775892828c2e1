"""Neural input compression: trained through splitbench's trainer, one container bitstream per
sample that decodes to exactly what CompressAI's own compress/decompress gives, honest byte and
encoder-size accounting, strict rejection of bad bitstreams, and loading without a network."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from conftest import tiny_raw

from splitbench.compression.bitstream import BitstreamError, header_size, pack, unpack
from splitbench.compression.latent_coders import bits_per_sample
from splitbench.data import get_dataset
from splitbench.errors import ConfigError
from splitbench.experiment import validate
from splitbench.methods import BuildContext, get_method
from splitbench.models.backbones import PretrainedUnavailableError, get_backbone
from splitbench.models.builders import classifier_network
from splitbench.models.images import pad_replicate
from splitbench.models.neural_codecs import ARCHITECTURES, coder_ready
from splitbench.pipelines import NeuralCodecPipeline
from splitbench.runs import build_pipeline, evaluate_experiment, train_experiment
from splitbench.training.recipes import RateDistortionTraining

CPU = torch.device("cpu")
TINY = {"N": 8, "M": 12}


def config(**method_args):
    args = {"arch": "mbt2018-mean", **TINY, "lmbda": 0.01, **method_args}
    return validate(tiny_raw("neural_codec", method_args=args, eval={"device": "cpu"}, train={
        "device": "cpu", "max_steps_per_epoch": 3,
        "stages": [{"name": "rate_distortion", "epochs": 1, "optimizer": {"name": "adam", "lr": 1e-3}}]}))


def teacher() -> torch.nn.Module:
    return classifier_network(get_backbone("resnet10n", 4), 32)


def val_images(n: int = 4) -> torch.Tensor:
    data = get_dataset("shapes", "val", image_size=32, num_samples=n)
    return torch.stack([data[i][0] for i in range(n)])


def briefly_trained(arch: str) -> torch.nn.Module:
    """Two optimizer steps and the end of the stage (quantile fit + coder tables), no trainer."""
    model = ARCHITECTURES[arch].model(**TINY)
    module = RateDistortionTraining(model, lmbda=0.01)
    optimizer = torch.optim.Adam(module.parameters(), 1e-3)
    for _ in range(2):
        loss = module(val_images(), None)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    module.end_stage("rate_distortion")
    return model.eval()


@pytest.fixture(scope="module")
def trained(trained_teacher):
    """A tiny mbt2018-mean codec trained through train_experiment, next to the session's teacher."""
    cfg = config()
    train_experiment(cfg, trained_teacher, progress=False)
    return cfg, trained_teacher


def test_trained_through_the_trainer_and_evaluated(trained, tmp_path):
    cfg, out = trained
    assert cfg.run_name() == "neural_codec-mbt2018-mean-resnet10n-lambda0.01"
    record = evaluate_experiment(cfg, out, progress=False, results=tmp_path / "r.jsonl")
    assert record["rate_param"] == {"lambda": 0.01} and record["variant"] == "mbt2018-mean"
    assert 0 <= record["metrics"]["top1"] <= 1
    pipeline = build_pipeline(cfg, out, CPU)
    images = torch.stack([get_dataset("shapes", "val", image_size=32, num_samples=40)[i][0] for i in range(40)])
    payloads = pipeline.mobile(images)
    assert record["data_size"]["bytes_mean"] == pytest.approx(sum(map(len, payloads)) / 40)
    # the estimate (−Σlog2 p / 8) is what the coder pays, up to the container and the rANS flushes
    overhead = header_size(payloads[0]) + 2 * 8
    estimate = record["data_size"]["estimate_bytes_mean"]
    assert estimate + overhead - 3 <= record["data_size"]["bytes_mean"] <= estimate * 1.05 + overhead + 3
    # encoder size: g_a, h_a, h_s and both coders' tables, well beyond g_a's weights alone
    codec = pipeline.codec
    g_a_bits = 32 * sum(p.numel() for p in codec.g_a.parameters())
    encoder = record["encoder"]
    assert encoder["params"] == sum(p.numel() for m in (codec.g_a, codec.h_a, codec.h_s) for p in m.parameters())
    tables = codec.gaussian_conditional._quantized_cdf.numel() + codec.entropy_bottleneck._quantized_cdf.numel()
    assert encoder["size_bits"] >= 32 * encoder["params"] + 32 * tables > g_a_bits
    assert encoder["macs"] > 0
    assert pipeline.describe_runtime()["codec"] == {"arch": "mbt2018-mean", "N": 8, "M": 12, "source": "trained",
                                                    "lambda": 0.01}


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_bitstreams_decode_like_compressai(arch):
    model = briefly_trained(arch)
    pipeline = NeuralCodecPipeline(model, teacher(), CPU)
    images = val_images(3)
    payloads = pipeline.mobile(images)
    padded = pad_replicate(images, model.downsampling_factor)  # 32 px pads to 64 for the hyperprior models
    with torch.no_grad():
        own = model.compress(padded)
        reference = model.decompress(own["strings"], own["shape"])["x_hat"][..., :32, :32]
    for i, payload in enumerate(payloads):
        stream = unpack(payload)
        assert stream.shape == (32, 32)
        assert list(stream.segments) == [strings[i] for strings in own["strings"]]
    assert torch.equal(pipeline.decode(payloads), reference)
    estimate = pipeline.estimate_bits(images) / 8
    with torch.no_grad():  # the features' likelihoods are the codec's forward's (which also runs g_s)
        forward = bits_per_sample(model(padded)["likelihoods"]) / 8
    assert torch.allclose(estimate, forward, rtol=1e-5)
    for payload, bits in zip(payloads, estimate.tolist(), strict=True):
        overhead = header_size(payload) + 8 * len(own["strings"])
        assert bits + overhead - 3 <= len(payload) <= bits * 1.05 + overhead + 3


def test_bad_bitstreams_are_rejected():
    model = briefly_trained("bmshj2018-hyperprior")
    pipeline = NeuralCodecPipeline(model, teacher(), CPU, max_pixels=64 * 64)
    (payload,) = pipeline.mobile(val_images(1))
    corrupt = bytearray(payload)
    corrupt[-1] ^= 0x40
    y, z = unpack(payload).segments
    for bad, match in [(bytes(corrupt), "checksum"), (payload[:-3], "checksum|truncated"),
                       (pack((32, 32), [y]), "segments"), (pack((32, 32, 1), [y, z]), "3-D"),
                       (pack((4096, 4096), [y, z]), "exceeds")]:
        with pytest.raises(BitstreamError, match=match):
            pipeline.decode([bad])


def test_untrained_coder_and_bad_args_fail_clearly():
    with pytest.raises(Exception, match="no tables"):
        NeuralCodecPipeline(ARCHITECTURES["mbt2018"].model(**TINY), teacher(), CPU)
    with pytest.raises(ConfigError, match="set lmbda"):
        config(lmbda=None)
    with pytest.raises(ConfigError, match="go together"):
        config(quality=3)


def test_pretrained_fails_offline_with_a_clear_message(monkeypatch):
    import compressai.zoo.image

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(compressai.zoo.image, "load_state_dict_from_url", offline)
    cfg = config(pretrained=True, quality=2, lmbda=None)
    assert cfg.run_name() == "neural_codec-mbt2018-mean-resnet10n-quality2"
    method, args = get_method("neural_codec"), cfg.args()
    ctx = BuildContext(cfg, 4, CPU)
    model = method.build(ctx, args, None)
    assert (model.N, model.M) == (128, 192)  # the zoo's widths at quality 2, not N/M
    with pytest.raises(PretrainedUnavailableError, match="method_args.weights"):
        method.pipeline(ctx, args, None, teacher())


def test_local_weights_file_is_the_codec(tmp_path):
    source = briefly_trained("bmshj2018-factorized")
    path = tmp_path / "codec.pth.tar"
    torch.save({"epoch": 1, "state_dict": source.state_dict()}, path)
    cfg = config(arch="bmshj2018-factorized", weights=str(path), lmbda=None)
    method, args = get_method("neural_codec"), cfg.args()
    assert not method.needs_training(cfg)
    pipeline = method.pipeline(BuildContext(cfg, 4, CPU), args, None, teacher())
    assert coder_ready(pipeline.codec)
    images = val_images(2)
    assert pipeline.mobile(images) == NeuralCodecPipeline(source, teacher(), CPU).mobile(images)
    bad = config(arch="bmshj2018-factorized", weights=str(path), lmbda=None, M=16)
    with pytest.raises(Exception, match="does not match"):
        method.pipeline(BuildContext(bad, 4, CPU), bad.args(), None, teacher())
