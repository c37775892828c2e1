"""The multi-task split model (Matsubara, Mendula & Levorato, WACV 2025): one encoder and one bitstream on
the device; on the server one shared body (g_s → the later stages) and several task heads.

The body is an Entropic Student classifier (a :class:`BottleneckClassifier` with the backbone's own
classification head as its last stage); detection and segmentation heads read its stage outputs.
Each head is trained on the frozen body as a :class:`TaskModel` and saved with the body's weights,
so :func:`compose` can check that every head was trained on the same encoder before it joins them.
"""

from __future__ import annotations

import torch
from torch import nn

from splitbench.errors import CheckpointError, ConfigError
from splitbench.models.bottleneck_classifier import BottleneckClassifier
from splitbench.models.task_model import HEADS, HeadArgs, SegmentationHeadArgs, TaskModel, padded_size
from splitbench.pipeline import SplitModel


@torch.no_grad()
def body_shapes(body: BottleneckClassifier, image_size: int) -> dict[str, tuple[int, ...]]:
    """Output shape of every stage of the body (split point included) for one image."""
    was_training = body.training
    body.eval()
    try:
        device = next(body.parameters()).device
        _, tapped, _ = body(torch.zeros(1, 3, image_size, image_size, device=device), quantized=True)
    finally:
        body.train(was_training)
    return {name: tuple(t.shape[1:]) for name, t in tapped.items()}


def head_on_body(task: str, body: BottleneckClassifier, num_classes: int, head_args: HeadArgs,
                 image_size: int) -> TaskModel:
    """A detection/segmentation head reading the shared body's feature stages (the body is not dilated)."""
    shapes = body_shapes(body, image_size)
    features = [n for n in [body.split_after, *body.tail_stages] if len(shapes[n]) == 3]
    if task == "segmentation":
        if not isinstance(head_args, SegmentationHeadArgs) or head_args.output_stride != 32:
            raise ConfigError("head.output_stride: a shared body is not dilated, so a head on it runs at stride 32; "
                              "set head.output_stride: 32")
        levels = features[-2:]
    else:
        levels = features
    stride = max(image_size // shapes[n][-1] for n in features)
    head = HEADS[task]([shapes[n][0] for n in levels], num_classes, head_args)
    return TaskModel(task, body, head, levels, stride)


class MultiTaskModel(SplitModel):
    """body → {"classification": logits, "detection": boxes, "segmentation": label map} per image."""

    def __init__(self, body: BottleneckClassifier, heads: dict[str, TaskModel]) -> None:
        super().__init__()
        self.trunk = body
        self.heads = nn.ModuleDict({task: model.head for task, model in heads.items()})
        self.levels = {task: model.levels for task, model in heads.items()}
        self.stride = max(model.stride for model in heads.values())

    @property
    def coder(self):  # type: ignore[override]
        return self.trunk.coder

    @property
    def tasks(self) -> list[str]:
        return ["classification", *self.heads.keys()]

    def mobile_network(self) -> nn.Module:
        return self.trunk.mobile_network()

    def server_forward_sized(self, y_hat: torch.Tensor, sizes: list[tuple[int, int]]) -> list[dict]:
        """One decoded latent → every task's prediction for each image (the body runs once)."""
        tapped = self.trunk.decode_features(y_hat)
        padded = padded_size(sizes, self.stride)
        logits = tapped[self.trunk.tail_stages[-1]]
        out = [{"classification": row} for row in logits]
        for task, head in self.heads.items():
            predictions, _ = head([tapped[n] for n in self.levels[task]], sizes, padded)
            for item, prediction in zip(out, predictions, strict=True):
                item[task] = prediction
        return out


def compose(body: BottleneckClassifier, heads: dict[str, TaskModel], names: dict[str, str]) -> MultiTaskModel:
    """Join heads trained in separate runs (``names``: task → run) onto ``body``; every run must hold the
    body's weights exactly, else the heads were trained on another encoder and the error names it."""
    reference = body.state_dict()
    for task, model in heads.items():
        if not isinstance(model, TaskModel) or not isinstance(model.trunk, BottleneckClassifier):
            raise CheckpointError(f"run {names[task]} is not a head trained on a shared body")
        theirs = model.trunk.state_dict()
        if theirs.keys() != reference.keys():
            raise CheckpointError(f"run {names[task]}: its body has other layers than the shared body")
        for key, value in reference.items():
            if not torch.equal(value.to(theirs[key].device), theirs[key]):
                raise CheckpointError(f"run {names[task]} was trained on another encoder/body: {key} differs from "
                                      "the shared body's; retrain that head on this body")
    return MultiTaskModel(body, heads)
