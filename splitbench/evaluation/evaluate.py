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
from tqdm.auto import tqdm

from splitbench.pipeline import SplitPipeline


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


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


class TopKAccuracy:
    """Top-1 and top-5 accuracy from logits (top-k is capped at the number of classes)."""

    def __init__(self) -> None:
        self.correct1 = self.correct5 = self.n = 0

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        labels = labels.to(logits.device)
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        self.correct1 += int((top5[:, 0] == labels).sum())
        self.correct5 += int((top5 == labels[:, None]).any(1).sum())
        self.n += labels.shape[0]

    def running(self) -> dict[str, str]:
        return {"top1": f"{self.correct1 / max(1, self.n):.3f}"}

    def compute(self) -> dict[str, float]:
        return {"top1": self.correct1 / self.n, "top5": self.correct5 / self.n}


class MultiTaskMetric:
    """Every task's metric from per-image prediction dicts (task → prediction) and multi-task targets
    (``{"label", "boxes", "labels", "mask"}``); :attr:`per_task` holds each task's metrics after compute."""

    def __init__(self, segmentation_classes: int) -> None:
        self.segmentation_classes = segmentation_classes
        self.metrics: dict = {}
        self.per_task: dict[str, dict[str, float]] = {}

    def update(self, predictions: list[dict], targets: list[dict]) -> None:
        for task in predictions[0]:
            if task not in self.metrics:
                self.metrics[task] = task_metric(task, self.segmentation_classes)
            mine = [p[task] for p in predictions]
            if task == "classification":
                self.metrics[task].update(torch.stack(mine), torch.tensor([int(t["label"]) for t in targets]))
            elif task == "detection":
                self.metrics[task].update(mine, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
            else:
                self.metrics[task].update(mine, [t["mask"] for t in targets])

    def running(self) -> dict[str, str]:
        return self.metrics["classification"].running() if "classification" in self.metrics else {}

    def compute(self) -> dict[str, float]:
        self.per_task = {task: metric.compute() for task, metric in self.metrics.items()}
        return {k: v for metrics in self.per_task.values() for k, v in metrics.items()}


def task_metric(task: str, num_classes: int):
    """The accumulator of a task's quality metric: ``update(predictions, targets)``, ``compute() -> dict``.
    ``num_classes`` matters for segmentation (classes with background; for multitask, its segmentation's)."""
    if task == "classification":
        return TopKAccuracy()
    from splitbench.evaluation.task_metrics import DetectionMAP, SegmentationIoU

    if task == "detection":
        return DetectionMAP()
    if task == "segmentation":
        return SegmentationIoU(num_classes)
    if task == "multitask":
        return MultiTaskMetric(num_classes)
    raise ValueError(f"no metric for task {task!r}")


def _count(images: torch.Tensor | list) -> int:
    return images.shape[0] if isinstance(images, torch.Tensor) else len(images)


@torch.no_grad()
def evaluate(
    pipeline: SplitPipeline, batches: Iterable[tuple[Any, Any]], metric: Any, *, total: int | None = None,
    progress: bool = True, description: str = "evaluate",
) -> EvaluationResult:
    """``metric`` of ``pipeline`` over ``batches``, with per-sample bytes and per-step time."""
    sizes: list[int] = []
    estimates: list[float] = []
    seconds = {"mobile_network": 0.0, "entropy_encode": 0.0, "entropy_decode": 0.0, "server_network": 0.0}
    n = 0
    encoder = None
    bar = tqdm(total=total, desc=description, disable=not progress, leave=False, unit="img", dynamic_ncols=True)
    for images, targets in batches:
        count = _count(images)
        if encoder is None:
            encoder = pipeline.encoder_stats(images)
        features, t_mobile = _timed(pipeline.mobile_forward, images)
        payloads, t_encode = _timed(pipeline.encode, features)
        if len(payloads) != count or not all(isinstance(p, bytes) for p in payloads):
            raise TypeError(f"{type(pipeline).__name__}.encode must return one bytes object per sample")
        decoded, t_decode = _timed(pipeline.decode, payloads)
        predictions, t_server = _timed(pipeline.server_forward, decoded)
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
        running = metric.running() if hasattr(metric, "running") else {}
        bar.set_postfix(**running, kB=f"{np.mean(sizes) / 1000:.2f}", refresh=False)
    bar.close()
    if n == 0:
        raise ValueError("the evaluation split is empty")
    data_size = _stats(sizes)
    if estimates:
        data_size["estimate_bytes_mean"] = float(np.mean(estimates))
    ms = {f"{k}_ms_mean": 1000 * v / n for k, v in seconds.items()}
    runtime = dict(pipeline.describe_runtime())
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
