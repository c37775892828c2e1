"""CompressAI image codecs as neural input codecs: the architectures by name, building and loading them.

Architectures by CompressAI's names (``bmshj2018-factorized``, ``bmshj2018-hyperprior``,
``mbt2018-mean``, ``mbt2018``). Each is described by what it has (:class:`Architecture`), so the code
that runs them branches on declared capabilities, not on CompressAI's class hierarchy. The split
(what the device runs, what the server decodes) is :mod:`splitbench.pipelines.neural_codec`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from splitbench.compression.latent_coders import factorized_tables, fit_quantiles, gaussian_tables
from splitbench.errors import CheckpointError
from splitbench.models.backbones import PretrainedUnavailableError
from splitbench.models.images import pad_replicate
from splitbench.training.checkpoint import load_state_strict

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # compressai imports torch.jit.script
    from compressai.entropy_models import EntropyBottleneck
    from compressai.models import (
        CompressionModel,
        JointAutoregressiveHierarchicalPriors,
        MeanScaleHyperprior,
        ScaleHyperprior,
    )
    from compressai.models import FactorizedPrior as FactorizedPriorModel

ArchitectureName = Literal["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean", "mbt2018"]
CONTEXT_KERNEL = 5  # mbt2018's masked 5×5 context model (as in CompressAI's compress/decompress)


@dataclass(frozen=True)
class Architecture:
    """What a CompressAI architecture has: a hyperprior (z, and a Gaussian conditional on y), predicted
    means (h_a sees y rather than |y|), a masked context model on y."""

    model: type[CompressionModel]
    hyperprior: bool = False
    means: bool = False
    context: bool = False

    @property
    def num_segments(self) -> int:
        return 2 if self.hyperprior else 1

    def device_modules(self, codec: CompressionModel) -> dict[str, nn.Module]:
        """The networks the device runs to produce the bits (coder tables are counted separately): g_a, and
        for a hyperprior h_a and h_s (the y coder's scales come from the decoded z, on both sides), and the
        context model with its entropy-parameter network."""
        names = ["g_a"] + (["h_a", "h_s"] if self.hyperprior else []) + (
            ["context_prediction", "entropy_parameters"] if self.context else [])
        return {n: getattr(codec, n) for n in names}

    def analysis(self, codec: CompressionModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """y = g_a(x) and, with a hyperprior, z = h_a(y) (of |y| for the scale-only hyperprior)."""
        y = codec.g_a(x)
        if not self.hyperprior:
            return y, None
        return y, codec.h_a(y if self.means else torch.abs(y))

    def compress(self, codec: CompressionModel, y: torch.Tensor, z: torch.Tensor | None) -> list[list[bytes]]:
        """CompressAI's ``compress`` from the latents on: [y strings] or [y strings, z strings]."""
        if z is None:
            return [codec.entropy_bottleneck.compress(y)]
        eb, gc = codec.entropy_bottleneck, codec.gaussian_conditional
        z_strings = eb.compress(z)
        params = codec.h_s(eb.decompress(z_strings, z.shape[-2:]))
        if self.context:
            pad = (CONTEXT_KERNEL - 1) // 2
            y_strings = [codec._compress_ar(F.pad(y[i : i + 1], (pad,) * 4), params[i : i + 1], y.shape[2],
                                            y.shape[3], CONTEXT_KERNEL, pad) for i in range(y.shape[0])]
        elif self.means:
            scales, means = params.chunk(2, 1)
            y_strings = gc.compress(y, gc.build_indexes(scales), means=means)
        else:
            y_strings = gc.compress(y, gc.build_indexes(params))
        return [y_strings, z_strings]

    def likelihoods(self, codec: CompressionModel, y: torch.Tensor, z: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The entropy models' likelihoods of the latents :meth:`analysis` gave, as CompressAI's ``forward`` computes
        them in eval mode, without its synthesis g_s (the rate estimate needs none of it)."""
        if z is None:
            return {"y": codec.entropy_bottleneck(y)[1]}
        z_hat, z_likelihoods = codec.entropy_bottleneck(z)
        params = codec.h_s(z_hat)
        gc = codec.gaussian_conditional
        if self.context:
            context = codec.context_prediction(gc.quantize(y, "noise" if codec.training else "dequantize"))
            params = codec.entropy_parameters(torch.cat((params, context), dim=1))
        scales, means = params.chunk(2, 1) if self.means else (params, None)
        return {"y": gc(y, scales, means=means)[1], "z": z_likelihoods}

    def coder_tables(self, codec: CompressionModel) -> dict[str, torch.Tensor]:
        """The entropy coders' tables on the device: the factorized prior's and the Gaussian conditional's."""
        tables = {f"entropy_bottleneck.{k}": v for k, v in factorized_tables(codec.entropy_bottleneck).items()}
        if self.hyperprior:
            tables.update({f"gaussian_conditional.{k}": v
                           for k, v in gaussian_tables(codec.gaussian_conditional).items()})
        return tables


ARCHITECTURES: dict[str, Architecture] = {
    "bmshj2018-factorized": Architecture(FactorizedPriorModel),
    "bmshj2018-hyperprior": Architecture(ScaleHyperprior, hyperprior=True),
    "mbt2018-mean": Architecture(MeanScaleHyperprior, hyperprior=True, means=True),
    "mbt2018": Architecture(JointAutoregressiveHierarchicalPriors, hyperprior=True, means=True, context=True),
}


def architecture_of(codec: CompressionModel) -> Architecture:
    """The :class:`Architecture` of a codec instance (by its exact class)."""
    for arch in ARCHITECTURES.values():
        if type(codec) is arch.model:
            return arch
    raise CheckpointError(f"{type(codec).__name__} is not one of the neural codecs: {', '.join(ARCHITECTURES)}")


def build_codec(arch: str, n: int, m: int) -> CompressionModel:
    return ARCHITECTURES[arch].model(n, m)


def zoo_widths(arch: str, quality: int) -> tuple[int, int]:
    """(N, M) of CompressAI's pretrained model at ``quality``: the zoo fixes the widths per quality."""
    from compressai.zoo.image import cfgs

    return cfgs[arch][quality]


def load_pretrained(codec: CompressionModel, arch: str, quality: int) -> None:
    """Load CompressAI's zoo weights (a download; cached by torch.hub) into ``codec``."""
    from compressai.zoo import image_models

    try:
        zoo = image_models[arch](quality=quality, metric="mse", pretrained=True, progress=False)
    except Exception as error:  # no network, no cache
        raise PretrainedUnavailableError(
            f"cannot fetch CompressAI's pretrained {arch} at quality {quality} ({error}); download it on a "
            f"machine with network access (it lands in torch.hub's cache), or pass a local file with "
            f"method_args.weights"
        ) from error
    load_state_strict(codec, zoo.state_dict(), f"CompressAI zoo {arch} q{quality}")


def load_codec_weights(codec: CompressionModel, path: str | Path) -> None:
    """A CompressAI-format checkpoint (``.pth``/``.pth.tar`` with or without ``state_dict``, or safetensors)."""
    from compressai.zoo import load_state_dict as rename_old_keys

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"codec weights not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt file, a pickle with code, wrong format
        raise CheckpointError(f"cannot read codec weights {path}: {error}") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds no state dict")
    load_state_strict(codec, rename_old_keys(state), str(path))


def entropy_bottlenecks(codec: nn.Module) -> list[EntropyBottleneck]:
    return [m for m in codec.modules() if isinstance(m, EntropyBottleneck)]


@torch.no_grad()
def update_coder(codec: CompressionModel) -> None:
    """Fit every EntropyBottleneck's quantiles exactly (bisection), then build all coder tables."""
    for eb in entropy_bottlenecks(codec):
        fit_quantiles(eb)
    codec.update(force=True)


def coder_ready(codec: CompressionModel) -> bool:
    return all(eb._offset.numel() > 0 for eb in entropy_bottlenecks(codec))


class DeviceNetwork(nn.Module):
    """The device's network computation in one forward, for counting MACs (coding itself has none)."""

    def __init__(self, codec: CompressionModel) -> None:
        super().__init__()
        self.codec = codec
        self.arch = architecture_of(codec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.codec
        y, z = self.arch.analysis(c, pad_replicate(x, c.downsampling_factor))
        if z is None:
            return y
        params = c.h_s(c.entropy_bottleneck.quantize(z, "dequantize", c.entropy_bottleneck._get_medians()))
        if self.arch.context:
            context = c.context_prediction(c.gaussian_conditional.quantize(y, "dequantize"))
            params = c.entropy_parameters(torch.cat((params, context), dim=1))
        return params
