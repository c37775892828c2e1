import subprocess
import sys

import pytest
import torch

from splitbench.compression.bitstream import BitstreamError, unpack
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


def test_fit_quantiles_solves_the_aux_loss():
    c = FactorizedPrior(4)
    assert c.aux_loss().item() > 100
    assert c.fit_quantiles() < 1e-2


def test_lossless_latent_round_trip_and_exact_sizes(coder):
    y = torch.randn(5, 8, 6, 6) * 2
    payloads = coder.compress(y)
    assert len(payloads) == 5 and all(isinstance(p, bytes) for p in payloads)
    assert torch.equal(coder.decompress(payloads), coder.quantize(y))
    # Each sample is coded on its own: coding one at a time gives the same bytes.
    assert [coder.compress(y[i : i + 1])[0] for i in range(5)] == payloads
    for p in payloads:
        assert unpack(p).shape == (6, 6)


def test_coded_size_tracks_the_estimate(coder):
    y = torch.randn(16, 8, 6, 6) * 2
    _, likelihoods = coder(y)
    estimate = bits_per_sample(likelihoods) / 8
    sizes = torch.tensor([len(p) for p in coder.compress(y)], dtype=torch.float)
    # rANS flushes 4-8 bytes, the container adds 6: small fixed overhead on ~150 byte payloads
    assert (sizes - estimate).abs().max() < 20


def test_corrupted_and_mismatched_payloads_are_rejected(coder):
    payload = coder.compress(torch.randn(1, 8, 6, 6))[0]
    corrupted = bytearray(payload)
    corrupted[-3] ^= 0x10
    with pytest.raises(BitstreamError):
        coder.decompress([bytes(corrupted)])
    with pytest.raises(BitstreamError):
        coder.decompress([payload[:-5]])
    other = coder.compress(torch.randn(1, 8, 4, 4))[0]
    with pytest.raises(BitstreamError, match="share a latent shape"):
        coder.decompress([payload, other])


def test_tables_survive_save_and_load(coder, tmp_path):
    y = torch.randn(3, 8, 6, 6)
    payloads = coder.compress(y)
    save_weights(coder, tmp_path / "coder.safetensors")
    fresh = FactorizedPrior(8)
    load_weights(fresh, tmp_path / "coder.safetensors")
    assert fresh.compress(y) == payloads
    assert torch.equal(fresh.decompress(payloads), coder.quantize(y))


def test_another_process_decodes_bit_exactly(coder, tmp_path):
    y = torch.randn(2, 8, 6, 6) * 2
    payloads = coder.compress(y)
    save_weights(coder, tmp_path / "coder.safetensors")
    for i, p in enumerate(payloads):
        (tmp_path / f"{i}.bin").write_bytes(p)
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
out = c.decompress([(d / "0.bin").read_bytes(), (d / "1.bin").read_bytes()])
assert torch.equal(out, torch.load(d / "expected.pt")), "decoded latent differs"
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
