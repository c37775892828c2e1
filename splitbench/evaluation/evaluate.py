"""Run a split pipeline over a dataset and measure the three SC2 metrics plus timings.

Every sample is coded on its own, so byte counts are exact at any batch size: data size is
``len()`` of each sample's bitstream, nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from splitbench.evaluation.micro_batch import MicroBatchTuner
from splitbench.evaluation.task_metrics import Metric, TopKAccuracy
from splitbench.pipelines.base import SplitPipeline
from splitbench.progress import progress_bar


@dataclass
class EvaluationResult:
    num_samples: int
    metrics: dict[str, float]
    data_size: dict[str, float]
    encoder: dict[str, int]
    timing: dict[str, float]
    runtime: dict = field(default_factory=dict)
    sizes: list[int] = field(repr=False, default_factory=list)


def _stats(values: list[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"bytes_mean": float(a.mean()), "bytes_std": float(a.std()),
            "bytes_p50": float(np.percentile(a, 50)), "bytes_p95": float(np.percentile(a, 95))}


def _synchronize() -> None:
    """Wait for queued CUDA work, so that a step's time is its own (kernels run asynchronously)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    _synchronize()
    return out, time.perf_counter() - start


def _count(images: torch.Tensor | list) -> int:
    return images.shape[0] if isinstance(images, torch.Tensor) else len(images)


@torch.no_grad()
def evaluate(
    pipeline: SplitPipeline, batches: Iterable[tuple[Any, Any]], metric: Metric, *, total: int | None = None,
    progress: bool = True, description: str = "evaluate",
) -> EvaluationResult:
    """``metric`` of ``pipeline`` over ``batches``, with per-sample bytes and per-step time. The networks run in
    the micro-batches measured fastest on the first batches (:mod:`~splitbench.evaluation.micro_batch`)."""
    sizes: list[int] = []
    estimates: list[float] = []
    seconds = {"mobile_network": 0.0, "entropy_encode": 0.0, "entropy_decode": 0.0, "server_network": 0.0}
    n = batch_size = 0
    encoder = None
    tuner = MicroBatchTuner(pipeline.networks)
    bar = progress_bar(total, description, enabled=progress, every=max(1, (total or 1000) // 10), unit="img")
    try:
        for images, targets in batches:
            count = _count(images)
            if encoder is None:
                encoder = pipeline.encoder_stats(images)
                batch_size = count
            tuner.before(count)
            features, t_mobile = _timed(pipeline.mobile_forward, images)
            payloads, t_encode = _timed(pipeline.encode, features)
            if len(payloads) != count or not all(isinstance(p, bytes) for p in payloads):
                raise TypeError(f"{type(pipeline).__name__}.encode must return one bytes object per sample")
            decoded, t_decode = _timed(pipeline.decode, payloads)
            predictions, t_server = _timed(pipeline.server_forward, decoded)
            tuner.after(count, {"mobile_network": t_mobile, "server_network": t_server})
            seconds["mobile_network"] += t_mobile
            seconds["entropy_encode"] += t_encode
            seconds["entropy_decode"] += t_decode
            seconds["server_network"] += t_server
            sizes.extend(len(p) for p in payloads)
            estimate = pipeline.estimate_bits(images, features)
            if estimate is not None:
                estimates.extend((estimate / 8).tolist())
            metric.update(predictions, targets)
            n += count
            bar.update(count)
            if progress:
                running = metric.running() if hasattr(metric, "running") else {}
                bar.set_postfix(**running, kB=f"{sum(sizes) / n / 1000:.2f}", refresh=False)
    finally:
        tuner.finish()
        bar.close()
    if n == 0:
        raise ValueError("the evaluation split is empty")
    data_size = _stats(sizes)
    if estimates:
        data_size["estimate_bytes_mean"] = float(np.mean(estimates))
    ms = {f"{k}_ms_mean": 1000 * v / n for k, v in seconds.items()}
    runtime = {**pipeline.describe_runtime(), **tuner.describe(batch_size)}
    ms.update(runtime.pop("timing", {}))  # per-sample times measured where the coding ran
    timing = {"encode_ms_mean": ms["mobile_network_ms_mean"] + ms["entropy_encode_ms_mean"],
              "decode_ms_mean": ms["entropy_decode_ms_mean"] + ms["server_network_ms_mean"], **ms}
    return EvaluationResult(n, metric.compute(), data_size, encoder or {}, timing, runtime, sizes)


def evaluate_classification(
    pipeline: SplitPipeline, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *, total: int | None = None,
    progress: bool = True, description: str = "evaluate",
) -> EvaluationResult:
    """Top-1/top-5 accuracy, per-sample bytes and per-step time of ``pipeline`` over ``batches``."""
    return evaluate(pipeline, batches, TopKAccuracy(), total=total, progress=progress, description=description)
