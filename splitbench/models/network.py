"""The one model shape: a trunk of named feature levels plus task heads.

Every learned model in splitbench is a :class:`SplitNetwork`: the teacher (an unsplit
:class:`~splitbench.models.trunks.FeatureTrunk` under its classifier, detector or segmenter head),
every student (a :class:`~splitbench.models.trunks.BottleneckTrunk` under the teacher's heads) and
the multi-task model (one bottleneck trunk, three heads). Training recipes and pipelines see this
one interface: ``network(images, targets)`` for training, :meth:`SplitNetwork.predict` for an
unsplit forward, and :meth:`SplitNetwork.server_forward` as the server side of a bottleneck.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from splitbench.errors import SplitbenchError
from splitbench.models.heads import Head
from splitbench.models.images import Images, Size, pad_images, padded_size
from splitbench.models.trunks import BottleneckTrunk, Features, Trunk

CLASSIFIER = "classification"  # the head that is a backbone's own classifier stage (legacy key layouts)


class NetworkOutput(NamedTuple):
    """What a training step needs: predictions per task, loss terms, every level's features, likelihoods."""

    predictions: dict[str, Any]
    losses: dict[str, torch.Tensor]
    features: Features
    likelihoods: dict[str, torch.Tensor]


class SplitNetwork(nn.Module):
    """``trunk`` → ``heads`` (task → head). ``stride`` is what images are padded to a multiple of when a head
    needs each image's size (detection, segmentation); classifiers take their batch as it is."""

    def __init__(self, trunk: Trunk, heads: dict[str, Head], stride: int) -> None:
        super().__init__()
        missing = {task: [n for n in head.levels if n not in trunk.levels] for task, head in heads.items()}
        missing = {task: names for task, names in missing.items() if names}
        if missing:
            task, names = next(iter(missing.items()))
            raise SplitbenchError(f"the {task} head reads {names}, which this trunk does not output (its levels: "
                                  f"{', '.join(trunk.levels)}); split at or before {names[0]}")
        self.trunk = trunk
        self.heads = nn.ModuleDict(heads)
        self.stride = int(stride)

    @property
    def tasks(self) -> list[str]:
        return list(self.heads.keys())

    @property
    def head_levels(self) -> list[str]:
        """The trunk levels some head reads: all that inference needs to compute and keep."""
        read = {n for head in self.heads.values() for n in head.levels}
        return [n for n in self.trunk.levels if n in read]

    @property
    def needs_image_size(self) -> bool:
        """Whether the server needs each image's (h, w): then images are padded on their own and the size is sent."""
        return any(head.needs_image_size for head in self.heads.values())

    def prepare(self, images: Images) -> tuple[torch.Tensor, list[Size]]:
        """One batch tensor and each image's (h, w): padded to the stride when a head needs the sizes."""
        if self.needs_image_size:
            return pad_images(images, self.stride)
        return pad_images(images, 1)

    def forward(self, images: Images, targets: Any = None, *, quantized: bool = False,
                all_levels: bool = True) -> NetworkOutput:
        """Training path: ``targets`` are the single head's, or task → targets for several heads. Its features
        hold every trunk level (what distillation reads) unless ``all_levels`` is False."""
        batch, sizes = self.prepare(images)
        levels = None if all_levels else self.head_levels
        features, likelihoods = self.trunk.features(batch, quantized=quantized, levels=levels)
        predictions, losses = self.run_heads(features, sizes, (batch.shape[-2], batch.shape[-1]), targets)
        return NetworkOutput(predictions, losses, features, likelihoods)

    def run_heads(self, features: Features, sizes: list[Size], padded: Size, targets: Any = None
                  ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        single = len(self.heads) == 1
        predictions: dict[str, Any] = {}
        losses: dict[str, torch.Tensor] = {}
        for task, head in self.heads.items():
            mine = targets if single or targets is None else targets[task]
            predictions[task], terms = head(features, sizes, padded, mine)
            losses.update(terms if single else {f"{task}.{k}": v for k, v in terms.items()})
        return predictions, losses

    def output(self, predictions: dict[str, Any]) -> Any:
        """What a pipeline returns: the single head's predictions, or for several heads one dict per image."""
        if len(predictions) == 1:
            return next(iter(predictions.values()))
        count = len(next(iter(predictions.values())))
        return [{task: p[i] for task, p in predictions.items()} for i in range(count)]

    def answers(self, output: Any, top_k: int = 5) -> list[dict[str, Any]]:
        """What :meth:`output` returned, as one JSON-ready dict per image: task → its head's answer."""
        if len(self.heads) == 1:
            ((task, head),) = self.heads.items()
            return [{task: head.answer(p, top_k)} for p in output]
        return [{task: head.answer(p[task], top_k) for task, head in self.heads.items()} for p in output]

    @torch.no_grad()
    def predict(self, images: Images) -> Any:
        """The unsplit forward of a trained model (the server of the codec baselines)."""
        return self.output(self(images, all_levels=False).predictions)

    @torch.no_grad()
    def server_forward(self, y_hat: torch.Tensor, sizes: list[Size]) -> Any:
        """The server side of a bottleneck trunk: a decoded latent of images of these sizes → predictions."""
        trunk: BottleneckTrunk = self.trunk  # type: ignore[assignment]
        features = trunk.decode(y_hat, self.head_levels)
        padded = padded_size(sizes, self.stride) if self.needs_image_size else sizes[0]
        return self.output(self.run_heads(features, sizes, padded)[0])

    def upgrade_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A state dict of an older layout, renamed to this one (see :func:`upgrade_legacy_state`)."""
        return upgrade_legacy_state(state, set(self.state_dict()), self.tasks)


def upgrade_legacy_state(state: dict[str, torch.Tensor], own: set[str], tasks: list[str]) -> dict[str, torch.Tensor]:
    """Rename the keys of runs saved before the trunk + heads layout (splitbench 0.1.0, up to commit cdba5be).

    Those saved three shapes: a classifier (``stages.<stage>.*``, its last stage the classifier), a
    bottleneck classifier (``bottleneck.*``, ``tail.stages.<stage>.*``) and a detector/segmenter
    (``trunk.*`` as today, ``head.*``). Each legacy key goes to the first of its candidate names this model
    has; a multi-task head run's copy of its body's classifier stage (which the body run holds) is dropped.
    Anything else is left as it is, so strict loading still names it.
    """
    if not state or any(k.startswith("heads.") for k in state):
        return state
    tail_stages = {k.split(".")[3] for k in own if k.startswith("trunk.tail.stages.")}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        top, _, rest = key.partition(".")
        stage_rest = rest.partition(".")[2]  # "<stage>.<param>" -> "<param>"
        candidates = {
            "stages": [f"trunk.stages.{rest}", f"heads.{CLASSIFIER}.layers.{stage_rest}"],
            "bottleneck": [f"trunk.{key}"],
            "tail": [f"trunk.{key}", f"heads.{CLASSIFIER}.layers.{stage_rest.partition('.')[2]}"],
            "head": [f"heads.{task}.{rest}" for task in tasks if len(tasks) == 1],
        }.get(top, [key])
        new = next((c for c in candidates if c in own), None)
        if new is not None:
            out[new] = value
        elif not (key.startswith("trunk.tail.stages.") and key.split(".")[3] not in tail_stages
                  and CLASSIFIER not in tasks):
            out[key] = value  # unaccounted for: strict loading reports it
    return out
