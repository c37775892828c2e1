"""Detection mAP and segmentation mIoU against cases computed by hand."""

from __future__ import annotations

import pytest
import torch

from splitbench.evaluation.task_metrics import DetectionMAP, SegmentationIoU


def _target(boxes: list[list[float]], labels: list[int], **extra: list) -> dict[str, torch.Tensor]:
    out = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels)}
    return out | {k: torch.tensor(v) for k, v in extra.items()}


def _pred(boxes: list[list[float]], scores: list[float], labels: list[int]) -> dict[str, torch.Tensor]:
    return _target(boxes, labels) | {"scores": torch.tensor(scores)}


def _map(preds: list[dict], targets: list[dict]) -> dict[str, float]:
    metric = DetectionMAP()
    metric.update(preds, targets)
    return metric.compute()


# --- detection -------------------------------------------------------------------------------------


def test_perfect_detection_is_one() -> None:
    targets = [_target([[10, 10, 50, 40], [60, 5, 90, 30]], [1, 3]), _target([[0, 0, 20, 20]], [2])]
    preds = [_pred(t["boxes"].tolist(), [0.9] * len(t["labels"]), t["labels"].tolist()) for t in targets]
    assert _map(preds, targets) == pytest.approx({"map": 1.0, "map50": 1.0, "map75": 1.0})


def test_known_iou_matches_known_fraction_of_thresholds() -> None:
    # gt 100x100 box; prediction covers its top 62 rows: IoU = 6200 / 10000 = 0.62. It matches at
    # IoU thresholds 0.50, 0.55, 0.60 and misses 0.65..0.95: AP is 1 at 3 of the 10, so mAP = 0.3.
    # (An IoU of exactly 0.60 would not do: np.linspace gives the threshold 0.6000000000000001.)
    result = _map([_pred([[0, 0, 100, 62]], [0.8], [1])], [_target([[0, 0, 100, 100]], [1])])
    assert result["map50"] == pytest.approx(1.0)
    assert result["map"] == pytest.approx(0.3)
    assert result["map75"] == pytest.approx(0.0)


def test_higher_scored_false_positive_halves_ap() -> None:
    # Ranked: FP (0.9), then TP (0.8). Recall [0, 1], precision [0, 1/2]; COCO makes precision
    # monotone from the right -> [1/2, 1/2], so each of the 101 recall points reads 1/2: AP = 0.5.
    pred = _pred([[200, 200, 240, 240], [10, 10, 50, 50]], [0.9, 0.8], [1, 1])
    result = _map([pred], [_target([[10, 10, 50, 50]], [1])])
    assert result == pytest.approx({"map": 0.5, "map50": 0.5, "map75": 0.5})


def test_lower_scored_false_positive_costs_nothing() -> None:
    pred = _pred([[200, 200, 240, 240], [10, 10, 50, 50]], [0.1, 0.8], [1, 1])
    assert _map([pred], [_target([[10, 10, 50, 50]], [1])])["map"] == pytest.approx(1.0)


def test_wrong_label_scores_zero() -> None:
    # Class 2 has no ground truth (ignored); class 1 has a box and no detection: AP 0.
    result = _map([_pred([[10, 10, 50, 50]], [0.9], [2])], [_target([[10, 10, 50, 50]], [1])])
    assert result == {"map": 0.0, "map50": 0.0, "map75": 0.0}


def test_images_without_predictions_or_ground_truth() -> None:
    targets = [_target([[10, 10, 50, 50]], [1]), _target([], []), _target([[5, 5, 25, 25]], [1])]
    empty = _pred([], [], [])
    # Image 2: nothing either side (no effect). Image 3: its box is missed -> recall tops out at 1/2,
    # precision 1 up to there: 51 of the 101 recall points (0.00..0.50) read 1 -> AP = 51/101.
    result = _map([_pred([[10, 10, 50, 50]], [0.9], [1]), empty, empty], targets)
    assert result["map"] == pytest.approx(51 / 101)
    # A detection on an image without ground truth is a false positive (ranked first: AP halves).
    result = _map([_pred([[10, 10, 50, 50]], [0.5], [1]), _pred([[1, 1, 9, 9]], [0.9], [1])], targets[:2])
    assert result["map"] == pytest.approx(0.5)


def test_crowd_boxes_neither_missed_nor_penalised() -> None:
    target = _target([[10, 10, 50, 50], [100, 100, 200, 200]], [1, 1], iscrowd=[0, 1])
    pred = _pred([[10, 10, 50, 50], [110, 110, 190, 190]], [0.5, 0.9], [1, 1])  # the 0.9 one sits on the crowd
    assert _map([pred], [target])["map"] == pytest.approx(1.0)


def test_accumulates_across_updates_and_resets() -> None:
    metric = DetectionMAP()
    metric.update([_pred([[0, 0, 10, 10]], [0.9], [1])], [_target([[0, 0, 10, 10]], [1])])
    metric.update([_pred([], [], [])], [_target([[0, 0, 10, 10]], [1])])
    assert metric.compute()["map"] == pytest.approx(51 / 101)
    metric.reset()
    with pytest.raises(ValueError, match="no ground-truth"):
        metric.compute()


def test_no_ground_truth_raises() -> None:
    with pytest.raises(ValueError, match="no ground-truth"):
        _map([_pred([[0, 0, 10, 10]], [0.9], [1])], [_target([], [])])
    with pytest.raises(ValueError, match="crowd"):
        _map([_pred([], [], [])], [_target([[0, 0, 10, 10]], [1], iscrowd=[1])])


def test_mismatched_inputs_raise() -> None:
    with pytest.raises(ValueError, match="1 predictions for 2 targets"):
        DetectionMAP().update([_pred([], [], [])], [_target([], []), _target([], [])])
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        DetectionMAP().update([_pred([], [], [])], [{"boxes": torch.zeros(2, 3), "labels": torch.zeros(2)}])


# --- segmentation ----------------------------------------------------------------------------------


def test_perfect_segmentation_is_one() -> None:
    target = torch.randint(0, 5, (2, 8, 8))
    metric = SegmentationIoU(num_classes=5)
    metric.update(target.clone(), target)
    assert metric.compute() == {"miou": 1.0, "pixel_acc": 1.0}


def _half_and_half() -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.zeros(1, 4, 4, dtype=torch.int64)
    target[:, :2] = 1  # rows 0-1 class 1 (8 px), rows 2-3 class 0 (8 px)
    pred = torch.zeros(1, 4, 4, dtype=torch.int64)
    pred[:, :3] = 1  # rows 0-2 predicted class 1 (12 px), row 3 class 0 (4 px)
    return pred, target


def test_partial_overlap_known_miou() -> None:
    # class 1: intersection 8, union 8 + 12 - 8 = 12 -> 2/3; class 0: intersection 4,
    # union 8 + 4 - 4 = 8 -> 1/2. mIoU = (2/3 + 1/2) / 2 = 7/12; pixel accuracy 12/16.
    pred, target = _half_and_half()
    metric = SegmentationIoU(num_classes=2)
    metric.update(pred, target)
    assert metric.compute() == pytest.approx({"miou": 7 / 12, "pixel_acc": 0.75})


def test_classes_absent_from_both_are_excluded() -> None:
    pred, target = _half_and_half()
    metric = SegmentationIoU(num_classes=21)  # classes 2..20 appear nowhere: not counted as 0 or 1
    metric.update(pred, target)
    assert metric.compute()["miou"] == pytest.approx(7 / 12)


def test_logits_are_argmaxed() -> None:
    pred, target = _half_and_half()
    logits = torch.nn.functional.one_hot(pred, 2).permute(0, 3, 1, 2).float() * 5.0
    metric = SegmentationIoU(num_classes=2)
    metric.update(logits, target)
    assert metric.compute()["miou"] == pytest.approx(7 / 12)


def test_ignore_index_pixels_are_skipped() -> None:
    pred, target = _half_and_half()
    target[:, 2] = 255  # the wrongly predicted row becomes "ignore": what remains is perfect
    metric = SegmentationIoU(num_classes=2)
    metric.update(pred, target)
    assert metric.compute() == {"miou": 1.0, "pixel_acc": 1.0}


def test_accumulates_across_batches() -> None:
    pred, target = _half_and_half()
    metric = SegmentationIoU(num_classes=2)
    metric.update(pred, target)
    metric.update(target.clone(), target)  # a perfect batch: class 1 16/20, class 0 12/16
    assert metric.compute() == pytest.approx({"miou": (16 / 20 + 12 / 16) / 2, "pixel_acc": 28 / 32})


def test_bad_values_rejected() -> None:
    metric = SegmentationIoU(num_classes=2)
    target = torch.zeros(1, 4, 4, dtype=torch.int64)
    target[0, 0, 0] = 7
    with pytest.raises(ValueError, match="target holds class id 7"):
        metric.update(torch.zeros_like(target), target)
    with pytest.raises(ValueError, match="prediction holds class id 3"):
        metric.update(torch.full((1, 4, 4), 3), torch.zeros(1, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="does not match"):
        metric.update(torch.zeros(1, 4, 5, dtype=torch.int64), torch.zeros(1, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="no pixels"):
        metric.update(torch.zeros(1, 2, 2, dtype=torch.int64), torch.full((1, 2, 2), 255))
        metric.compute()
