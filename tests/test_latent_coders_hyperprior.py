"""Hyperprior (SHP, MSHP) and 8-bit coders: lossless latent round trips, per-sample bitstreams at any
batch size, exact sizes, untrusted input rejected, and everything the device holds counted."""

from __future__ import annotations

import pytest
import torch

from splitbench.compression.bitstream import BitstreamError, header_size, pack, unpack
from splitbench.compression.latent_coders import (
    FactorizedPrior,
    MeanScaleHyperprior,
    Quantize8Bit,
    ScaleHyperprior,
    bits_per_sample,
)
from splitbench.training.checkpoint import load_weights, save_weights

pytestmark = pytest.mark.usefixtures("one_thread")


def latent(*shape: int) -> torch.Tensor:
    return torch.randn(*shape) * 3 + 0.5


def wire(coder, y):
    """What crosses the split: each sample's strings in one container (the pipelines' wire rule)."""
    return [pack(y.shape[-2:], strings) for strings in coder.compress(y)]


def unwire(coder, payloads, shape):
    return coder.decompress([unpack(p, ndim=2, num_segments=coder.num_segments).segments for p in payloads], shape)


@pytest.fixture(scope="module", params=[ScaleHyperprior, MeanScaleHyperprior], ids=["shp", "mshp"])
def coder(request):
    torch.manual_seed(0)
    c = request.param(8, 4)
    opt = torch.optim.Adam(c.parameters(), lr=0.02)
    for _ in range(15):  # a density roughly fitted to the data, as after rate training
        _, likelihoods = c(latent(8, 8, 7, 7))
        loss = bits_per_sample(likelihoods).mean() + c.aux_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    c.update()
    return c.eval()


@pytest.mark.parametrize("shape", [(7, 7), (12, 10)], ids=["4k+3", "other"])
def test_lossless_latent_round_trip_per_sample(coder, shape):
    y = latent(5, 8, *shape)
    strings = coder.compress(y)
    assert len(strings) == 5 and all(len(s) == 2 for s in strings)
    assert torch.equal(coder.decompress(strings, shape), coder.quantize(y))
    # each sample is coded on its own: the batch it came in changes nothing, nor the one it is decoded in
    assert [coder.compress(y[i : i + 1])[0] for i in range(5)] == strings
    assert torch.equal(coder.decompress(strings[2:3], shape)[0], coder.quantize(y)[2])
    # ... and so is its rate estimate
    assert torch.equal(coder.estimate_bits(y), torch.cat([coder.estimate_bits(y[i : i + 1]) for i in range(5)]))


def test_strings_are_compressais_byte_for_byte(coder):
    """y's and z's strings are GaussianConditional.compress's and EntropyBottleneck.compress's (CompressAI's C++
    rANS, called with the tables converted once), and decode to what CompressAI's decoders return."""
    from splitbench.compression.rans_coder import pad_for_decoder

    y = latent(4, 8, 7, 7)
    y[2, 1, 3, 3] = 400.0  # escape-coded
    z, scales, means = coder._coding_params(y)
    gc, eb = coder.gaussian_conditional, coder.entropy_bottleneck
    strings = coder.compress(y)
    assert [s for s, _ in strings] == gc.compress(y, gc.build_indexes(scales), means=means)
    assert [s for _, s in strings] == eb.compress(z)
    y_hat = gc.decompress([pad_for_decoder(s, 8 * 49) for s, _ in strings], gc.build_indexes(scales), means=means)
    assert torch.equal(coder.decompress(strings, (7, 7)), y_hat)


def test_mean_scale_rounds_around_the_predicted_means(coder):
    y = latent(2, 8, 7, 7)
    y_hat = coder.quantize(y)
    assert (y_hat - y).abs().max() <= 0.5 + 1e-5
    is_integer = torch.equal(y_hat, torch.round(y_hat))
    assert is_integer != coder.predicts_means  # SHP rounds to integers, MSHP around its means


def test_sizes_are_the_bitstreams_and_track_the_estimate(coder):
    y = latent(6, 8, 7, 7)
    payloads = wire(coder, y)
    _, likelihoods = coder(y)
    assert set(likelihoods) == {"y", "z"}  # rate counts both latents
    estimate = coder.estimate_bits(y) / 8
    # the coder's tables (one per scale bucket) against the continuous Gaussian the model trains with
    assert torch.allclose(estimate, bits_per_sample(likelihoods).double() / 8, rtol=3e-2)
    strings = torch.tensor([len(s) + len(z) for s, z in coder.compress(y)], dtype=torch.float64)
    overhead = strings - estimate
    assert (overhead > 8 - 1e-6).all() and (overhead <= 16).all()  # two rANS flushes of 4 to 8 bytes
    assert all(len(p) - n in (7, 8) for p, n in zip(payloads, strings.tolist(), strict=True))  # + the header
    assert all(header_size(p) <= 9 for p in payloads)


def test_untrusted_bitstreams_are_rejected(coder):
    payload = wire(coder, latent(1, 8, 7, 7))[0]
    corrupted = bytearray(payload)
    corrupted[-3] ^= 0x10
    for bad in (bytes(corrupted), payload[:-4], payload[:5], b""):
        with pytest.raises(BitstreamError):
            unwire(coder, [bad], (7, 7))
    fp = FactorizedPrior(8)
    fp.update()
    with pytest.raises(BitstreamError, match="2 segments|segments"):
        unwire(coder, wire(fp, latent(1, 8, 7, 7)), (7, 7))
    with pytest.raises(BitstreamError, match="too small"):
        coder.decompress([(b"\0", b"\0")], (1, 1))  # an impossible latent


def test_mobile_state_counts_h_a_h_s_and_every_table(coder):
    state = coder.mobile_state()
    assert {"h_a.0.weight", "h_a.2.weight", "h_s.4.weight"} <= set(state)
    for name in ("quantized_cdf", "cdf_length", "offset"):
        assert state[f"entropy_bottleneck.{name}"].numel() > 0
        assert state[f"gaussian_conditional.{name}"].numel() > 0
    assert state["gaussian_conditional.scale_table"].numel() == 64
    hyper_params = sum(p.numel() for p in [*coder.h_a.parameters(), *coder.h_s.parameters()])
    assert sum(v.numel() for k, v in state.items() if k.startswith("h_")) == hyper_params


def test_tables_survive_save_and_load(coder, tmp_path):
    y = latent(3, 8, 7, 7)
    strings = coder.compress(y)
    save_weights(coder, tmp_path / "coder.safetensors")
    fresh = type(coder)(8, 4)
    load_weights(fresh, tmp_path / "coder.safetensors")
    fresh.eval()
    assert fresh.compress(y) == strings
    assert torch.equal(fresh.decompress(strings, (7, 7)), coder.quantize(y))


# ---------------------------------------------------------------- 8-bit quantizer (CR+BQ)


def test_8bit_round_trip_with_negative_values():
    q = Quantize8Bit(3).eval()
    y = torch.randn(4, 3, 5, 6) * 2 - 3
    y[1] -= 50  # an all-negative sample
    payloads = wire(q, y)
    decoded = unwire(q, payloads, (5, 6))
    assert torch.equal(decoded, q.quantize(y))
    span = y.flatten(1).amax(1) - y.flatten(1).amin(1)
    error = (decoded - y).flatten(1).abs().amax(1)
    assert (error <= span / 255 / 2 * 1.001 + 1e-6).all()
    assert (decoded[1] < -40).all()
    # uint8 values + scale and zero point (2 × float32) + the container header: nothing else
    assert all(len(p) == header_size(p) + 8 + 3 * 5 * 6 for p in payloads)
    assert [wire(q, y[i : i + 1])[0] for i in range(4)] == payloads
    assert q.mobile_state() == {}
    assert torch.equal(q.estimate_bits(y), torch.full((4,), 8.0 * 3 * 5 * 6))


def test_8bit_constant_latent_and_training_pass_through():
    q = Quantize8Bit(2)
    y = torch.full((1, 2, 3, 3), -1.25)
    assert torch.equal(q.decompress(q.compress(y), (3, 3)), y)
    q.train()
    x = torch.randn(2, 2, 3, 3, requires_grad=True)
    y_hat, likelihoods = q(x)
    assert y_hat is x  # distilled in float; quantized only at inference
    assert torch.allclose(bits_per_sample(likelihoods), torch.full((2,), 8.0 * 18))


def test_8bit_untrusted_bitstreams_are_rejected():
    q = Quantize8Bit(2)
    payload = wire(q, torch.randn(1, 2, 3, 3))[0]
    corrupted = bytearray(payload)
    corrupted[-1] ^= 0x01
    for bad in (bytes(corrupted), payload[:-1]):
        with pytest.raises(BitstreamError):
            unwire(q, [bad], (3, 3))
    with pytest.raises(BitstreamError, match="needs"):
        q.decompress([(bytes(8 + 17),)], (3, 3))  # one value short
    nan_params = bytes.fromhex("0000c07f") + bytes(4) + bytes(18)
    with pytest.raises(BitstreamError, match="scale"):
        q.decompress([(nan_params,)], (3, 3))


def test_channels_below_one_are_rejected():
    for build in (lambda: Quantize8Bit(0), lambda: ScaleHyperprior(0), lambda: MeanScaleHyperprior(8, 0)):
        with pytest.raises(ValueError, match=">= 1"):
            build()
