"""What the trainer drives: a module whose forward returns losses and which knows, per stage,
which of its parts train. Methods subclass it; the trainer never looks inside."""

from __future__ import annotations

import torch
from torch import nn

from splitbench.compression.latent_coders import entropy_parameters


def ramp(value: float, warmup: float, progress: float) -> float:
    """``value`` scaled linearly from 0 to 1 over the first ``warmup`` fraction of a stage (0: no ramp)."""
    return value if warmup <= 0 else value * min(1.0, progress / warmup)


def set_trainable(module: nn.Module, trainable: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(trainable)


class TrainingModule(nn.Module):
    """``forward(images, targets) -> {"loss": ..., other scalars to log}``.

    ``model`` is what gets saved (the method's network); other submodules (a teacher) are fixed
    inputs. ``set_stage`` decides what trains; frozen parts stay in eval mode even when the trainer
    calls ``train()``, so a frozen BatchNorm never updates its statistics. The recipes are in
    :mod:`splitbench.training.recipes`.
    """

    stages: tuple[str, ...] = ()

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self._frozen: list[nn.Module] = []
        # Fraction of the current stage already done (0 at its first step), set by the trainer before
        # every step from its position, so a resumed run sees the same value as an uninterrupted one.
        self.progress = 0.0

    def set_stage(self, stage: str) -> None:
        """Mark what trains in ``stage``: call :meth:`freeze`/:meth:`unfreeze`."""
        raise NotImplementedError

    def end_stage(self, stage: str) -> None:
        """Hook after a stage's last epoch (e.g. building entropy-coder tables)."""

    def freeze(self, *modules: nn.Module) -> None:
        for m in modules:
            set_trainable(m, False)
            self._frozen.append(m)
        self.train(self.training)

    def unfreeze(self, *modules: nn.Module) -> None:
        for m in modules:
            set_trainable(m, True)
            self._frozen = [f for f in self._frozen if f is not m]

    def reset_frozen(self) -> None:
        self._frozen = []
        set_trainable(self, True)

    def train(self, mode: bool = True) -> TrainingModule:
        super().train(mode)
        for m in self._frozen:
            m.eval()
        return self

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_groups(self, lr: float, entropy_lr_scale: float) -> list[dict]:
        """Optimizer groups: the entropy models' own parameters (density, quantiles) at ``entropy_lr_scale``×
        the learning rate and without weight decay. Their density starts far wider than the latent it
        has to fit (CompressAI's init_scale is 10), and at the network's learning rate a short run ends
        before it has adapted, leaving the rate dominated by that mismatch whatever β is."""
        entropy = {id(p) for p in entropy_parameters(self.model)}
        trainable = self.trainable_parameters()
        groups = [{"params": [p for p in trainable if id(p) not in entropy]}]
        coder = [p for p in trainable if id(p) in entropy]
        if coder:
            groups.append({"params": coder, "lr": lr * entropy_lr_scale, "weight_decay": 0.0})
        return [g for g in groups if g["params"]]
