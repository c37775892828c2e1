"""splitbench vs sc2bench: the same ResNet-50 FP Entropic Student evaluated on the same images, real entropy coding.

The student has random weights (speed does not depend on accuracy), but entropy-coding time
depends on the rate, so the latent is scaled to a plausible spread and the entropy model's density
is fitted to it briefly before both tools build their coder tables from it (one model, converted
with splitbench.compat.sc2bench, so both emit byte-identical entropy-coded strings; the script
checks that). sc2bench runs at batch 1, as its per-forward size analysis requires; splitbench at
batch 1 and batched. Data size: sc2bench's own FileSizeAnalyzer (sys.getsizeof of a pickle) vs
splitbench's ``len(bitstream)``. The entropy coders are also timed alone on the same latents, one sample at
a time: CompressAI's EntropyBottleneck (what sc2bench calls), splitbench's compressai backend (the same C++
rANS and the same strings) and its constriction backend (constriction's range coder over the same tables).

Usage: python benchmarks/vs_sc2bench.py [--images 256] [--size 224] [--batch 32]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import _common  # noqa: F401  (offline, warning filters)


def build_reference(num_classes: int):
    import torch
    from sc2bench.models.backbone import splittable_resnet

    torch.manual_seed(0)
    bottleneck = {"key": "FPBasedResNetBottleneck", "kwargs": {"num_bottleneck_channels": 24,
                                                                 "num_target_channels": 256}}
    analysis = {"analyzes_after_compress": True, "analyzer_configs": [{"key": "FileSizeAnalyzer",
                                                                        "kwargs": {"unit": "B"}}]}
    return splittable_resnet(bottleneck, resnet_name="resnet50", num_classes=num_classes, skips_avgpool=False,
                             skips_fc=False, analysis_config=analysis).eval()


def fit_entropy_model(ref, images, latent_std: float, steps: int) -> None:
    """Spread the random encoder's latent to ``latent_std`` and fit the factorized density to it."""
    import torch

    from splitbench.compression.latent_coders import fit_quantiles

    layer = ref.bottleneck_layer
    with torch.no_grad():
        y = layer.encoder(images)
        layer.encoder[-1].weight.mul_(latent_std / float(y.std()))
        y = layer.encoder(images)
    eb = layer.entropy_bottleneck.train()
    optimizer = torch.optim.Adam([p for n, p in eb.named_parameters() if n != "quantiles"], lr=1e-2)
    for _ in range(steps):
        _, likelihoods = eb(y)
        loss = -torch.log2(likelihoods).sum() / y.shape[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    eb.eval()
    fit_quantiles(eb)  # the coder's range, solved exactly (what CompressAI's aux loss converges to)
    ref.update()


def time_sc2bench(ref, cached) -> tuple[float, dict[str, float], list[float]]:
    """Wall seconds for sc2bench's forward at batch 1, ms/image per step, and its data sizes (bytes)."""
    import torch

    layer, eb = ref.bottleneck_layer, ref.bottleneck_layer.entropy_bottleneck
    spent: dict[str, float] = defaultdict(float)

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            spent[name] += time.perf_counter() - start
            return out
        return wrapper

    originals = layer.encoder.forward, eb.compress, eb.decompress
    layer.encoder.forward = timed("mobile_network", layer.encoder.forward)
    eb.compress, eb.decompress = timed("entropy_encode", eb.compress), timed("entropy_decode", eb.decompress)
    analyzer = ref.analyzers[0]
    analyzer.clear()
    ref.activate_analysis()
    start = time.perf_counter()
    with torch.no_grad():
        for image, _ in cached:
            ref(image[None]).argmax(1)
    wall = time.perf_counter() - start
    layer.encoder.forward, eb.compress, eb.decompress = originals
    ref.deactivate_analysis()
    n = len(cached)
    ms = {k: 1000 * v / n for k, v in spent.items()}
    ms["server_network"] = 1000 * wall / n - sum(ms.values())  # decoder + layer2-4 + fc (+ pickle, argmax)
    return wall, ms, list(analyzer.file_size_list)


def time_coders(coder, latents, spent: dict[str, list[float]]) -> None:
    """Add each entropy coder's encode and decode seconds over ``latents`` (one sample at a time) to ``spent``,
    checking that every coder decodes what it encoded and that splitbench's compressai strings are CompressAI's."""
    import torch

    from splitbench.compression.rans_coder import pad_for_decoder

    eb = coder.entropy_bottleneck
    shape = tuple(latents[0].shape[-2:])
    symbols = coder.channels * shape[0] * shape[1]
    coders = {
        "CompressAI EntropyBottleneck (sc2bench)": (lambda y: eb.compress(y)[0],
                                                    lambda s: eb.decompress([pad_for_decoder(s, symbols)], shape)),
        "splitbench compressai": (lambda y: coder.compress(y)[0][0], lambda s: coder.decompress([(s,)], shape)),
        "splitbench constriction": (lambda y: coder.compress(y, "constriction")[0][0],
                                    lambda s: coder.decompress([(s,)], shape, "constriction")),
    }
    strings = {}
    for name, (encode, decode) in coders.items():
        start = time.perf_counter()
        strings[name] = [encode(y) for y in latents]
        middle = time.perf_counter()
        decoded = [decode(s) for s in strings[name]]
        spent[name][0] += middle - start
        spent[name][1] += time.perf_counter() - middle
        assert all(torch.equal(d, coder.quantize(y)) for d, y in zip(decoded, latents, strict=True)), name
    assert strings["splitbench compressai"] == strings["CompressAI EntropyBottleneck (sc2bench)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--latent-std", type=float, default=0.4, help="spread of the random encoder's latent")
    parser.add_argument("--fit-steps", type=int, default=300)
    parser.add_argument("--chunk", type=int, default=32, help="images per alternation between the tools")
    args = parser.parse_args()

    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from splitbench.compat.sc2bench import load_sc2bench
    from splitbench.compression.bitstream import unpack
    from splitbench.data import get_dataset
    from splitbench.evaluation import evaluate_classification
    from splitbench.models.staged import Normalize
    from splitbench.pipelines import LearnedPipeline

    data = get_dataset("shapes", "val", image_size=args.size, num_samples=args.images, seed=0, train_transforms=False)
    cached = [(x, torch.tensor(y)) for x, y in data]  # splitbench input: [0, 1] images
    ref = build_reference(num_classes=1000)
    normalize = Normalize()  # splitbench normalises inside the model, sc2bench in its data transforms
    normalized = [(normalize(x[None])[0], y) for x, y in cached]
    fit_entropy_model(ref, torch.stack([x for x, _ in normalized[:16]]), args.latent_std, args.fit_steps)
    model = load_sc2bench(ref.state_dict(), image_size=args.size)
    pipeline = LearnedPipeline(model)

    with torch.no_grad():  # same strings, same predictions
        probe = torch.stack([x for x, _ in cached[:4]])
        ref_strings = [ref.bottleneck_layer.encode(model.trunk.normalize(probe[i : i + 1]))["strings"][0][0]
                       for i in range(4)]
        assert [unpack(p).segments[0] for p in pipeline.mobile(probe)] == ref_strings, "bitstreams differ"

    warm = normalized[:4]
    time_sc2bench(ref, warm)
    for batch in (1, args.batch):  # warm-up
        evaluate_classification(pipeline, DataLoader(cached[:batch], batch_size=batch), progress=False)
    # The CPU is shared: measure both tools chunk by chunk, alternating, so they see the same load.
    steps = ("mobile_network", "entropy_encode", "entropy_decode", "server_network")
    sc_wall, sc_ms, sc_sizes = 0.0, defaultdict(float), []
    wall, ms, sizes, estimates = defaultdict(float), defaultdict(lambda: defaultdict(float)), defaultdict(list), []
    coding: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    runtime = {}
    for first in range(0, len(cached), args.chunk):
        chunk = slice(first, first + args.chunk)
        with torch.no_grad():
            latents = [model.trunk.encode(x[None]) for x, _ in cached[chunk]]
        time_coders(model.trunk.coder, latents, coding)
        seconds, chunk_ms, chunk_sizes = time_sc2bench(ref, normalized[chunk])
        sc_wall += seconds
        sc_sizes += chunk_sizes
        for k, v in chunk_ms.items():
            sc_ms[k] += v * len(chunk_sizes)
        for batch in (1, args.batch):
            start = time.perf_counter()
            result = evaluate_classification(pipeline, DataLoader(cached[chunk], batch_size=batch), progress=False)
            wall[batch] += time.perf_counter() - start
            sizes[batch] += result.sizes
            for k in steps:
                ms[batch][k] += result.timing[f"{k}_ms_mean"] * result.num_samples
            if batch == 1:
                estimates.append(result.data_size["estimate_bytes_mean"] * result.num_samples)
            runtime[batch] = result.runtime["micro_batch"]
    n = len(cached)
    assert sizes[1] == sizes[args.batch], "per-sample bytes must not depend on the batch size"

    sc_rate = n / sc_wall
    print(f"{n} shapes images at {args.size}px, ResNet-50 FP-24 student, torch threads {torch.get_num_threads()}, "
          f"latent std {args.latent_std}, density fitted {args.fit_steps} steps, chunks of {args.chunk}")
    print(f"sc2bench   batch  1: {sc_rate:6.2f} images/s  ms/image: "
          + "  ".join(f"{k} {v / n:.1f}" for k, v in sc_ms.items()))
    rates, protocol = {}, {}
    for batch in (1, args.batch):
        rates[batch] = n / wall[batch]
        protocol[batch] = 1000 * n / sum(ms[batch].values())
        extras = 1000 * wall[batch] / n - 1000 / protocol[batch]
        micro = ", ".join(f"{k.removesuffix('_network')} {v}" for k, v in runtime[batch].items())
        print(f"splitbench batch {batch:2d}: {rates[batch]:6.2f} images/s  ms/image: "
              + "  ".join(f"{k} {ms[batch][k] / n:.1f}" for k in steps)
              + f"  | the four protocol steps alone {protocol[batch]:.2f} images/s; evaluator extras "
              f"(entropy-model rate estimate, MAC count, top-5) {extras:.1f} ms/image; micro-batches: {micro}")
    for name, (encode, decode) in coding.items():
        print(f"entropy coding alone, {name:40s} ms/image: encode {1000 * encode / n:.2f}  decode "
              f"{1000 * decode / n:.2f}")
    print(f"data size per sample: splitbench {np.mean(sizes[1]):.1f} B (len(bitstream); entropy-model estimate "
          f"{sum(estimates) / n:.1f} B) vs sc2bench {np.mean(sc_sizes):.1f} B (sys.getsizeof(pickle)); "
          f"identical entropy-coded strings")
    print(f"ratio splitbench/sc2bench images/s: batch 1 {rates[1] / sc_rate:.2f}x "
          f"(protocol steps {protocol[1] / sc_rate:.2f}x), batch {args.batch} {rates[args.batch] / sc_rate:.2f}x "
          f"(protocol steps {protocol[args.batch] / sc_rate:.2f}x)")


if __name__ == "__main__":
    main()
