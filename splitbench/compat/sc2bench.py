"""Load sc2bench (0.1.x) splittable-ResNet checkpoints into splitbench models, strictly.

sc2bench's ``splittable_resnet``/``splittable_resnest`` replace a ResNet's stem and layer1 with a
bottleneck layer; a splitbench :class:`~splitbench.models.network.SplitNetwork` whose bottleneck trunk
is split after ``layer1`` is the same network. Supported bottlenecks: ``FPBasedResNetBottleneck`` (factorized prior),
``SHPBasedResNetBottleneck`` and ``MSHPBasedResNetBottleneck`` (scale / mean-scale hyperprior),
all with GDN1, which splitbench builds as ``simplified_gdn=True``; and CR+BQ's
``larger_resnet_bottleneck`` (a conv/BatchNorm/ReLU stack, 8-bit quantized), which splitbench
builds as ``cr_bq`` with ``architecture: larger_resnet`` and ``integer_zero_point: true``. CR+BQ
comes in the two layouts of :mod:`splitbench.models.bottlenecks`, told apart by the
number of encoder convolutions: 5 (sc2bench's published ImageNet CR+BQ checkpoints, in place of
conv1..layer1, tail layer2-4) or 2 (sc2bench 0.1.1's ``larger_resnet_bottleneck``, in place of
conv1..layer2, tail layer3-4 as its ``short_module_names=['layer3', 'layer4', ...]``).

Key mapping (sc2bench → splitbench); :data:`PREFIXES` is the whole of it:

=======================================  ==================================================
``bottleneck_layer.encoder.*`` / ``g_a.*``  ``trunk.bottleneck.encoder.*``
``bottleneck_layer.decoder.*`` / ``g_s.*``  ``trunk.bottleneck.decoder.*``
``bottleneck_layer.entropy_bottleneck.*``   ``trunk.bottleneck.coder.entropy_bottleneck.*``
``bottleneck_layer.gaussian_conditional.*`` ``trunk.bottleneck.coder.gaussian_conditional.*``
``bottleneck_layer.h_a.*`` / ``h_s.*``      ``trunk.bottleneck.coder.h_a.*`` / ``h_s.*``
``layer2.*`` … ``layer4.*``                 ``trunk.tail.stages.<the stage holding that child>.*``
``fc.*``                                    ``heads.classification.layers.<its index>.*`` (the
                                            backbone's classifier stage; torchvision: ``layers.2``)
=======================================  ==================================================

CR+BQ uses the first two rows and the tail rows only (its Sequential indices are kept as they
are); its quantizer has no state, and its per-sample scale and zero point travel in each bitstream.

A key outside the mapping, or a splitbench key the checkpoint does not fill, is an error; the only
named exception is :data:`MAY_BE_ABSENT` (FrozenBatchNorm2d checkpoints have no BN step counters).
Coder tables travel with the checkpoint, so the bitstreams are byte-identical to sc2bench's; a
checkpoint saved before ``update()`` gets its tables built the way sc2bench builds them
(CompressAI's ``update`` on the trained quantiles, not splitbench's exact quantile fit).

Data size of CR+BQ: sc2bench's compressed object is torchdistill's ``QuantizedTensor`` (C·H·W
uint8 values, a float32 scale, an integer zero point in [0, 255]); splitbench's bitstream carries
exactly that (the zero point as one byte: C·H·W + 5 bytes) plus the container header (6 bytes for a
latent under 128×128). sc2bench's ``FileSizeAnalyzer`` reports the pickle of that object instead,
which adds several hundred bytes of serialisation overhead per sample.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from splitbench.compression.latent_coders import (
    FactorizedPrior,
    LatentCoder,
    MeanScaleHyperprior,
    Quantize8Bit,
    ScaleHyperprior,
)
from splitbench.errors import CheckpointError
from splitbench.models.backbones import LAYOUTS, get_backbone
from splitbench.models.bottlenecks import build_larger_resnet_bottleneck, gdn_bottleneck
from splitbench.models.builders import classifier_network, split_shape, student
from splitbench.models.network import CLASSIFIER, SplitNetwork

# sc2bench bottleneck prefix -> splitbench prefix (the tail's prefixes come from the stage layout).
PREFIXES: dict[str, str] = {
    "bottleneck_layer.encoder.": "trunk.bottleneck.encoder.",
    "bottleneck_layer.g_a.": "trunk.bottleneck.encoder.",
    "bottleneck_layer.decoder.": "trunk.bottleneck.decoder.",
    "bottleneck_layer.g_s.": "trunk.bottleneck.decoder.",
    "bottleneck_layer.entropy_bottleneck.": "trunk.bottleneck.coder.entropy_bottleneck.",
    "bottleneck_layer.gaussian_conditional.": "trunk.bottleneck.coder.gaussian_conditional.",
    "bottleneck_layer.h_a.": "trunk.bottleneck.coder.h_a.",
    "bottleneck_layer.h_s.": "trunk.bottleneck.coder.h_s.",
}
TAIL_CHILDREN = ("layer2", "layer3", "layer4", "fc")  # SplittableResNet's children after the bottleneck
MAY_BE_ABSENT = ("num_batches_tracked",)  # splitbench keys a FrozenBatchNorm2d checkpoint lacks (kept at 0)
SPLIT_AFTER = "layer1"
# CR+BQ: convolutions in the encoder -> the split point its layout replaces the network up to.
CRBQ_SPLIT_BY_ENCODER_CONVS = {5: "layer1", 2: "layer2"}

# (block type, blocks in layer2-4) -> torchvision ResNet; layer1 is inside the bottleneck, so it cannot tell.
RESNET_BY_BLOCKS: dict[tuple[str, tuple[int, int, int]], str] = {
    ("basic", (2, 2, 2)): "resnet18",
    ("basic", (4, 6, 3)): "resnet34",
    ("bottleneck", (4, 6, 3)): "resnet50",
    ("bottleneck", (4, 23, 3)): "resnet101",
    ("bottleneck", (8, 36, 3)): "resnet152",
}

Variant = Literal["fp", "shp", "mshp", "crbq"]


@dataclass(frozen=True)
class Sc2benchArchitecture:
    """What a checkpoint's weights say about the network that wrote them."""

    variant: Variant
    backbone: str
    num_classes: int
    latent_channels: int
    encoder_channels: tuple[int, ...]
    decoder_channels: tuple[int, ...]
    hyper_channels: int | None = None
    split_after: str = SPLIT_AFTER

    def coder(self) -> LatentCoder:
        if self.variant == "crbq":
            return Quantize8Bit(self.latent_channels, integer_zero_point=True)
        if self.variant == "fp":
            return FactorizedPrior(self.latent_channels)
        cls = MeanScaleHyperprior if self.variant == "mshp" else ScaleHyperprior
        return cls(self.latent_channels, self.hyper_channels or 16)


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """An sc2bench/torchdistill checkpoint's model state dict, read with ``weights_only=True``.

    torchdistill saves ``{'model', 'optimizer', 'lr_scheduler', 'best_value', 'args'}`` with an
    ``argparse.Namespace`` for args, which is the one class allowed besides tensors and containers.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"sc2bench checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"cannot read sc2bench checkpoint {path}: {error}") from error
    return model_state(obj)


def model_state(obj: Mapping) -> dict[str, torch.Tensor]:
    """The model state dict inside a torchdistill checkpoint dict, or ``obj`` itself if it is one."""
    state = obj.get("model", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("not an sc2bench model state dict (expected tensors, or a checkpoint with 'model')")
    return dict(state)


def _conv_widths(state: Mapping[str, torch.Tensor], prefix: str) -> list[tuple[int, int]]:
    """(out, in) channels of the convolutions under ``prefix``, in layer order."""
    convs = []
    for key, value in state.items():
        match = re.fullmatch(re.escape(prefix) + r"(\d+)\.weight", key)
        if match and value.dim() == 4:
            convs.append((int(match[1]), (value.shape[0], value.shape[1])))
    return [shape for _, shape in sorted(convs)]


def _infer_backbone(state: Mapping[str, torch.Tensor], split_after: str = SPLIT_AFTER) -> str:
    """The torchvision ResNet whose block counts after the split point match the checkpoint's."""
    layers = [c for c in _tail_children(split_after) if c != "fc"]
    if any(k.startswith(f"{layers[0]}.0.conv2.fc1.") for k in state):
        raise CheckpointError("a ResNeSt checkpoint: pass backbone= (e.g. 'resnest50d'); depth cannot be inferred")
    blocks = tuple(len({k.split(".")[1] for k in state if k.startswith(f"{layer}.")}) for layer in layers)
    kind = "bottleneck" if f"{layers[0]}.0.conv3.weight" in state else "basic"
    names = [name for (k, counts), name in RESNET_BY_BLOCKS.items() if k == kind and counts[-len(layers):] == blocks]
    if len(names) != 1:
        raise CheckpointError(f"no single torchvision ResNet has {kind} blocks {blocks} in "
                              f"{layers[0]}-{layers[-1]}; pass backbone=")
    return names[0]


def _tail_children(split_after: str) -> tuple[str, ...]:
    """SplittableResNet's children after a bottleneck that replaces the network up to ``split_after``."""
    return TAIL_CHILDREN[TAIL_CHILDREN.index("layer2") + ("layer1", "layer2").index(split_after):]


def _infer_crbq(state: Mapping[str, torch.Tensor], backbone: str | None) -> Sc2benchArchitecture:
    enc = _conv_widths(state, "bottleneck_layer.encoder.")
    split_after = CRBQ_SPLIT_BY_ENCODER_CONVS.get(len(enc))
    if split_after is None or "fc.weight" not in state:
        raise CheckpointError(
            f"a CR+BQ (larger_resnet_bottleneck) checkpoint with {len(enc)} encoder convolutions: sc2bench's "
            f"layouts have {sorted(CRBQ_SPLIT_BY_ENCODER_CONVS)} (another bottleneck_idx?) and fc weights"
        )
    return Sc2benchArchitecture(
        variant="crbq",
        backbone=backbone or _infer_backbone(state, split_after),
        num_classes=state["fc.weight"].shape[0],
        latent_channels=enc[-1][0],
        encoder_channels=(),
        decoder_channels=(),
        split_after=split_after,
    )


def infer_architecture(state: Mapping[str, torch.Tensor], backbone: str | None = None) -> Sc2benchArchitecture:
    """Read the bottleneck type and every width off the weights (sc2bench configs are not in checkpoints)."""
    if "bottleneck_layer.encoder.0.weight" in state and "bottleneck_layer.entropy_bottleneck.quantiles" in state:
        variant: Variant = "fp"
        encoder, decoder = "encoder", "decoder"
    elif "bottleneck_layer.g_a.0.weight" in state:
        encoder, decoder = "g_a", "g_s"
        variant = "shp"
    elif "bottleneck_layer.encoder.0.weight" in state and "bottleneck_layer.decoder.0.running_mean" in state:
        return _infer_crbq(state, backbone)  # BatchNorm right after the split: the CR+BQ stack
    else:
        raise CheckpointError(
            "not an sc2bench ResNet bottleneck checkpoint (FP/SHP/MSHP, or CR+BQ's larger_resnet_bottleneck): "
            "no bottleneck_layer encoder (g_a) weights with an entropy bottleneck or a BatchNorm after them"
        )
    enc = _conv_widths(state, f"bottleneck_layer.{encoder}.")
    dec = _conv_widths(state, f"bottleneck_layer.{decoder}.")
    if len(enc) < 2 or len(dec) < 1 or "fc.weight" not in state:
        raise CheckpointError("sc2bench checkpoint lacks encoder/decoder convolutions or fc weights")
    latent = enc[-1][0]
    hyper = None
    if variant != "fp":
        hyper = state["bottleneck_layer.h_a.0.weight"].shape[0]
        h_s = _conv_widths(state, "bottleneck_layer.h_s.")
        variant = "mshp" if h_s and h_s[-1][0] == 2 * latent else "shp"
    return Sc2benchArchitecture(
        variant=variant,
        backbone=backbone or _infer_backbone(state),
        num_classes=state["fc.weight"].shape[0],
        latent_channels=latent,
        encoder_channels=tuple(out for out, _ in enc[:-1]),
        decoder_channels=tuple(out for out, _ in dec[:-1]),
        hyper_channels=hyper,
    )


def build_model(arch: Sc2benchArchitecture, image_size: int = 224) -> SplitNetwork:
    """The splitbench network an sc2bench checkpoint of ``arch`` loads into (random weights until it does)."""
    teacher = classifier_network(get_backbone(arch.backbone, arch.num_classes), image_size)
    shape = split_shape(teacher, arch.split_after, image_size)
    if arch.variant == "crbq":
        bottleneck = build_larger_resnet_bottleneck(arch.coder(), shape, image_size)
    else:
        bottleneck = gdn_bottleneck(shape, image_size, arch.coder(), encoder_channels=arch.encoder_channels,
                                    decoder_channels=arch.decoder_channels, simplified_gdn=True)
    return student(teacher, arch.split_after, bottleneck, image_size)


def tail_prefixes(backbone: str, split_after: str = SPLIT_AFTER) -> dict[str, str]:
    """sc2bench tail child -> splitbench prefix, read off the backbone's stage layout (its last stage is the
    classifier, which is the classification head)."""
    if backbone not in LAYOUTS:
        raise CheckpointError(f"sc2bench checkpoints map onto registered ResNet layouts; {backbone!r} has none")
    children = _tail_children(split_after)
    layout = LAYOUTS[backbone][1]
    classifier = list(layout)[-1]
    prefixes = {}
    for stage, members in layout.items():
        for i, member in enumerate(members):
            if member in children:
                index = f"{i}." if len(members) > 1 else ""
                prefixes[f"{member}."] = (f"heads.{CLASSIFIER}.layers.{index}" if stage == classifier
                                          else f"trunk.tail.stages.{stage}.{index}")
    if len(prefixes) != len(children):
        raise CheckpointError(f"{backbone}'s stage layout lacks some of {children}")
    return prefixes


def convert_state_dict(
    state: Mapping[str, torch.Tensor], model: SplitNetwork, backbone: str
) -> dict[str, torch.Tensor]:
    """Rename sc2bench keys to ``model``'s; any key either side cannot account for is an error."""
    prefixes = {**PREFIXES, **tail_prefixes(backbone, model.trunk.split_after)}
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    unmapped, unknown = [], []
    for key, value in state.items():
        source = next((p for p in prefixes if key.startswith(p)), None)
        if source is None:
            unmapped.append(key)
            continue
        new = prefixes[source] + key[len(source) :]
        if new not in target:
            unknown.append(f"{key} -> {new}")
            continue
        if value.shape != target[new].shape and not new.endswith(("_quantized_cdf", "_offset", "_cdf_length",
                                                                  "scale_table")):
            raise CheckpointError(f"{key}: shape {tuple(value.shape)}, splitbench expects {tuple(target[new].shape)}")
        out[new] = value
    missing = [k for k in target if k not in out and not k.endswith(MAY_BE_ABSENT)]
    problems = []
    if unmapped:
        problems.append(f"{len(unmapped)} keys outside the mapping (first: {', '.join(unmapped[:4])})")
    if unknown:
        problems.append(f"{len(unknown)} keys mapped to nothing (first: {', '.join(unknown[:4])})")
    if missing:
        problems.append(f"{len(missing)} splitbench keys not in the checkpoint (first: {', '.join(missing[:4])})")
    if problems:
        raise CheckpointError("sc2bench checkpoint does not match: " + "; ".join(problems))
    for key in target:
        if key not in out:  # MAY_BE_ABSENT: keep the module's own value
            out[key] = target[key]
    return out


def _ensure_tables(coder: LatentCoder) -> None:
    """Tables missing from a checkpoint saved before ``update()`` are built as sc2bench's ``update()``
    builds them: CompressAI's tables from the trained quantiles, as they are."""
    from compressai.models.google import get_scale_table

    eb = getattr(coder, "entropy_bottleneck", None)
    if eb is not None and eb._offset.numel() == 0:
        eb.update(force=True)
    gc = getattr(coder, "gaussian_conditional", None)
    if gc is not None and gc._offset.numel() == 0:
        gc.update_scale_table(get_scale_table(), force=True)


def load_sc2bench(
    source: str | os.PathLike | Mapping, *, backbone: str | None = None, image_size: int = 224
) -> SplitNetwork:
    """A splitbench model with an sc2bench checkpoint's weights and coder tables (eval mode).

    ``source`` is a checkpoint file, a torchdistill checkpoint dict or a model state dict;
    ``backbone`` overrides the inferred torchvision ResNet (needed for ResNeSt);
    ``image_size`` is only used to check shapes when building.
    """
    state = model_state(source) if isinstance(source, Mapping) else read_checkpoint(source)
    arch = infer_architecture(state, backbone)
    model = build_model(arch, image_size)
    model.load_state_dict(convert_state_dict(state, model, arch.backbone), strict=True)
    _ensure_tables(model.trunk.coder)
    return model.eval()
