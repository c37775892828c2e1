"""CR+BQ with sc2bench's conv/BatchNorm/ReLU bottleneck (``architecture: larger_resnet``) trains and
evaluates through the same split protocol as every method; parity with sc2bench itself is in
``test_parity_sc2bench.py``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_raw

from splitbench.compression.bitstream import pack
from splitbench.compression.latent_coders import Quantize8Bit
from splitbench.data import get_dataset
from splitbench.errors import ConfigError
from splitbench.experiment import validate
from splitbench.models.bottlenecks import BottleneckShapeError
from splitbench.runs import WEIGHTS, build_pipeline, evaluate_experiment, train_experiment

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
STAGES = [{"name": "bottleneck", "epochs": 1, "optimizer": {"name": "adam", "lr": 1e-3}}]


def config(method_args: dict, teacher_out):
    raw = tiny_raw("cr_bq", teacher={"checkpoint": str(teacher_out / "classifier-resnet10n" / WEIGHTS)},
                   eval={"device": "cpu"}, data={"train_samples": 32, "val_samples": 20})
    raw["method_args"] = method_args
    raw["train"]["stages"] = STAGES
    return validate(raw)


# resnet10n at 32 px: layer1 is 32×8×8 (latent 12×12 after the stem and four padded 2×2 convs),
# layer2 is 64×4×4 (latent 5×5 after the stem and the strided 2×2 conv)
@pytest.mark.parametrize(("split_after", "latent_side"), [("layer1", 12), ("layer2", 5)])
def test_larger_resnet_trains_and_evaluates(split_after, latent_side, trained_teacher, tmp_path):
    args = {"architecture": "larger_resnet", "channels": 3, "integer_zero_point": True, "split_after": split_after}
    cfg = config(args, trained_teacher)
    train_experiment(cfg, tmp_path, progress=False)
    record = evaluate_experiment(cfg, tmp_path, progress=False)
    assert (record["method"], record["variant"], record["rate_param"]) == ("cr_bq", "larger_resnet-8bit",
                                                                           {"channels": 3})
    assert 0 <= record["metrics"]["top1"] <= record["metrics"]["top5"] <= 1
    # uint8 values + float32 scale + uint8 zero point + the 6-byte container header
    assert record["data_size"]["bytes_mean"] == 3 * latent_side**2 + 5 + 6

    pipeline = build_pipeline(cfg, tmp_path, CPU)
    data = get_dataset("shapes", "val", image_size=32, num_samples=8)
    images = torch.stack([data[i][0] for i in range(8)])
    groups = pipeline.mobile_forward(images)
    payloads = pipeline.encode(groups)
    assert np.mean([len(p) for p in payloads]) == record["data_size"]["bytes_mean"]
    coder = pipeline.network.trunk.coder
    with torch.no_grad():
        assert torch.equal(pipeline.decode(payloads)[0].latent, coder.quantize(groups[0].latent))
    first = groups[0]._replace(indices=[0, 1, 2], sizes=groups[0].sizes[:3], latent=groups[0].latent[:3])
    assert pipeline.encode([first]) == payloads[:3]
    assert isinstance(coder, Quantize8Bit) and coder.integer_zero_point
    encoder = pipeline.network.trunk.bottleneck.encoder
    assert record["encoder"]["params"] == sum(p.numel() for p in encoder.parameters())


def test_larger_resnet_bad_settings(trained_teacher):
    with pytest.raises(ConfigError, match="decoder_channels apply to architecture 'gdn' only"):
        config({"architecture": "larger_resnet", "decoder_channels": [8, 8]}, trained_teacher)
    with pytest.raises(ConfigError, match="method_args.architecture"):
        config({"architecture": "resnet"}, trained_teacher)
    cfg = config({"architecture": "larger_resnet", "split_after": "layer3"}, trained_teacher)
    with pytest.raises(BottleneckShapeError, match="stride-4 \\(layer1\\) or stride-8 \\(layer2\\).*stride 16"):
        build_pipeline(cfg, trained_teacher, CPU)


def test_integer_zero_point_format():
    coder = Quantize8Bit(2, integer_zero_point=True).eval()
    y = torch.randn(3, 2, 4, 4)
    y[1] += 10  # all positive: the zero point clamps to 0
    strings = coder.compress(y)
    assert all(len(pack((4, 4), s)) == 6 + 5 + 32 for s in strings)
    assert torch.equal(coder.decompress(strings, (4, 4)), coder.quantize(y))
    scale, zero_point = coder._params(y)
    assert zero_point[1].item() == 0 and torch.equal(zero_point, zero_point.floor())
    assert coder.decompress(strings, (4, 4))[1].min() > 0


@pytest.mark.parametrize("integer_zero_point", [False, True])
def test_the_torch_quantizer_and_the_numpy_code_agree_to_the_bit(integer_zero_point):
    """The eval forward (torch) and the bytes (numpy, also the torch-free device's) are one arithmetic: decoding
    the bytes gives exactly the torch quantizer's output, also for constant and one-signed samples."""
    coder = Quantize8Bit(3, integer_zero_point=integer_zero_point).eval()
    torch.manual_seed(0)
    y = torch.randn(6, 3, 5, 7) * torch.logspace(-3, 3, 6).view(-1, 1, 1, 1)
    y[1] = 0.25  # constant
    y[2] = y[2].abs() + 1  # all positive
    strings = coder.compress(y)
    assert torch.equal(coder.decompress(strings, (5, 7)), coder.quantize(y))
    values, _, _ = coder.code.quantize(y.numpy())
    assert values.reshape(y.shape).tolist() == coder._symbols(y, *coder._params(y)).to(torch.uint8).tolist()
