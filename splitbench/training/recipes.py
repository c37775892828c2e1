"""The training recipes, written once over the one model shape (a trunk of feature levels plus heads).

Every method declares its training with one of these; none of them asks which task a network has:
the heads bring their own losses (CE, torchvision's detection losses, CE + aux), and a head whose
predictions are class logits is distilled where a recipe distils.

* :class:`TaskTraining`: the heads' task losses (the unsplit model; a multi-task head on a frozen body);
* :class:`HeadDistillation`: a bottleneck learns the teacher's features from the split point on, with
  or without the rate term (CR+BQ; stage 1 of the Entropic Student);
* :class:`EntropicStudentTraining`: stage 1, then the later stages and heads on the quantized latent;
* :class:`TaskRateTraining`: everything at once, task loss + β·bits per image (End-to-End, EB fine-tuning);
* :class:`RateDistortionTraining`: a neural image codec, λ·255²·MSE + bpp.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from splitbench.compression.latent_coders import bits_per_sample
from splitbench.errors import ConfigError
from splitbench.models.images import pad_replicate
from splitbench.models.network import NetworkOutput, SplitNetwork
from splitbench.models.neural_codecs import update_coder
from splitbench.training.losses import feature_distillation, kd_divergence, rate_bits
from splitbench.training.module import TrainingModule, ramp


def task_logs(network: SplitNetwork, out: NetworkOutput, targets: Any) -> dict[str, torch.Tensor]:
    """``loss`` = the sum of every head's loss terms; the terms and the heads' batch metrics are logged."""
    single = len(network.heads) == 1
    logs: dict[str, torch.Tensor] = {"loss": sum(out.losses.values()), **out.losses}  # type: ignore[dict-item]
    for task, head in network.heads.items():
        metrics = head.batch_metrics(out.predictions[task], targets if single else targets[task])
        logs.update(metrics if single else {f"{task}.{k}": v for k, v in metrics.items()})
    return logs


class TaskTraining(TrainingModule):
    """Stage ``train``: the task loss of every head, with ``frozen`` parts fixed. ``quantized``: the trunk's
    decoder sees the test-time quantized latent (a multi-task head trained on a frozen Entropic Student body)."""

    stages = ("train",)

    def __init__(self, model: SplitNetwork, frozen: Sequence[nn.Module] = (), quantized: bool = False) -> None:
        super().__init__(model)
        self.frozen = list(frozen)
        self.quantized = quantized

    def set_stage(self, stage: str) -> None:
        self.reset_frozen()
        self.freeze(*self.frozen)

    def forward(self, images, targets) -> dict[str, torch.Tensor]:
        return task_logs(self.model, self.model(images, targets, quantized=self.quantized), targets)


class HeadDistillation(TrainingModule):
    """Stage ``bottleneck``: only the bottleneck trains, to reproduce the teacher's output at the split point
    and every later level (Σ MSE summed over elements); with ``beta``, plus β·bits summed over the batch and
    the entropy model's aux loss. ``rate_warmup``: β ramps up from 0 over that fraction of the stage; a
    hyperprior whose rate term wins from the first step collapses to a constant latent (measured: mean-scale
    hyperprior at β ≥ 0.006, 23 B and no feature fit), while the same β after a ramp learns."""

    stages: tuple[str, ...] = ("bottleneck",)

    def __init__(self, student: SplitNetwork, teacher: SplitNetwork, beta: float | None = None,
                 levels: Sequence[str] | None = None, rate_warmup: float = 0.0) -> None:
        super().__init__(student)
        self.teacher = teacher
        self.beta = beta
        self.rate_warmup = rate_warmup
        self.stage = self.stages[0]
        self.levels = list(student.trunk.levels if levels is None else levels)
        unknown = [name for name in self.levels if name not in student.trunk.levels]
        if unknown or not self.levels:
            raise ConfigError(f"distillation levels {unknown or self.levels} are not levels of the student's trunk; "
                              f"it has {', '.join(student.trunk.levels)}")

    def set_stage(self, stage: str) -> None:
        self.stage = stage
        self.reset_frozen()
        self.freeze(self.teacher)
        if stage == "bottleneck":
            self.freeze(self.model.trunk.tail, self.model.heads)

    def end_stage(self, stage: str) -> None:
        if stage == "bottleneck":
            self.model.trunk.coder.update()

    def forward(self, images, targets) -> dict[str, torch.Tensor]:
        batch, _ = self.model.prepare(images)
        with torch.no_grad():
            teacher_features, _ = self.teacher.trunk.features(batch)
        features, likelihoods = self.model.trunk.features(batch)
        mse = feature_distillation(features, teacher_features, self.levels)
        count = len(batch)
        if self.beta is None:
            return {"loss": mse, "mse": mse / count}
        bits = rate_bits(likelihoods, "sum")
        aux = self.model.trunk.coder.aux_loss()
        beta = ramp(self.beta, self.rate_warmup, self.progress)
        return {"loss": mse + beta * bits + aux, "mse": mse / count, "bytes": bits / count / 8, "aux": aux}


class EntropicStudentTraining(HeadDistillation):
    """Stage ``bottleneck`` (see :class:`HeadDistillation`, with the rate term), then stage ``tail``: encoder
    and entropy model frozen, the decoder, later stages and heads train on the test-time quantized latent
    with their task loss; a head with class logits takes (1 − w)·task + w·T²·KL(teacher ‖ student)."""

    stages = ("bottleneck", "tail")

    def __init__(self, student: SplitNetwork, teacher: SplitNetwork, beta: float, kd_weight: float,
                 kd_temperature: float, levels: Sequence[str] | None = None, rate_warmup: float = 0.0) -> None:
        super().__init__(student, teacher, beta, levels, rate_warmup)
        self.kd_weight = kd_weight
        self.kd_temperature = kd_temperature

    def set_stage(self, stage: str) -> None:
        super().set_stage(stage)
        if stage == "tail":
            self.freeze(self.model.trunk.bottleneck.encoder, self.model.trunk.coder)

    def forward(self, images, targets) -> dict[str, torch.Tensor]:
        if self.stage == "bottleneck":
            return super().forward(images, targets)
        out = self.model(images, targets, quantized=True)
        logs = task_logs(self.model, out, targets)
        distilled = [task for task, head in self.model.heads.items() if head.distills]
        if distilled:
            with torch.no_grad():
                teacher = self.teacher(images).predictions
            kl = sum(kd_divergence(out.predictions[t], teacher[t], self.kd_temperature) for t in distilled)
            logs["loss"] = (1 - self.kd_weight) * logs["loss"] + self.kd_weight * kl
            logs["kl"] = kl
        return logs


class TaskRateTraining(TrainingModule):
    """Stage ``train``: every parameter trains with the task loss + β·(mean bits per image) + the aux loss;
    the stage's end builds the coder tables. ``rate_warmup`` as in :class:`HeadDistillation`."""

    stages = ("train",)

    def __init__(self, model: SplitNetwork, beta: float, rate_warmup: float = 0.0) -> None:
        super().__init__(model)
        self.beta = beta
        self.rate_warmup = rate_warmup

    def set_stage(self, stage: str) -> None:
        self.reset_frozen()

    def end_stage(self, stage: str) -> None:
        self.model.trunk.coder.update()

    def forward(self, images, targets) -> dict[str, torch.Tensor]:
        out = self.model(images, targets)
        logs = task_logs(self.model, out, targets)
        bits = rate_bits(out.likelihoods, "batchmean")
        aux = self.model.trunk.coder.aux_loss()
        beta = ramp(self.beta, self.rate_warmup, self.progress)
        return {**logs, "loss": logs["loss"] + beta * bits + aux, "bytes": bits / 8, "aux": aux}


class RateDistortionTraining(TrainingModule):
    """λ·255²·MSE + bpp (+ the entropy bottleneck's aux loss), CompressAI's convention; the stage's end fits
    the quantiles and builds the coder tables."""

    stages = ("rate_distortion",)

    def __init__(self, codec: nn.Module, lmbda: float) -> None:
        super().__init__(codec)
        self.lmbda = lmbda
        self.factor = int(codec.downsampling_factor)

    def set_stage(self, stage: str) -> None:
        self.reset_frozen()

    def end_stage(self, stage: str) -> None:
        update_coder(self.model)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        height, width = images.shape[-2:]
        out = self.model(pad_replicate(images, self.factor))
        x_hat = out["x_hat"][..., :height, :width]
        mse = F.mse_loss(x_hat.float(), images.float())
        bpp = bits_per_sample(out["likelihoods"]).mean() / (height * width)
        aux = self.model.aux_loss()
        rd = self.lmbda * 255**2 * mse + bpp
        psnr = -10 * torch.log10(mse.detach().clamp_min(1e-10))
        return {"loss": rd + aux, "rd": rd, "mse": mse, "bpp": bpp, "psnr": psnr, "aux": aux}
