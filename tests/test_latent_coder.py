import subprocess
import sys

import pytest
import torch

from splitbench.compression.bitstream import BitstreamError, pack, unpack
from splitbench.compression.latent_coders import FactorizedPrior, bits_per_sample
from splitbench.training.checkpoint import load_weights, save_weights


@pytest.fixture(scope="module")
def coder():
    torch.manual_seed(0)
    c = FactorizedPrior(8)
    # A density fitted to the data it will code, as after rate training.
    opt = torch.optim.Adam(c.parameters(), lr=0.05)
    for _ in range(40):
        y = torch.randn(8, 8, 6, 6) * 2
        _, lk = c(y)
        loss = bits_per_sample(lk).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    c.update()
    return c.eval()


def wire(coder, y):
    """What crosses the split: each sample's strings in one container (the pipelines' wire rule)."""
    return [pack(y.shape[-2:], strings) for strings in coder.compress(y)]


def unwire(coder, payloads, shape):
    return coder.decompress([unpack(p, ndim=2, num_segments=coder.num_segments).segments for p in payloads], shape)


def test_fit_quantiles_solves_the_aux_loss():
    c = FactorizedPrior(4)
    assert c.aux_loss().item() > 100
    assert c.fit_quantiles() < 1e-2


def test_lossless_latent_round_trip_and_exact_sizes(coder):
    y = torch.randn(5, 8, 6, 6) * 2
    strings = coder.compress(y)
    assert len(strings) == 5 and all(len(s) == 1 and isinstance(s[0], bytes) for s in strings)
    assert torch.equal(coder.decompress(strings, (6, 6)), coder.quantize(y))
    # Each sample is coded on its own: coding one at a time gives the same bytes.
    assert [coder.compress(y[i : i + 1])[0] for i in range(5)] == strings


def test_strings_are_compressais_byte_for_byte(coder):
    """The compressai backend calls CompressAI's C++ rANS with its tables converted once: the strings, and what
    they decode to, are EntropyBottleneck.compress's and .decompress's, escapes included."""
    from splitbench.compression.rans_coder import pad_for_decoder

    y = torch.randn(6, 8, 5, 7) * 2
    y[1, 3, 2, 2], y[4, 0, 0, 6] = 90.0, -300.0  # far outside the tables: escape-coded
    eb = coder.entropy_bottleneck
    strings = coder.compress(y)
    assert [s for (s,) in strings] == eb.compress(y)
    decoded = eb.decompress([pad_for_decoder(s, 8 * 5 * 7) for (s,) in strings], (5, 7))
    assert torch.equal(coder.decompress(strings, (5, 7)), decoded)
    assert torch.equal(decoded, coder.quantize(y))


def test_the_rans_coder_refuses_symbols_its_tables_cannot_code(coder):
    """The C++ coder checks no index: a latent of another channel count, or an index past the tables, is refused
    before it gets there."""
    from splitbench.compression.latent_coders import rans_coder

    rans = rans_coder(coder.entropy_bottleneck)
    with pytest.raises(ValueError, match="5 channels"):
        rans.encode(torch.zeros(1, 5, 2, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match="table indexes"):
        rans.encode(torch.zeros(1, 8, 2, 2, dtype=torch.int32), torch.full((1, 8, 2, 2), 8))


@pytest.mark.parametrize("spread", [2.0, 6.0], ids=["fitted", "escapes"])
def test_coded_size_tracks_the_estimate(coder, spread):
    """The estimate is the coder's own table model: the real strings are it plus rANS's flush (its 32-bit state
    and the last partial word: 4 to 8 bytes), also where many values escape the tables; the continuous
    likelihoods the model trains with agree with it up to the tables' 16-bit rounding and escape scheme."""
    y = torch.randn(16, 8, 6, 6) * spread
    _, likelihoods = coder(y)
    estimate = coder.estimate_bits(y) / 8
    strings = torch.tensor([len(s) for (s,) in coder.compress(y)], dtype=torch.float64)
    assert ((strings - estimate > 4 - 1e-6) & (strings - estimate <= 8)).all()
    continuous = bits_per_sample(likelihoods).double() / 8
    assert torch.allclose(estimate, continuous, rtol=1e-3 if spread == 2.0 else 5e-2)
    sizes = torch.tensor([len(p) for p in wire(coder, y)], dtype=torch.float64)
    assert torch.equal(sizes - strings, torch.full((16,), 6.0, dtype=torch.float64))  # the container's header


def test_the_estimate_does_not_depend_on_the_batch(coder):
    """CompressAI's likelihood runs a matmul whose rounding depends on how many values it sees; the estimate
    must not (a record's estimate is the same at any evaluation batch size). Values far outside the coder's
    table range (escape-coded) included."""
    y = torch.randn(20, 8, 6, 6) * 2
    y[3, 2, 1, 1] = 80.0
    alone = torch.cat([coder.estimate_bits(y[i : i + 1]) for i in range(20)])
    assert torch.equal(coder.estimate_bits(y), alone)
    assert alone[3] > alone.median() + 10  # the outlier costs its escape bits


def test_corrupted_and_mismatched_payloads_are_rejected(coder):
    payload = wire(coder, torch.randn(1, 8, 6, 6))[0]
    corrupted = bytearray(payload)
    corrupted[-3] ^= 0x10
    with pytest.raises(BitstreamError):
        unwire(coder, [bytes(corrupted)], (6, 6))
    with pytest.raises(BitstreamError):
        unwire(coder, [payload[:-5]], (6, 6))
    with pytest.raises(BitstreamError, match="1 segment"):
        coder.decompress([(b"\0", b"\0")], (6, 6))
    with pytest.raises(BitstreamError, match="no bitstreams"):
        coder.decompress([], (6, 6))


def test_tables_survive_save_and_load(coder, tmp_path):
    y = torch.randn(3, 8, 6, 6)
    strings = coder.compress(y)
    save_weights(coder, tmp_path / "coder.safetensors")
    fresh = FactorizedPrior(8)
    load_weights(fresh, tmp_path / "coder.safetensors")
    assert fresh.compress(y) == strings
    assert torch.equal(fresh.decompress(strings, (6, 6)), coder.quantize(y))


def test_another_process_decodes_bit_exactly(coder, tmp_path):
    y = torch.randn(2, 8, 6, 6) * 2
    strings = coder.compress(y)
    save_weights(coder, tmp_path / "coder.safetensors")
    for i, (s,) in enumerate(strings):
        (tmp_path / f"{i}.bin").write_bytes(s)
    torch.save(coder.quantize(y), tmp_path / "expected.pt")
    script = f"""
import torch, warnings
warnings.simplefilter("ignore")
from pathlib import Path
from splitbench.compression.latent_coders import FactorizedPrior
from splitbench.training.checkpoint import load_weights
d = Path({str(tmp_path)!r})
c = FactorizedPrior(8)
load_weights(c, d / "coder.safetensors")
out = c.decompress([((d / "0.bin").read_bytes(),), ((d / "1.bin").read_bytes(),)], (6, 6))
assert torch.equal(out, torch.load(d / "expected.pt")), "decoded latent differs"
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
