import pytest
import torch

from splitbench.complexity import count_macs
from splitbench.methods.entropic_student import EntropicStudentArgs
from splitbench.models import SplitPointError, get_backbone
from splitbench.models.bottlenecks import BottleneckShapeError
from splitbench.models.builders import bottleneck_student, classifier_network
from splitbench.pipelines import LearnedPipeline
from splitbench.registry import UnknownNameError


def test_unknown_backbone_lists_known_ones():
    with pytest.raises(UnknownNameError, match="resnet50"):
        get_backbone("resnet51")


def test_staged_network_equals_the_original_model():
    import torchvision

    torch.manual_seed(0)
    original = torchvision.models.resnet18(num_classes=7).eval()
    staged = get_backbone("resnet18", 7).eval()
    staged.stages.load_state_dict({f"{k}": v for k, v in _regroup(original.state_dict()).items()})
    x = torch.rand(2, 3, 64, 64)
    expected = original((x - staged.normalize.mean) / staged.normalize.std)
    assert torch.allclose(staged(x), expected, atol=1e-5)
    # running in two halves at a split point gives the same result
    middle = staged(x, stop="layer2")
    assert torch.allclose(staged(middle, start="layer3"), expected, atol=1e-5)


def _regroup(state):
    groups = {"conv1": "stem.0", "bn1": "stem.1", "fc": "head.2"}
    out = {}
    for key, value in state.items():
        head, rest = key.split(".", 1)
        prefix = groups.get(head, head)
        out[f"{prefix}.{rest}"] = value
    return out


def test_split_points_and_shapes():
    net = get_backbone("resnet10n", 10)
    assert net.split_points() == ["stem", "layer1", "layer2", "layer3", "layer4"]
    shapes = net.stage_shapes(64)
    assert shapes["layer1"] == (32, 16, 16) and shapes["head"] == (10,)
    with pytest.raises(SplitPointError, match="valid: stem, layer1"):
        net.check_split_point("layer7")


def test_reference_encoder_size_matches_the_published_fp24():
    """FP-24 on ResNet-50 at 224 px: 138,672 encoder parameters, latent 24x55x55 (Matsubara et al., WACV 2022;
    sc2bench reports a 0.535 MiB encoder)."""
    teacher = get_backbone("resnet50", 1000)
    student = bottleneck_student(classifier_network(teacher, 224), EntropicStudentArgs(beta=0.1), 224)
    student.trunk.coder.update()
    pipeline = LearnedPipeline(student.eval())
    x = torch.rand(1, 3, 224, 224)
    stats = pipeline.encoder_stats(x)
    assert stats["params"] == 138_672
    assert pipeline.mobile_forward(x)[0].latent.shape == (1, 24, 55, 55)
    state = pipeline.mobile_state()
    network_bits = sum(t.numel() * t.element_size() * 8 for k, t in state.items() if k.startswith("network."))
    table_bits = sum(t.numel() * t.element_size() * 8 for k, t in state.items() if k.startswith("coder."))
    assert stats["size_bits"] == network_bits + table_bits
    assert 0.525 < network_bits / 8 / 2**20 < 0.535  # reference: 0.535 MiB incl. entropy-model parameters
    assert table_bits > 0  # the coder tables travel to the device too (their size depends on training)
    # ResNet-50 stem + layer1, which the bottleneck replaces, is larger (0.871 MiB reference)
    replaced = sum(p.numel() for n in ("stem", "layer1") for p in teacher.stages[n].parameters())
    assert replaced * 4 / 2**20 > 0.8


def test_student_output_shape_and_split_errors():
    teacher = classifier_network(get_backbone("resnet10n", 10), 64)
    student = bottleneck_student(teacher, EntropicStudentArgs(beta=1, split_after="layer2"), 64)
    out = student(torch.rand(2, 3, 64, 64))
    assert out.predictions["classification"].shape == (2, 10)
    assert out.features["layer2"].shape == (2, 64, 8, 8)
    assert out.likelihoods["y"].shape[1] == 24
    assert student.trunk.levels == ["layer2", "layer3", "layer4"]  # what stage 1 distils: no logits
    with pytest.raises(BottleneckShapeError, match=r"\(64, 8, 8\)"):
        bottleneck_student(teacher, EntropicStudentArgs(beta=1, split_after="layer2", decoder_channels=[8]), 64)
    with pytest.raises(SplitPointError):
        bottleneck_student(teacher, EntropicStudentArgs(beta=1, split_after="fc"), 64)


def test_count_macs_of_a_conv():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_macs(conv, torch.zeros(1, 3, 10, 10)) == 3 * 8 * 9 * 100


def test_the_published_bottleneck_is_odd_and_conv_bias_frees_it():
    """Bias-free convs and GDN/IGDN make the published bottleneck an odd function (f(-x) = -f(x)), which cannot
    output the positive offset of a post-ReLU split point by itself; ``conv_bias`` adds the biases."""
    from splitbench.compression.latent_coders import FactorizedPrior
    from splitbench.models.bottlenecks import gdn_bottleneck

    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    for conv_bias in (False, True):
        bottleneck = gdn_bottleneck((16, 8, 8), 32, FactorizedPrior(4), conv_bias=conv_bias).eval()
        biases = [m.bias for m in bottleneck.modules() if isinstance(m, torch.nn.Conv2d)]
        assert all((b is not None) == conv_bias for b in biases)
        with torch.no_grad():
            for b in biases if conv_bias else ():
                b.normal_()
            codec = torch.nn.Sequential(bottleneck.encoder, bottleneck.decoder)
            odd = torch.allclose(codec(-x), -codec(x), atol=1e-5)
        assert odd != conv_bias
