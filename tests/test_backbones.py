"""Backbone families: stage layouts as data, one split implementation, a stride-4 Entropic Student for each."""

from __future__ import annotations

import urllib.error

import pytest
import torch

from splitbench.models import SplitPointError, get_backbone
from splitbench.models.backbones import (
    LAYOUTS,
    LayoutError,
    PretrainedUnavailableError,
    create_model,
    features_layout,
    stage,
)
from splitbench.models.bottlenecks import BottleneckShapeError
from splitbench.models.builders import BottleneckArgs, bottleneck_student, classifier_network
from splitbench.pipelines import LearnedPipeline
from splitbench.registry import UnknownNameError

SIZE = 64
RESNET_STAGES = ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
OTHER_STAGES = ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
# One cheap member per family, built for real; the stride-4 split point is where the bottleneck goes.
FAMILIES = {
    "resnet18": "layer1",
    "resnest14d": "layer1",
    "regnety_002": "stage1",
    "mobilenet_v3_small": "stage1",
    "efficientnet_b0": "stage1",
}


# The smallest and largest member of each family (layouts are shared within one), on the meta device.
ON_META = ["resnet18", "resnet152", "resnest14d", "resnest269e", "regnety_002", "regnety_064", "regnety_320",
           "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0", "efficientnet_b7", "efficientnet_v2_s",
           "efficientnet_v2_l"]


def _is_resnet(name: str) -> bool:
    return name.startswith(("resnet", "resnest"))


def test_families_are_registered():
    assert set(ON_META) | set(FAMILIES) <= set(LAYOUTS)
    assert {"resnest50d", "regnety_040", "efficientnet_b3", "efficientnet_v2_m"} <= set(LAYOUTS)


@pytest.mark.parametrize("name", ON_META)
def test_registered_layouts_cut_at_documented_strides(name):
    """Heavy backbones too: built on the meta device (no weights allocated, no compute)."""
    with torch.device("meta"):
        net = get_backbone(name, 10)
    shapes = net.stage_shapes(SIZE)
    assert net.stage_names == (RESNET_STAGES if _is_resnet(name) else OTHER_STAGES)
    strides = [SIZE // shapes[s][-1] for s in net.stage_names[:-1]]
    assert strides == ([4, 4, 8, 16, 32] if _is_resnet(name) else [2, 4, 8, 16, 32])
    assert shapes["head"] == (10,)


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0", "efficientnet_v2_s"])
def test_feature_layouts_are_features_grouped_by_resolution(name):
    with torch.device("meta"):
        model = create_model("torchvision", name, 10, pretrained=False)
    model = model.to_empty(device="cpu")  # features_layout runs a 64 px probe
    assert features_layout(model) == {k: list(v) for k, v in LAYOUTS[name][1].items()}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_splits_and_takes_a_stride_4_student(name):
    split = FAMILIES[name]
    source, layout = LAYOUTS[name]
    original = create_model(source, name, 10, pretrained=False).eval()
    net = stage(original, layout)
    x = torch.rand(1, 3, SIZE, SIZE)  # one image: CPU conv kernels are prepared per input shape
    with torch.no_grad():
        expected = original(net.normalize(x))
        assert torch.allclose(net(x), expected, atol=1e-5)  # the stages are the model's own forward
        middle = net(x, stop=split)
        assert torch.allclose(net(middle, start=net.stages_after(split)[0]), expected, atol=1e-5)
    c, h, w = net.stage_shapes(SIZE)[split]
    assert SIZE // w == 4

    teacher = classifier_network(net, SIZE)
    student = bottleneck_student(teacher, BottleneckArgs(split_after=split, channels=24), SIZE)
    out = student(x.expand(2, -1, -1, -1))  # training mode: ResNeSt's attention BN needs 2
    assert out.predictions["classification"].shape == (2, 10) and out.features[split].shape == (2, c, h, w)
    student.trunk.coder.update()
    pipeline = LearnedPipeline(student)
    assert pipeline.server(pipeline.mobile(x)).shape == (1, 10)

    # One hidden decoder layer cannot undo the encoder's 2×2 conv: the error names both shapes.
    with pytest.raises(BottleneckShapeError, match=rf"\({c}, {h - 1}, {w - 1}\).*\({c}, {h}, {w}\)"):
        bottleneck_student(teacher, BottleneckArgs(split_after=split, channels=24, decoder_channels=[c]), SIZE)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UnknownNameError, match=r"resnest269e.*timm:<arch>"):
        get_backbone("resnest270")
    with pytest.raises(UnknownNameError, match="timm, torchvision"):
        get_backbone("keras:resnet50")
    with pytest.raises(UnknownNameError, match="timm has no model"):
        get_backbone("timm:no_such_net")
    net = get_backbone("mobilenet_v3_small", 10)
    with pytest.raises(SplitPointError, match="valid: stem, stage1, stage2, stage3, stage4$"):
        net.check_split_point("layer1")
    with pytest.raises(SplitPointError, match="valid: stem, stage1"):
        bottleneck_student(classifier_network(net, SIZE), BottleneckArgs(split_after="head", channels=8), SIZE)


def test_any_timm_or_torchvision_cnn_by_prefix():
    tv = get_backbone("torchvision:efficientnet_b0", 10)  # derived, not the registered layout
    assert tv.stage_shapes(SIZE) == get_backbone("efficientnet_b0", 10).stage_shapes(SIZE)
    net = get_backbone("timm:mobilenetv3_small_050", 10)  # stages cut after timm's feature_info modules
    assert [SIZE // s[-1] for s in list(net.stage_shapes(SIZE).values())[:-1]] == [2, 4, 8, 16, 32]
    with pytest.raises(LayoutError, match="no stage layout"):
        get_backbone("torchvision:shufflenet_v2_x0_5")  # pools functionally in forward: no chain of children
    with pytest.raises(LayoutError, match="leaves out"):
        get_backbone("timm:vit_tiny_patch16_224")  # cls_token/pos_embed belong to no child


def test_layout_that_drops_weights_is_an_error():
    model = create_model("torchvision", "mobilenet_v3_small", 10, pretrained=False)
    layout = {k: v for k, v in LAYOUTS["mobilenet_v3_small"][1].items() if k != "stage3"}
    with pytest.raises(LayoutError, match=r"leaves out .*features\.4\."):
        stage(model, layout)
    with pytest.raises(KeyError, match="no submodule 'feature'"):
        stage(model, {"all": ["feature[0:2]"]})


def test_local_weights_and_offline_pretrained(tmp_path, monkeypatch):
    original = create_model("torchvision", "mobilenet_v3_small", 10, pretrained=False)
    path = tmp_path / "w.pth"
    torch.save(original.state_dict(), path)
    net = get_backbone("mobilenet_v3_small", 10, weights=str(path))
    assert torch.equal(net.stages["head"][2][3].weight, original.classifier[3].weight)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(PretrainedUnavailableError, match="backbone.weights"):
        get_backbone("mobilenet_v3_small", 10, pretrained=True)
    with pytest.raises(PretrainedUnavailableError, match="HF_HUB_OFFLINE"):
        get_backbone("regnety_002", 10, pretrained=True)
