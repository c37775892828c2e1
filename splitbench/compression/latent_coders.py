"""Entropy models for a latent ``y``: likelihoods for training, real per-sample bitstreams for inference.

CompressAI supplies the entropy models and the rANS coder; this module adds what a split
pipeline needs on top: the coded strings of each sample on its own (the pipeline puts them in one
container per sample), a decode that checks what it is given, a batch-invariant rate estimate in
bits per sample, and the exact set of tensors the mobile side must hold.

Coders: :class:`FactorizedPrior` (EntropyBottleneck on y), :class:`ScaleHyperprior` and
:class:`MeanScaleHyperprior` (GaussianConditional on y, EntropyBottleneck on the hyper-latent z),
and :class:`Quantize8Bit` (no entropy model: 8-bit min–max, CR+BQ). Module and parameter names
follow CompressAI (``entropy_bottleneck``, ``gaussian_conditional``, ``h_a``, ``h_s``) so that
CompressAI/sc2bench state dicts map by prefix.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from splitbench.complexity import count_macs
from splitbench.compression.bitstream import DEFAULT_BACKEND, BitstreamError
from splitbench.compression.constriction_coder import ConstrictionCoder, FactorizedTables
from splitbench.compression.rans_coder import RansCoder
from splitbench.compression.uint8_code import Uint8Code
from splitbench.errors import SplitbenchError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # compressai imports torch.jit.script
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional
    from compressai.entropy_models.entropy_models import EntropyModel
    from compressai.models.google import get_scale_table
    from compressai.models.utils import update_registered_buffers

MAX_LATENT_ELEMENTS = 1 << 24
# Entropy-coder tables whose sizes depend on the trained model (resized when a state dict loads).
TABLE_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


Strings = Sequence[bytes]  # one sample's coded segments (y, or y and z)
Coder = TypeVar("Coder", RansCoder, ConstrictionCoder)
_CODERS: dict[bytes, Any] = {}  # by kind and table bytes: see cached_coder
MAX_CACHED_CODERS = 16


def cached_coder(kind: type[Coder], arrays: Mapping[str, np.ndarray]) -> Coder:
    """``kind.from_arrays(arrays)``, built once per set of tables (turning tables into the C++ coder's lists or
    constriction's models costs about as much as coding a sample); kept out of the modules, so copies and
    pickles stay plain."""
    key = b"".join([kind.__qualname__.encode()] + [f"{k}{a.dtype.str}{a.shape}".encode() + a.tobytes()
                                                   for k, a in sorted(arrays.items())])
    coder = _CODERS.get(key)
    if coder is None:
        if len(_CODERS) >= MAX_CACHED_CODERS:
            _CODERS.clear()
        coder = _CODERS[key] = kind.from_arrays(arrays)
    return coder


def rans_coder(model: EntropyModel) -> RansCoder:
    """CompressAI's rANS over ``model``'s tables, their lists built once (:mod:`~splitbench.compression.rans_coder`)."""
    return cached_coder(RansCoder, {k: getattr(model, f"_{k}").detach().cpu().numpy() for k in RansCoder.FIELDS})


class LatentCoder(nn.Module, ABC):
    """Interface every entropy model follows, so bottlenecks and pipelines never special-case one."""

    channels: int  # channels of the latent y it codes
    num_segments: ClassVar[int] = 1  # coded strings per sample
    backends: ClassVar[tuple[str, ...]] = (DEFAULT_BACKEND,)  # entropy coders whose strings it decodes

    @abstractmethod
    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(y_hat, likelihoods): noisy y_hat while training, dequantized in eval mode."""

    @abstractmethod
    def quantize(self, y: torch.Tensor) -> torch.Tensor:
        """The y_hat a decoder sees at test time (without coding), e.g. for stage-2 training."""

    @abstractmethod
    def compress(self, y: torch.Tensor, backend: str = DEFAULT_BACKEND) -> list[tuple[bytes, ...]]:
        """Each sample coded on its own: ``num_segments`` strings per sample, whatever the batch, by the entropy
        coder ``backend`` (one of :attr:`backends`; the default is CompressAI's, whose bytes sc2bench writes)."""

    @abstractmethod
    def decompress(self, strings: Sequence[Strings], shape: tuple[int, int],
                   backend: str = DEFAULT_BACKEND) -> torch.Tensor:
        """Inverse of :meth:`compress` for samples whose latent has spatial ``shape`` (derived by the caller,
        never read off the wire) coded by ``backend``; raises BitstreamError on strings that cannot be this
        latent."""

    @abstractmethod
    def estimate_bits(self, y: torch.Tensor) -> torch.Tensor:
        """The entropy model's rate estimate −Σ log2 p of the test-time quantized latent, per sample ([B]), to
        compare with the real bytes. For the entropy models p is the 16-bit table the coder really codes each
        symbol with (:meth:`RansCoder.bits`, escapes included), so the strings are the estimate plus rANS's
        flush; it differs from the continuous likelihoods the model trains with by the tables' rounding (up to
        ~2% on a hyperprior's scale buckets) and by how escapes are coded. A sample's estimate does not depend
        on the batch it is computed in."""

    @abstractmethod
    def update(self) -> None:
        """Freeze the coder's tables from the current model (after rate training)."""

    @abstractmethod
    def aux_loss(self) -> torch.Tensor: ...

    @abstractmethod
    def mobile_state(self) -> dict[str, torch.Tensor]:
        """Every tensor the device needs to produce the bitstream (for encoder size and export)."""

    def export_tables(self) -> tuple[str, dict[str, np.ndarray]]:
        """(kind, tables as numpy arrays) for a device that codes without torch (``splitbench export``); the kind
        names the torch-free coder that reads them. A coder that cannot run there raises a one-line
        SplitbenchError saying why."""
        raise SplitbenchError(f"{type(self).__name__} has no torch-free device coder yet; factorized-prior "
                              f"and 8-bit (CR+BQ) models export")

    def check_backend(self, backend: str) -> None:
        if backend not in self.backends:
            raise BitstreamError(f"{type(self).__name__} decodes {', '.join(self.backends)} streams, not {backend}")

    def device_networks(self) -> dict[str, nn.Module]:
        """Networks the device runs inside the coder (a hyperprior's h_a and h_s), by attribute name:
        their parameters are part of the encoder, not only the tables."""
        return {}

    def device_macs(self, y: torch.Tensor) -> int:
        """MACs of the device networks when coding ``y`` (entropy coding itself is table look-ups)."""
        return 0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The coder tables' sizes depend on the trained model; size the buffers before loading.
        for name, module in self.named_children():
            if isinstance(module, EntropyModel):
                names = [n for n in TABLE_BUFFERS if f"{prefix}{name}.{n}" in state_dict]
                if names:
                    update_registered_buffers(module, f"{prefix}{name}", names, state_dict, policy="resize")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def bits_per_sample(likelihoods: dict[str, torch.Tensor]) -> torch.Tensor:
    """The entropy model's rate estimate, −Σ log2 p, per sample (shape [B])."""
    total = None
    for p in likelihoods.values():
        bits = -torch.log2(p).flatten(1).sum(1)
        total = bits if total is None else total + bits
    assert total is not None
    return total


def _check_strings(strings: Sequence[Strings], count: int) -> None:
    if not strings:
        raise BitstreamError("no bitstreams to decode")
    if any(len(s) != count for s in strings):
        raise BitstreamError(f"this coder needs {count} segment(s) per sample")


def entropy_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The parameters of every entropy model inside ``module`` (densities, quantiles), which train at their
    own learning rate (see :meth:`~splitbench.training.module.TrainingModule.parameter_groups`)."""
    return [p for m in module.modules() if isinstance(m, EntropyModel) for p in m.parameters()]


@torch.no_grad()
def fit_quantiles(eb: EntropyBottleneck, iterations: int = 64) -> float:
    """Set an EntropyBottleneck's range (the quantiles) exactly for its learned density; returns the aux loss.

    CompressAI learns the quantiles by gradient descent on an auxiliary loss that depends only
    on the density model. A short training run leaves them far from converged, and tables built
    from them cover the wrong range (costly escape codes). The cumulative logit is monotone in
    each quantile, so bisection solves the same equations exactly, in milliseconds.
    """
    target = eb.target.view(1, 1, -1).expand_as(eb.quantiles)
    bound = torch.full_like(eb.quantiles, 16.0)
    while True:  # widen until every root is bracketed (the density has finite tails)
        below = eb._logits_cumulative(-bound, stop_gradient=True) < target
        above = eb._logits_cumulative(bound, stop_gradient=True) > target
        if bool((below & above).all()) or bool((bound > 1e6).any()):
            break
        bound = torch.where(below & above, bound, bound * 4)
    low, high = -bound, bound.clone()
    for _ in range(iterations):
        mid = (low + high) / 2
        too_low = eb._logits_cumulative(mid, stop_gradient=True) < target
        low = torch.where(too_low, mid, low)
        high = torch.where(too_low, high, mid)
    eb.quantiles.data.copy_((low + high) / 2)
    return float(eb.loss())


def factorized_tables(eb: EntropyBottleneck) -> dict[str, torch.Tensor]:
    """What a device needs to code with an EntropyBottleneck: its CDF tables and medians."""
    return {
        "quantized_cdf": eb._quantized_cdf,
        "cdf_length": eb._cdf_length,
        "offset": eb._offset,
        "medians": eb._get_medians().detach().flatten(),
    }


def gaussian_tables(gc: GaussianConditional) -> dict[str, torch.Tensor]:
    """What a device needs to code with a GaussianConditional: the scale table and its CDF tables."""
    return {"scale_table": gc.scale_table, "quantized_cdf": gc._quantized_cdf, "cdf_length": gc._cdf_length,
            "offset": gc._offset}


def factorized_symbols(eb: EntropyBottleneck, y: torch.Tensor) -> torch.Tensor:
    """``round(y − median)`` as int32 (in fp32 whatever y's dtype): what EntropyBottleneck.compress codes."""
    return eb.quantize(y.detach().float(), "symbols", eb._get_medians().detach())


def factorized_bits(eb: EntropyBottleneck, y: torch.Tensor) -> torch.Tensor:
    """The bits CompressAI's rANS codes ``y`` with (:meth:`RansCoder.bits`)."""
    return rans_coder(eb).bits(factorized_symbols(eb, y))


class FactorizedPrior(LatentCoder):
    """A fully factorized (per-channel, non-parametric) prior: CompressAI's EntropyBottleneck.

    Codes with CompressAI's rANS by default, or with constriction over the same tables (what the torch-free
    device writes, :mod:`~splitbench.compression.constriction_coder`)."""

    backends = (DEFAULT_BACKEND, ConstrictionCoder.backend)

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.entropy_bottleneck = EntropyBottleneck(channels)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        y_hat, likelihoods = self.entropy_bottleneck(y)
        return y_hat, {"y": likelihoods}

    def quantize(self, y: torch.Tensor) -> torch.Tensor:
        eb = self.entropy_bottleneck
        medians = eb._get_medians()
        return torch.round(y - medians) + medians

    def compress(self, y: torch.Tensor, backend: str = DEFAULT_BACKEND) -> list[tuple[bytes, ...]]:
        """CompressAI's strings (EntropyBottleneck.compress's, byte for byte, through :class:`RansCoder`), or
        constriction's over the same tables."""
        self.check_backend(backend)
        if backend == DEFAULT_BACKEND:
            eb = self.entropy_bottleneck
            return [(s,) for s in rans_coder(eb).encode(factorized_symbols(eb, y))]
        coder = cached_coder(ConstrictionCoder, self._arrays())
        return [(s,) for s in coder.compress(y.detach().float().cpu().numpy())]

    def decompress(self, strings: Sequence[Strings], shape: tuple[int, int],
                   backend: str = DEFAULT_BACKEND) -> torch.Tensor:
        _check_strings(strings, 1)
        self.check_backend(backend)
        size = (int(shape[0]), int(shape[1]))
        medians = self.entropy_bottleneck._get_medians().detach()
        if backend == DEFAULT_BACKEND:
            eb = self.entropy_bottleneck
            return eb.dequantize(rans_coder(eb).decode([s[0] for s in strings], (self.channels, *size))
                                 .to(medians.device), medians)
        y_hat = cached_coder(ConstrictionCoder, self._arrays()).decompress([s[0] for s in strings], size)
        return torch.from_numpy(y_hat).to(medians.device)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in factorized_tables(self.entropy_bottleneck).items()}

    def tables(self) -> FactorizedTables:
        """The coding tables (built by :meth:`update`) as numpy arrays: what a torch-free coder needs."""
        return FactorizedTables.from_arrays(self._arrays())

    def export_tables(self) -> tuple[str, dict[str, np.ndarray]]:
        return "factorized", self.tables().arrays()  # read by ConstrictionCoder.from_arrays

    def estimate_bits(self, y: torch.Tensor) -> torch.Tensor:
        """The bits of the tables it codes with (see :meth:`LatentCoder.estimate_bits`): table look-ups on the
        integer symbols, no pass through the density network."""
        return factorized_bits(self.entropy_bottleneck, y)

    def update(self) -> None:
        self.fit_quantiles()
        self.entropy_bottleneck.update(force=True)

    def fit_quantiles(self, iterations: int = 64) -> float:
        """See :func:`fit_quantiles`."""
        return fit_quantiles(self.entropy_bottleneck, iterations)

    def aux_loss(self) -> torch.Tensor:
        return self.entropy_bottleneck.loss()

    def mobile_state(self) -> dict[str, torch.Tensor]:
        return factorized_tables(self.entropy_bottleneck)


def hyper_transforms(channels: int, hyper_channels: int, predicts_means: bool) -> tuple[nn.Sequential, nn.Sequential]:
    """(h_a, h_s) in sc2bench's SHP/MSHP bottleneck layout (bias-free 5×5 convs, two halvings).

    Indices match sc2bench (h_a.0/.2, h_s.0/.2/.4), so their weights load by prefix. For a latent
    of side 4k+3 (55 for ResNet-50 at 224 px) h_s reproduces y's size exactly; other sizes are
    fitted by :meth:`ScaleHyperprior._fit` on both sides.
    """
    act: type[nn.Module] = nn.LeakyReLU if predicts_means else nn.ReLU
    mid = hyper_channels * 3 // 2 if predicts_means else hyper_channels
    h_a = nn.Sequential(
        nn.Conv2d(channels, hyper_channels, 5, stride=2, padding=1, bias=False), act(inplace=True),
        nn.Conv2d(hyper_channels, hyper_channels, 5, stride=2, padding=2, bias=False),
    )
    h_s = nn.Sequential(
        nn.ConvTranspose2d(hyper_channels, hyper_channels, 5, stride=2, padding=1, bias=False),
        nn.LeakyReLU(inplace=True),
        nn.ConvTranspose2d(hyper_channels, mid, 5, stride=2, padding=1, bias=False), nn.LeakyReLU(inplace=True),
        nn.Conv2d(mid, channels * (2 if predicts_means else 1), 5, stride=1, padding=0, bias=False),
    )
    return h_a, h_s


def _per_sample(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``module`` one sample at a time, so coding never depends on how samples were batched:
    the scales that index y's tables must be bit-identical on the device and on the server."""
    return torch.cat([module(x[i : i + 1]) for i in range(x.shape[0])]) if x.shape[0] > 1 else module(x)


class ScaleHyperprior(LatentCoder):
    """y ~ N(0, σ²) with σ predicted from a hyper-latent z = h_a(|y|), z coded with a factorized prior.

    Two strings per sample, [y string, z string]; z's shape follows from y's (the decoder derives it, so
    a mismatched pair cannot be sent). The device runs h_a *and* h_s (it needs σ to code y), so both
    count in :meth:`mobile_state`.
    """

    predicts_means: ClassVar[bool] = False
    num_segments = 2

    def __init__(self, channels: int, hyper_channels: int = 16) -> None:
        super().__init__()
        if channels < 1 or hyper_channels < 1:
            raise ValueError(f"channels and hyper_channels must be >= 1, got {channels}, {hyper_channels}")
        self.channels = channels
        self.hyper_channels = hyper_channels
        self.h_a, self.h_s = hyper_transforms(channels, hyper_channels, self.predicts_means)
        self.entropy_bottleneck = EntropyBottleneck(hyper_channels)
        self.gaussian_conditional = GaussianConditional(None)

    # ---- the parts shared by training, quantize and coding

    def _hyper_input(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.predicts_means else torch.abs(y)

    @staticmethod
    def _fit(params: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Crop or edge-pad h_s's output to y's (H, W); a no-op for sides 4k+3."""
        h, w = params.shape[-2:]
        if (h, w) == tuple(size):
            return params
        if h < size[0] or w < size[1]:
            pad = (0, max(0, size[1] - w), 0, max(0, size[0] - h))
            params = nn.functional.pad(params, pad, mode="replicate")
        return params[..., : size[0], : size[1]]

    def _gaussian(self, params: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(scales, means) from h_s's output; means is None for the scale-only hyperprior."""
        params = self._fit(params, size)
        if self.predicts_means:
            scales, means = params.chunk(2, 1)
            return scales, means
        return params, None

    def _quantize_z(self, z: torch.Tensor) -> torch.Tensor:
        """z rounded around the medians: what EntropyBottleneck.decompress returns, without decoding."""
        eb = self.entropy_bottleneck
        return eb.quantize(z, "dequantize", eb._get_medians())

    def _z_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """z's (H, W) for a y of ``size``, from h_a's conv arithmetic (no tensor is allocated)."""
        h, w = size
        for m in self.h_a:
            if isinstance(m, nn.Conv2d):
                k, s, p = m.kernel_size, m.stride, m.padding
                h = (h + 2 * int(p[0]) - k[0]) // s[0] + 1
                w = (w + 2 * int(p[1]) - k[1]) // s[1] + 1
        if h < 1 or w < 1:
            raise BitstreamError(f"latent shape {tuple(size)} is too small for this hyperprior")
        return h, w

    def _coding_params(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(z, scales, means) exactly as the decoder will see them (per sample)."""
        z = _per_sample(self.h_a, self._hyper_input(y))
        scales, means = self._gaussian(_per_sample(self.h_s, self._quantize_z(z)), y.shape[-2:])
        return z, scales, means

    # ---- LatentCoder

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.autocast(y.device.type, enabled=False):  # likelihoods need full precision
            y = y.float()
            z_hat, z_likelihoods = self.entropy_bottleneck(self.h_a(self._hyper_input(y)))
            scales, means = self._gaussian(self.h_s(z_hat), y.shape[-2:])
            y_hat, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
        return y_hat, {"y": y_likelihoods, "z": z_likelihoods}

    def quantize(self, y: torch.Tensor) -> torch.Tensor:
        """y rounded around the predicted means (MSHP) or to integers (SHP), as the decoder returns it."""
        _, _, means = self._coding_params(y.float())
        return self.gaussian_conditional.quantize(y.float(), "dequantize", means)

    @torch.no_grad()
    def compress(self, y: torch.Tensor, backend: str = DEFAULT_BACKEND) -> list[tuple[bytes, ...]]:
        self.check_backend(backend)
        y = y.float()
        z, scales, means = self._coding_params(y)
        eb, gc = self.entropy_bottleneck, self.gaussian_conditional
        z_strings = rans_coder(eb).encode(factorized_symbols(eb, z))
        y_strings = rans_coder(gc).encode(gc.quantize(y, "symbols", means), gc.build_indexes(scales))
        return list(zip(y_strings, z_strings, strict=True))

    @torch.no_grad()
    def decompress(self, strings: Sequence[Strings], shape: tuple[int, int],
                   backend: str = DEFAULT_BACKEND) -> torch.Tensor:
        _check_strings(strings, 2)
        self.check_backend(backend)
        size = (int(shape[0]), int(shape[1]))
        eb, gc = self.entropy_bottleneck, self.gaussian_conditional
        medians = eb._get_medians().detach()
        z_symbols = rans_coder(eb).decode([s[1] for s in strings], (self.hyper_channels, *self._z_size(size)))
        z_hat = eb.dequantize(z_symbols.to(medians.device), medians)
        scales, means = self._gaussian(_per_sample(self.h_s, z_hat), size)
        indexes = gc.build_indexes(scales)
        y_symbols = rans_coder(gc).decode([s[0] for s in strings], (self.channels, *size), indexes)
        return gc.dequantize(y_symbols.to(medians.device), means)

    @torch.no_grad()
    def estimate_bits(self, y: torch.Tensor) -> torch.Tensor:
        """y's bits in the tables of the scales the decoder will see (rounded around its means), plus z's: both
        per sample, by :meth:`RansCoder.bits` (h_a and h_s run again for the scales: small next to g_a)."""
        y = y.float()
        z, scales, means = self._coding_params(y)
        gc = self.gaussian_conditional
        return (rans_coder(gc).bits(gc.quantize(y, "symbols", means), gc.build_indexes(scales))
                + factorized_bits(self.entropy_bottleneck, z))

    def update(self) -> None:
        fit_quantiles(self.entropy_bottleneck)
        self.entropy_bottleneck.update(force=True)
        self.gaussian_conditional.update_scale_table(get_scale_table(), force=True)

    def aux_loss(self) -> torch.Tensor:
        return self.entropy_bottleneck.loss()

    def device_networks(self) -> dict[str, nn.Module]:
        return {"h_a": self.h_a, "h_s": self.h_s}

    def export_tables(self) -> tuple[str, dict[str, np.ndarray]]:
        raise SplitbenchError("hyperprior models (shp, mshp) do not export yet: the device computes y's scale "
                              "indices from floats (h_s), which ONNX Runtime and PyTorch do not compute "
                              "bit-identically, so the server could decode garbage; factorized-prior (fp) models "
                              "export")

    def device_macs(self, y: torch.Tensor) -> int:
        """h_a on y, then h_s on the quantized z: what the device runs to get y's entropy parameters."""
        hyper_input = self._hyper_input(y)
        z_hat = torch.round(self.h_a(hyper_input))
        return count_macs(self.h_a, hyper_input) + count_macs(self.h_s, z_hat)

    def mobile_state(self) -> dict[str, torch.Tensor]:
        state = {f"{name}.{k}": v for name, net in self.device_networks().items() for k, v in net.state_dict().items()}
        state.update({f"entropy_bottleneck.{k}": v for k, v in factorized_tables(self.entropy_bottleneck).items()})
        state.update({f"gaussian_conditional.{k}": v
                      for k, v in gaussian_tables(self.gaussian_conditional).items()})
        return state


class MeanScaleHyperprior(ScaleHyperprior):
    """y ~ N(μ, σ²) with μ and σ predicted from z = h_a(y) (Minnen et al.'s mean-scale hyperprior)."""

    predicts_means = True


class Quantize8Bit(LatentCoder):
    """8-bit min–max quantization per sample (CR+BQ): no entropy model, a fixed-length code.

    scale = (max − min)/255 and zero point = −min/scale of each sample's whole tensor; both
    travel as little-endian float32 in front of the uint8 values (8 bytes, counted in the size).
    The bytes come from :class:`~splitbench.compression.uint8_code.Uint8Code` (numpy, shared with the
    torch-free device); :meth:`quantize` is the same arithmetic in torch, for the eval forward on any device.
    Training passes y through unchanged (the bottleneck is distilled in float); eval mode and
    :meth:`quantize` give what the decoder returns. The likelihoods are the code's own: 1/256
    per value, so the "estimate" is the payload without parameters and header.

    ``integer_zero_point=True`` is sc2bench's quantizer (torchdistill's ``quantize_tensor``,
    Jacob et al.'s scheme) to the bit: the zero point is −min/scale clamped to [0, 255] and then
    truncated to an integer, values are round(clamp(zero point + y/scale, 0, 255)), and they
    decode as scale·(q − zero point). The zero point then travels as one byte (float32 scale +
    uint8 zero point: 5 bytes). sc2bench takes min/max over the whole batch it is given; here
    they are per sample, which is the same at its evaluation batch size of 1.
    """

    LEVELS = 255

    def __init__(self, channels: int, integer_zero_point: bool = False) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.channels = channels
        self.integer_zero_point = integer_zero_point

    def _params(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample (scale, zero point), float32, shaped to broadcast over y."""
        lo, hi = torch.aminmax(y.detach().float().flatten(1), dim=1)
        scale = (hi - lo) / self.LEVELS
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # a constant tensor codes as all zeros
        view = (-1,) + (1,) * (y.dim() - 1)
        zero_point = -lo / scale
        if self.integer_zero_point:  # clamp, then truncate (= floor on [0, 255]), as sc2bench's int()
            zero_point = zero_point.clamp(0, self.LEVELS).floor()
        return scale.view(view), zero_point.view(view)

    def _symbols(self, y: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
        return torch.round(y.float() / scale + zero_point).clamp_(0, self.LEVELS)

    @staticmethod
    def _dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
        return (q - zero_point) * scale

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        y_hat = y if self.training else self.quantize(y)
        return y_hat, {"y": torch.full_like(y, 1 / (self.LEVELS + 1), dtype=torch.float)}

    def quantize(self, y: torch.Tensor) -> torch.Tensor:
        scale, zero_point = self._params(y)
        return self._dequantize(self._symbols(y, scale, zero_point), scale, zero_point)

    @property
    def code(self) -> Uint8Code:
        """The bytes' layout and arithmetic, shared with the torch-free device."""
        return Uint8Code(self.channels, self.integer_zero_point)

    @torch.no_grad()
    def compress(self, y: torch.Tensor, backend: str = DEFAULT_BACKEND) -> list[tuple[bytes, ...]]:
        self.check_backend(backend)
        return [(s,) for s in self.code.compress(y.detach().float().cpu().numpy())]

    @torch.no_grad()
    def decompress(self, strings: Sequence[Strings], shape: tuple[int, int],
                   backend: str = DEFAULT_BACKEND) -> torch.Tensor:
        _check_strings(strings, 1)
        self.check_backend(backend)
        h, w = int(shape[0]), int(shape[1])
        params = self.code.params
        expected = params.size + self.channels * h * w
        out = torch.empty(len(strings), self.channels, h, w)
        for i, segments in enumerate(strings):
            data = segments[0]
            if len(data) != expected:
                raise BitstreamError(f"8-bit payload of {len(data)} bytes; a {self.channels}×{h}×{w} latent "
                                     f"needs {expected}")
            scale, zero_point = params.unpack_from(data)
            if not (math.isfinite(scale) and math.isfinite(zero_point) and scale > 0):
                raise BitstreamError(f"corrupt 8-bit payload: scale {scale}, zero point {zero_point}")
            q = torch.frombuffer(bytearray(data[params.size :]), dtype=torch.uint8).view(self.channels, h, w)
            out[i] = self._dequantize(q.float(), torch.tensor(scale), torch.tensor(float(zero_point)))
        return out

    def estimate_bits(self, y: torch.Tensor) -> torch.Tensor:
        """A fixed-length code: 8 bits per value (what :meth:`forward`'s 1/256 likelihoods say)."""
        return torch.full((y.shape[0],), 8.0 * y[0].numel())

    def update(self) -> None:
        """Nothing to build: the code has no tables."""

    def export_tables(self) -> tuple[str, dict[str, np.ndarray]]:
        return "uint8", self.code.arrays()  # read by Uint8Code.from_arrays

    def aux_loss(self) -> torch.Tensor:
        return torch.zeros(())

    def mobile_state(self) -> dict[str, torch.Tensor]:
        return {}
