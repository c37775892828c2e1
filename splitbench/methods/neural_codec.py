"""Neural input compression: a CompressAI image codec on the device, the teacher on the server.

Architectures by CompressAI's names (``bmshj2018-factorized``, ``bmshj2018-hyperprior``,
``mbt2018-mean``, ``mbt2018``). The device runs the analysis transforms and the entropy coder;
everything it needs to produce the bits counts as encoder size: g_a, h_a, h_s (the y coder's
scales/means come from the decoded hyperlatent, on both sides), for ``mbt2018`` the context model
and entropy-parameter network, and the coder tables. One container bitstream per sample holds
the image size and the y (and z) strings; the latent shapes follow from the image size, so they
are never trusted from the wire.

Weights come from rate–distortion training here (``lmbda``: loss = λ·255²·MSE + bpp, CompressAI's
convention), optionally starting from a local checkpoint (``weights``) or CompressAI's zoo
(``pretrained: true`` + ``quality``, which downloads); without ``lmbda`` those weights are used as is.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from splitbench.codecs.base import MAX_PIXELS
from splitbench.complexity import count_macs
from splitbench.compression.bitstream import BitstreamError, pack, unpack
from splitbench.compression.latent_coders import (
    _padded,
    bits_per_sample,
    factorized_tables,
    fit_quantiles,
    gaussian_tables,
)
from splitbench.errors import CheckpointError, SplitbenchError
from splitbench.methods.base import BuildContext, Method, MethodArgs, register_method
from splitbench.models.backbones import PretrainedUnavailableError
from splitbench.models.staged import StagedNetwork
from splitbench.pipeline import SplitPipeline
from splitbench.training.checkpoint import load_state_strict
from splitbench.training.module import TrainingModule

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

ARCHITECTURES: dict[str, type[CompressionModel]] = {
    "bmshj2018-factorized": FactorizedPriorModel,
    "bmshj2018-hyperprior": ScaleHyperprior,
    "mbt2018-mean": MeanScaleHyperprior,
    "mbt2018": JointAutoregressiveHierarchicalPriors,
}
Architecture = Literal["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean", "mbt2018"]
CONTEXT_KERNEL = 5  # mbt2018's masked 5×5 context model (as in CompressAI's compress/decompress)


# ------------------------------------------------------------------ building and loading


def zoo_widths(arch: str, quality: int) -> tuple[int, int]:
    """(N, M) of CompressAI's pretrained model at ``quality``: the zoo fixes the widths per quality."""
    from compressai.zoo.image import cfgs

    return cfgs[arch][quality]


def load_pretrained(model: CompressionModel, arch: str, quality: int) -> None:
    """Load CompressAI's zoo weights (a download; cached by torch.hub) into ``model``."""
    from compressai.zoo import image_models

    try:
        zoo = image_models[arch](quality=quality, metric="mse", pretrained=True, progress=False)
    except Exception as error:  # no network, no cache
        raise PretrainedUnavailableError(
            f"cannot fetch CompressAI's pretrained {arch} at quality {quality} ({error}); download it on a "
            f"machine with network access (it lands in torch.hub's cache), or pass a local file with "
            f"method_args.weights"
        ) from error
    load_state_strict(model, zoo.state_dict(), f"CompressAI zoo {arch} q{quality}")


def load_codec_weights(model: CompressionModel, path: str | Path) -> None:
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
    load_state_strict(model, rename_old_keys(state), str(path))


def entropy_bottlenecks(model: nn.Module) -> list[EntropyBottleneck]:
    return [m for m in model.modules() if isinstance(m, EntropyBottleneck)]


@torch.no_grad()
def update_coder(model: CompressionModel) -> None:
    """Fit every EntropyBottleneck's quantiles exactly (bisection), then build all coder tables."""
    for eb in entropy_bottlenecks(model):
        fit_quantiles(eb)
    model.update(force=True)


def coder_ready(model: CompressionModel) -> bool:
    return all(eb._offset.numel() > 0 for eb in entropy_bottlenecks(model))


# ------------------------------------------------------------------ the device side


def padded_size(height: int, width: int, factor: int) -> tuple[int, int]:
    return math.ceil(height / factor) * factor, math.ceil(width / factor) * factor


def pad_image(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Replicate-pad bottom/right to a multiple of the model's downsampling (cheaper than zeros)."""
    height, width = x.shape[-2:]
    ph, pw = padded_size(height, width, factor)
    return x if (ph, pw) == (height, width) else F.pad(x, (0, pw - width, 0, ph - height), mode="replicate")


def analysis(model: CompressionModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """y = g_a(x) and, for hyperprior models, z = h_a(y) (of |y| for the scale-only hyperprior)."""
    y = model.g_a(x)
    if not isinstance(model, ScaleHyperprior):
        return y, None
    return y, model.h_a(y if isinstance(model, MeanScaleHyperprior) else torch.abs(y))


def compress_latents(model: CompressionModel, y: torch.Tensor, z: torch.Tensor | None) -> list[list[bytes]]:
    """CompressAI's ``compress`` from the latents on: [y strings] or [y strings, z strings], per sample."""
    if z is None:
        return [model.entropy_bottleneck.compress(y)]
    eb, gc = model.entropy_bottleneck, model.gaussian_conditional
    z_strings = eb.compress(z)
    params = model.h_s(eb.decompress(z_strings, z.shape[-2:]))
    if isinstance(model, JointAutoregressiveHierarchicalPriors):
        pad = (CONTEXT_KERNEL - 1) // 2
        y_strings = [model._compress_ar(F.pad(y[i : i + 1], (pad,) * 4), params[i : i + 1], y.shape[2],
                                        y.shape[3], CONTEXT_KERNEL, pad) for i in range(y.shape[0])]
    elif isinstance(model, MeanScaleHyperprior):
        scales, means = params.chunk(2, 1)
        y_strings = gc.compress(y, gc.build_indexes(scales), means=means)
    else:
        y_strings = gc.compress(y, gc.build_indexes(params))
    return [y_strings, z_strings]


def device_modules(model: CompressionModel) -> dict[str, nn.Module]:
    """The networks the device runs to produce the bits (coder tables are counted separately)."""
    names = ["g_a", "h_a", "h_s", "context_prediction", "entropy_parameters"]
    if not isinstance(model, ScaleHyperprior):
        names = ["g_a"]
    elif not isinstance(model, JointAutoregressiveHierarchicalPriors):
        names = names[:3]
    return {n: getattr(model, n) for n in names}


def coder_tables(model: CompressionModel) -> dict[str, torch.Tensor]:
    """The entropy coders' tables on the device: the factorized prior's and the Gaussian conditional's."""
    tables = {f"entropy_bottleneck.{k}": v for k, v in factorized_tables(model.entropy_bottleneck).items()}
    if isinstance(model, ScaleHyperprior):
        tables.update({f"gaussian_conditional.{k}": v for k, v in gaussian_tables(model.gaussian_conditional).items()})
    return tables


class DeviceNetwork(nn.Module):
    """The device's network computation in one forward, for counting MACs (coding itself has none)."""

    def __init__(self, model: CompressionModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        y, z = analysis(m, pad_image(x, m.downsampling_factor))
        if z is None:
            return y
        params = m.h_s(m.entropy_bottleneck.quantize(z, "dequantize", m.entropy_bottleneck._get_medians()))
        if isinstance(m, JointAutoregressiveHierarchicalPriors):
            context = m.context_prediction(m.gaussian_conditional.quantize(y, "dequantize"))
            params = m.entropy_parameters(torch.cat((params, context), dim=1))
        return params


class Latents(NamedTuple):
    y: torch.Tensor
    z: torch.Tensor | None
    size: tuple[int, int]  # the image's (height, width) before padding


class NeuralCodecPipeline(SplitPipeline):
    """g_a (+ hyperprior and context model) and entropy coding on the device; decode, g_s, teacher on the server."""

    def __init__(self, codec: CompressionModel, model: StagedNetwork, device: torch.device,
                 max_pixels: int = MAX_PIXELS, description: dict | None = None) -> None:
        if not coder_ready(codec):
            raise SplitbenchError("the codec's entropy coder has no tables: train it (its stage ends with "
                                  "update) or load updated weights")
        self.device = torch.device(device)
        self.codec = codec.to(self.device).eval()
        self.model = model.to(self.device).eval()
        self.factor = int(codec.downsampling_factor)
        self.num_segments = 2 if isinstance(codec, ScaleHyperprior) else 1
        self.max_pixels = max_pixels
        self.description = description or {}

    @torch.no_grad()
    def mobile_forward(self, images: torch.Tensor) -> Latents:
        images = images.to(self.device)
        y, z = analysis(self.codec, pad_image(images, self.factor))
        return Latents(y, z, (int(images.shape[2]), int(images.shape[3])))

    @torch.no_grad()
    def encode(self, features: Latents) -> list[bytes]:
        strings = compress_latents(self.codec, features.y, features.z)
        return [pack(features.size, list(segments)) for segments in zip(*strings, strict=True)]

    @torch.no_grad()
    def decode(self, payloads: list[bytes]) -> torch.Tensor:
        if not payloads:
            raise ValueError("no bitstreams to decode")
        streams = [unpack(p, ndim=2, num_segments=self.num_segments, max_elements=self.max_pixels)
                   for p in payloads]
        size = streams[0].shape
        if any(s.shape != size for s in streams):
            raise BitstreamError("bitstreams in one batch must share an image size; decode them separately")
        height, width = size
        ph, pw = padded_size(height, width, self.factor)
        symbols = self.codec.M * (ph // 16) * (pw // 16)  # y has the most symbols; the padding bounds both
        strings = [[_padded(s.segments[k], symbols) for s in streams] for k in range(self.num_segments)]
        x_hat = self.codec.decompress(strings, (ph // self.factor, pw // self.factor))["x_hat"]
        return x_hat[..., :height, :width]

    @torch.no_grad()
    def server_forward(self, decoded: torch.Tensor) -> torch.Tensor:
        return self.model(decoded)

    @torch.no_grad()
    def estimate_bits(self, images: torch.Tensor, features: Any = None) -> torch.Tensor:
        out = self.codec(pad_image(images.to(self.device), self.factor))
        return bits_per_sample(out["likelihoods"])

    def mobile_state(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for name, module in device_modules(self.codec).items():
            state.update({f"{name}.{k}": v for k, v in module.named_parameters()})
            state.update({f"{name}.{k}": v for k, v in module.named_buffers()})
        state.update(coder_tables(self.codec))
        return state

    def mobile_params(self) -> int:
        return sum(p.numel() for m in device_modules(self.codec).values() for p in m.parameters())

    @torch.no_grad()
    def mobile_macs(self, images: torch.Tensor) -> int:
        return count_macs(DeviceNetwork(self.codec), images.to(self.device))

    def describe_runtime(self) -> dict[str, Any]:
        return {"workers": 1, "threads": torch.get_num_threads(),
                "codec": {"arch": self.description.get("arch"), "N": int(self.codec.N), "M": int(self.codec.M),
                          **{k: v for k, v in self.description.items() if k != "arch"}}}


# ------------------------------------------------------------------ training


class RateDistortionTraining(TrainingModule):
    """λ·255²·MSE + bpp (+ the entropy bottleneck's aux loss); the stage's end builds the coder tables."""

    stages = ("rate_distortion",)

    def __init__(self, codec: CompressionModel, lmbda: float) -> None:
        super().__init__(codec)
        self.lmbda = lmbda
        self.factor = int(codec.downsampling_factor)

    def set_stage(self, stage: str) -> None:
        self.reset_frozen()

    def end_stage(self, stage: str) -> None:
        update_coder(self.model)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        height, width = images.shape[-2:]
        out = self.model(pad_image(images, self.factor))
        x_hat = out["x_hat"][..., :height, :width]
        mse = F.mse_loss(x_hat.float(), images.float())
        bpp = bits_per_sample(out["likelihoods"]).mean() / (height * width)
        aux = self.model.aux_loss()
        rd = self.lmbda * 255**2 * mse + bpp
        psnr = -10 * torch.log10(mse.detach().clamp_min(1e-10))
        return {"loss": rd + aux, "rd": rd, "mse": mse, "bpp": bpp, "psnr": psnr, "aux": aux}


# ------------------------------------------------------------------ the method


class NeuralCodecArgs(MethodArgs):
    arch: Architecture = "mbt2018-mean"
    N: int = Field(32, ge=1, description="channels of the transforms (CompressAI's N); the zoo's when pretrained")
    M: int = Field(48, ge=2, description="latent channels (CompressAI's M); the zoo's when pretrained")
    lmbda: float | None = Field(None, gt=0, description="train with loss = λ·255²·MSE + bpp; unset = use the "
                                "loaded weights as they are")
    pretrained: bool = Field(False, description="CompressAI's zoo weights at `quality` (a download)")
    quality: int | None = Field(None, ge=1, le=8, description="zoo quality index, with pretrained")
    weights: str | None = Field(None, description="a local CompressAI checkpoint (.pth, .pth.tar, .safetensors)")

    @model_validator(mode="after")
    def _one_source(self) -> NeuralCodecArgs:
        if self.pretrained != (self.quality is not None):
            raise ValueError("pretrained: true and quality (1-8) go together")
        if self.pretrained and self.weights:
            raise ValueError("set pretrained or weights, not both")
        if self.lmbda is None and not (self.pretrained or self.weights):
            raise ValueError("set lmbda to train the codec, or pretrained + quality / weights to load one")
        return self


@register_method
class NeuralCodec(Method):
    """Neural input compression: a CompressAI codec (factorized, hyperprior, mean-scale, autoregressive)."""

    name = "neural_codec"
    Args: ClassVar = NeuralCodecArgs
    stages = ("rate_distortion",)
    server_is_teacher = True

    def variant(self, args: NeuralCodecArgs) -> str:
        return args.arch

    def rate_param(self, args: NeuralCodecArgs) -> dict:
        out: dict[str, Any] = {}
        if args.pretrained:
            out["quality"] = args.quality
        if args.lmbda is not None:
            out["lambda"] = args.lmbda
        return out

    def needs_training(self, config) -> bool:
        """False when the weights are used as loaded (pretrained or a file, no ``lmbda``)."""
        return config.args().lmbda is not None

    def build_model(self, ctx: BuildContext, args: NeuralCodecArgs, teacher: StagedNetwork | None):
        n, m = zoo_widths(args.arch, args.quality) if args.pretrained else (args.N, args.M)
        return ARCHITECTURES[args.arch](n, m)

    def load_initial(self, model: CompressionModel, args: NeuralCodecArgs) -> None:
        """Pretrained or file weights, if any: the start of training, or the codec itself without ``lmbda``."""
        if args.pretrained:
            assert args.quality is not None
            load_pretrained(model, args.arch, args.quality)
        elif args.weights:
            load_codec_weights(model, args.weights)
        if (args.pretrained or args.weights) and not coder_ready(model):
            update_coder(model)

    def training_module(self, ctx, args: NeuralCodecArgs, model, teacher) -> TrainingModule:
        if args.lmbda is None:
            raise SplitbenchError("neural_codec trains only with method_args.lmbda set; without it the "
                                  "pretrained/weights codec is evaluated as is")
        self.load_initial(model, args)
        return RateDistortionTraining(model, args.lmbda)

    def pipeline(self, ctx, args: NeuralCodecArgs, model, teacher) -> NeuralCodecPipeline:
        assert teacher is not None
        if args.lmbda is None:  # the loaded codec is the codec
            model = self.build_model(ctx, args, teacher)
            self.load_initial(model, args)
        elif model is None:
            raise SplitbenchError("neural_codec with lmbda needs its trained weights (splitbench train)")
        loaded = "pretrained" if args.pretrained else "weights" if args.weights else None
        description: dict[str, Any] = {"arch": args.arch, "source": "trained" if args.lmbda is not None else loaded}
        if args.lmbda is not None:
            description["lambda"] = args.lmbda
        if loaded:  # what the codec was loaded from (as is, or as the start of training)
            description["init"] = f"CompressAI zoo quality {args.quality}" if args.pretrained else args.weights
        # A decoder must not be sized by the wire: allow up to 16× the configured image area.
        max_pixels = 16 * ctx.config.data.image_size ** 2
        return NeuralCodecPipeline(model, teacher, ctx.device, max_pixels, description)
