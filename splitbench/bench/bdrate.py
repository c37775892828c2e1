"""Bjøntegaard deltas of rate–accuracy curves against an anchor curve, and the Pareto front.

BD values come from the ``bjontegaard`` package with PCHIP interpolation, which cannot overshoot
between points (cubic fits can, on the few points a sweep gives). Interpolation needs a curve that
is a function both ways, so each curve is first made monotone by :func:`monotone` — the rule is
stated there, and the table reports how many points each curve kept.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import bjontegaard as bd
import numpy as np

from splitbench.bench.records import CurveKey, RecordError, bytes_mean

NOT_ENOUGH = "not enough overlapping points"
# The package warns below this overlap fraction; we still compute but flag the value.
LOW_OVERLAP = 0.75


def monotone(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points kept for interpolation: the curve's own non-dominated points.

    Rule: sort by rate (ties: best metric first) and keep a point only if its metric is strictly
    higher than every point kept before it. A point that costs more bytes for no gain in accuracy
    is a bad operating point, not part of the curve, so dropping it is also what a user would pick.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    kept: list[int] = []
    for i in order:
        if not kept or points[i][1] > points[kept[-1]][1]:
            kept.append(i)
    return kept


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices (ascending) of the points no other point dominates (fewer/equal bytes, ≥ metric).

    Exact duplicates of a front point are on the front too: neither dominates the other.
    """
    front = {points[i] for i in monotone(points)}
    return [i for i, p in enumerate(points) if p in front]


@dataclass
class BDResult:
    """One row of the BD table; ``rate``/``metric`` are None when not computable, with the reason."""

    key: CurveKey
    anchor: CurveKey | None
    points_kept: int
    points_total: int
    rate: float | None = None  # % change in bytes at equal metric (negative = fewer bytes)
    metric: float | None = None  # change in metric, percentage points, at equal bytes
    rate_note: str = ""
    metric_note: str = ""
    rate_overlap: float = 0.0
    metric_overlap: float = 0.0


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of the joint range that both arrays span (0 when they do not overlap)."""
    total = max(a.max(), b.max()) - min(a.min(), b.min())
    inner = min(a.max(), b.max()) - max(a.min(), b.min())
    return max(inner, 0.0) / total if total > 0 else 0.0


def _curve_arrays(records: Sequence[dict], metric: str) -> tuple[np.ndarray, np.ndarray, int]:
    points = [(bytes_mean(r), float(r["metrics"][metric]) * 100) for r in records]
    kept = monotone(points)
    rate = np.array([points[i][0] for i in kept])
    value = np.array([points[i][1] for i in kept])
    return rate, value, len(kept)


def bd_delta(
    anchor: Sequence[dict], test: Sequence[dict], metric: str, *, min_overlap: float = 0.0
) -> tuple[float | None, float | None, str, str, float, float]:
    """BD-rate (%) and BD-metric (percentage points) of ``test`` vs ``anchor`` on their monotone points.

    A value is None (with note :data:`NOT_ENOUGH`) when either curve keeps fewer than 2 points or the
    curves' ranges overlap on no more than ``min_overlap`` of their joint range — in metric for
    BD-rate, in log-rate for BD-metric. Returns (rate, metric, rate_note, metric_note, overlaps...).
    """
    ra, ma, na = _curve_arrays(anchor, metric)
    rt, mt, nt = _curve_arrays(test, metric)
    if min(na, nt) < 2:
        note = f"{NOT_ENOUGH} (monotone points: anchor {na}, curve {nt}; need ≥ 2)"
        return None, None, note, note, 0.0, 0.0
    results: list[float | None] = []
    notes: list[str] = []
    overlaps = [_overlap(ma, mt), _overlap(np.log10(ra), np.log10(rt))]
    for fn, overlap, axis in ((bd.bd_rate, overlaps[0], "metric"), (bd.bd_psnr, overlaps[1], "rate")):
        if overlap <= min_overlap:
            results.append(None)
            notes.append(f"{NOT_ENOUGH} ({axis} ranges overlap {overlap:.0%})")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # overlap is checked and reported above
            value = float(fn(ra, ma, rt, mt, method="pchip", require_matching_points=False, min_overlap=0))
        results.append(value if math.isfinite(value) else None)
        notes.append("" if math.isfinite(value) else NOT_ENOUGH)
    return results[0], results[1], notes[0], notes[1], overlaps[0], overlaps[1]


def find_anchor(
    curves: Sequence[CurveKey], labels: dict[CurveKey, str], anchor: str | None
) -> list[CurveKey]:
    """Curves matching ``anchor`` (a curve label or ``method:variant``; default JPEG input codec).

    An explicit anchor that matches nothing raises, listing what can be chosen; the default may be
    absent, in which case no BD table is made.
    """
    if anchor is None:
        return [k for k in curves if k.method_variant == "input_codec:jpeg"]
    wanted = anchor.strip().casefold()
    matches = [k for k in curves if labels[k].casefold() == wanted or k.method_variant.casefold() == wanted]
    if not matches:
        choices = sorted({labels[k] for k in curves} | {k.method_variant for k in curves})
        raise RecordError(f"anchor {anchor!r} matches no curve; choose one of: {', '.join(choices)}")
    return matches


def bd_table(
    curves: dict[CurveKey, list[dict]],
    metrics: dict[str, str],
    labels: dict[CurveKey, str],
    anchor: str | Sequence[str] | None = None,
    *,
    min_overlap: float = 0.0,
) -> list[BDResult]:
    """BD of every curve against the anchor of its own (task, dataset, split); with several anchors (e.g.
    ``["jpeg", "webp"]``), against each in turn.

    ``metrics`` maps task → metric. Where a group has several anchor curves (e.g. JPEG with two
    backbones) the one with the curve's backbone is used; otherwise the cell says it is ambiguous.
    """
    names = [anchor] if anchor is None or isinstance(anchor, str) else list(anchor)
    return [row for name in names for row in _bd_rows(curves, metrics, labels, name, min_overlap)]


def _bd_rows(curves: dict[CurveKey, list[dict]], metrics: dict[str, str], labels: dict[CurveKey, str],
             anchor: str | None, min_overlap: float) -> list[BDResult]:
    anchors = find_anchor(list(curves), labels, anchor)
    rows: list[BDResult] = []
    for key, records in curves.items():
        metric = metrics[key.task]
        total = len(records)
        kept = len(monotone([(bytes_mean(r), r["metrics"][metric]) for r in records]))
        same_group = [a for a in anchors if a.group == key.group]
        if len(same_group) > 1:
            same_group = [a for a in same_group if a.backbone == key.backbone] or same_group
        if len(same_group) != 1:
            note = "no anchor for this task" if not same_group else "ambiguous anchor (several curves match)"
            rows.append(BDResult(key, None, kept, total, rate_note=note, metric_note=note))
            continue
        ref = same_group[0]
        rate, value, rate_note, metric_note, r_ov, m_ov = bd_delta(
            curves[ref], records, metric, min_overlap=min_overlap
        )
        rows.append(BDResult(key, ref, kept, total, rate, value, rate_note, metric_note, r_ov, m_ov))
    return rows
