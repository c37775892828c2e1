"""Task-quality metrics as accumulators: top-k accuracy, COCO mAP, mIoU, and several tasks at once.

All follow one shape: ``update(predictions, targets)`` per batch, ``compute()`` once at the end, so the
evaluator can stream a dataset without holding every prediction as tensors. Detection delegates the
matching and the 101-point interpolation to pycocotools, so numbers are comparable with published
COCO results; segmentation is a confusion matrix. Which metric a task uses is the task registry's
(:mod:`splitbench.tasks`).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

__all__ = ["DetectionMAP", "Metric", "MultiTaskMetric", "SegmentationIoU", "TaskPart", "TopKAccuracy"]


class Metric(Protocol):
    def update(self, predictions: Any, targets: Any) -> None: ...

    def compute(self) -> dict[str, float]: ...


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


class TaskPart(NamedTuple):
    """One task inside a :class:`MultiTaskMetric`: its metric, how a batch of its per-image predictions is
    formed, and how its targets are picked out of per-image targets that hold every task's annotation."""

    metric: Metric
    predictions: Callable[[list], Any]
    targets: Callable[[Sequence[dict]], Any]


class MultiTaskMetric:
    """Several tasks' metrics from per-image prediction dicts (task → prediction), one part per task the
    predictions hold (``part(task)`` makes it on first sight); :attr:`per_task` holds each task's metrics
    after :meth:`compute`."""

    def __init__(self, part: Callable[[str], TaskPart]) -> None:
        self.part = part
        self.parts: dict[str, TaskPart] = {}
        self.per_task: dict[str, dict[str, float]] = {}

    def update(self, predictions: list[dict], targets: Sequence[dict]) -> None:
        for task in predictions[0]:
            part = self.parts.setdefault(task, self.part(task))
            part.metric.update(part.predictions([p[task] for p in predictions]), part.targets(targets))

    def running(self) -> dict[str, str]:
        running = [getattr(part.metric, "running", dict)() for part in self.parts.values()]
        return {k: v for r in running for k, v in r.items()}

    def compute(self) -> dict[str, float]:
        self.per_task = {task: part.metric.compute() for task, part in self.parts.items()}
        return {k: v for metrics in self.per_task.values() for k, v in metrics.items()}


def _as_numpy(value: Any, dtype: type) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _boxes(value: Any, what: str) -> np.ndarray:
    boxes = _as_numpy(value, np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what} must have shape (N, 4) (xyxy pixels), got {tuple(boxes.shape)}")
    return boxes


class DetectionMAP:
    """COCO box mAP@[.5:.95], mAP@.5 and mAP@.75 over everything passed to :meth:`update`.

    Predictions are torchvision detection outputs ``{"boxes" (N,4) xyxy, "scores" (N,), "labels"
    (N,)}``; targets ``{"boxes" (M,4) xyxy, "labels" (M,)}`` with optional ``"iscrowd"`` (crowd
    boxes neither count as misses nor penalise detections on them) and ``"area"`` (used by COCO's
    area ranges only; defaults to the box area). Classes absent from the ground truth are ignored
    (COCOeval marks them -1 and excludes them from the mean), as in the COCO protocol; up to
    ``max_detections`` detections per image are scored, highest first.
    """

    def __init__(self, max_detections: int = 100) -> None:
        self.max_detections = max_detections
        self.reset()

    def reset(self) -> None:
        self._images: list[dict[str, Any]] = []
        self._gt: list[dict[str, Any]] = []
        self._dt: list[dict[str, Any]] = []

    def update(self, predictions: list[dict[str, Any]], targets: list[dict[str, Any]]) -> None:
        if len(predictions) != len(targets):
            raise ValueError(f"got {len(predictions)} predictions for {len(targets)} targets; one each per image")
        for pred, target in zip(predictions, targets, strict=True):
            image_id = len(self._images) + 1
            self._images.append({"id": image_id})
            self._add_targets(image_id, target)
            self._add_predictions(image_id, pred)

    def _add_targets(self, image_id: int, target: dict[str, Any]) -> None:
        boxes = _boxes(target["boxes"], "target boxes")
        labels = _as_numpy(target["labels"], np.int64).reshape(-1)
        n = len(boxes)
        crowd = _as_numpy(target.get("iscrowd", np.zeros(n)), np.int64).reshape(-1)
        area = target.get("area")
        if area is None:
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        area = _as_numpy(area, np.float64).reshape(-1)
        if not len(labels) == len(crowd) == len(area) == n:
            raise ValueError(
                f"target fields disagree in length: {n} boxes, {len(labels)} labels, "
                f"{len(crowd)} iscrowd, {len(area)} area"
            )
        for box, label, is_crowd, a in zip(boxes, labels, crowd, area, strict=True):
            self._gt.append(self._annotation(image_id, box, int(label), area=float(a), iscrowd=int(is_crowd)))

    def _add_predictions(self, image_id: int, pred: dict[str, Any]) -> None:
        boxes = _boxes(pred["boxes"], "predicted boxes")
        scores = _as_numpy(pred["scores"], np.float64).reshape(-1)
        labels = _as_numpy(pred["labels"], np.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(
                f"prediction fields disagree: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels"
            )
        for box, score, label in zip(boxes, scores, labels, strict=True):
            area = float((box[2] - box[0]) * (box[3] - box[1]))
            self._dt.append(self._annotation(image_id, box, int(label), area=area, iscrowd=0, score=float(score)))

    @staticmethod
    def _annotation(image_id: int, box: np.ndarray, label: int, **fields: Any) -> dict[str, Any]:
        x1, y1, x2, y2 = (float(v) for v in box)
        return {"image_id": image_id, "category_id": label, "bbox": [x1, y1, x2 - x1, y2 - y1], **fields}

    def compute(self) -> dict[str, float]:
        """``{"map", "map50", "map75"}`` in [0, 1]; ValueError when no (non-crowd) ground truth was seen."""
        if not any(ann["iscrowd"] == 0 for ann in self._gt):
            raise ValueError(
                "DetectionMAP has no ground-truth boxes (crowd boxes do not count): mAP is undefined; "
                "call update() with targets that contain boxes"
            )
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        categories = [{"id": c} for c in sorted({a["category_id"] for a in self._gt + self._dt})]

        def in_memory(annotations: list[dict[str, Any]]) -> COCO:
            coco = COCO()  # ids start at 1: COCOeval treats a matched id of 0 as "unmatched"
            anns = [{**a, "id": i} for i, a in enumerate(annotations, start=1)]
            coco.dataset = {"images": self._images, "categories": categories, "annotations": anns}
            coco.createIndex()
            return coco

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and a table
            evaluator = COCOeval(in_memory(self._gt), in_memory(self._dt), iouType="bbox")
            evaluator.params.maxDets = [1, 10, self.max_detections]
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        stats = evaluator.stats
        # With non-crowd ground truth present, the "all areas" entries are never COCOeval's -1.
        return {"map": float(stats[0]), "map50": float(stats[1]), "map75": float(stats[2])}


class SegmentationIoU:
    """Mean IoU and pixel accuracy from a confusion matrix; ``ignore_index`` pixels are skipped.

    mIoU averages over the classes whose union (target or prediction) is non-empty; classes that
    appear in neither are excluded rather than counted as 0 or 1 (the usual VOC convention).
    """

    # A bincount confusion matrix instead of torchmetrics: it is not a dependency and this is a few lines.

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)  # [target, pred]

    def update(self, pred: torch.Tensor | list[torch.Tensor], target: torch.Tensor | list[torch.Tensor]) -> None:
        """``pred``: (B,H,W) class ids or (B,C,H,W) logits; ``target``: (B,H,W) class ids or ignore_index.
        Lists of per-image (H,W) maps (images of several sizes) are taken one image at a time."""
        if isinstance(pred, (list, tuple)) or isinstance(target, (list, tuple)):
            if len(pred) != len(target):
                raise ValueError(f"got {len(pred)} predictions for {len(target)} targets; one each per image")
            for p, t in zip(pred, target, strict=True):
                self.update(p[None], t[None])
            return
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(dim=1)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} does not match target {tuple(target.shape)}")
        target = target.long()
        pred = pred.long()
        valid = target != self.ignore_index
        target, pred = target[valid], pred[valid]
        for values, what in ((target, "target"), (pred, "prediction")):
            bad = values[(values < 0) | (values >= self.num_classes)]
            if bad.numel():
                raise ValueError(
                    f"{what} holds class id {int(bad[0])}, outside [0, {self.num_classes}) "
                    f"and not the ignore index {self.ignore_index}"
                )
        counts = torch.bincount(target * self.num_classes + pred, minlength=self.num_classes**2)
        self.confusion += counts.reshape(self.num_classes, self.num_classes).cpu()

    def compute(self) -> dict[str, float]:
        """``{"miou", "pixel_acc"}``; ValueError when no valid pixel was seen."""
        total = int(self.confusion.sum())
        if total == 0:
            raise ValueError("SegmentationIoU has seen no pixels outside the ignore index: mIoU is undefined")
        hits = self.confusion.diag().double()
        union = self.confusion.sum(0).double() + self.confusion.sum(1).double() - hits
        present = union > 0
        return {
            "miou": float((hits[present] / union[present]).mean()),
            "pixel_acc": float(hits.sum() / total),
        }
