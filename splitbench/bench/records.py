"""Result records: load them, check them, group them into curves and pick the metric to report.

Reports are built from records only, so every problem with a record (a malformed line, a missing
key, a metric that was never measured) is raised here with the file and line it came from — a
report that silently skips a point would be a wrong report.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitbench.errors import SplitbenchError
from splitbench.tasks import TASKS, get_task


class RecordError(SplitbenchError, ValueError):
    """A result record is unreadable or incomplete; the message names where it came from."""


# Keys every record has, and the extra ones a successful ("ok") record has. Optional fields
# (percentiles, estimate, timing, macs) are shown as blanks when absent rather than rejected.
REQUIRED_KEYS = ("method", "variant", "task", "dataset", "split", "backbone", "rate_param", "status")
REQUIRED_OK_KEYS = {"metrics": (), "data_size": ("bytes_mean",), "encoder": ("params", "size_bits")}
STATUSES = ("ok", "failed")

TASK_ORDER = tuple(TASKS)  # the registry's order: classification first


def default_metric(task: str) -> str | None:
    """The metric a task is reported by (None: a task that combines several, or one this release lacks)."""
    return get_task(task).default_metric if task in TASKS else None


def combined_tasks(task: str) -> tuple[str, ...]:
    """The tasks a combined record (one bitstream, several tasks) was evaluated on; () for a plain task."""
    return get_task(task).combines if task in TASKS else ()

METHOD_NAMES = {
    "entropic_student": "Entropic Student",
    "end_to_end": "End-to-End",
    "cr_bq": "CR + BQ",
    "eb_finetune": "EB Fine-tune",
    "neural_codec": "Neural input codec",
    "feature_codec": "Feature codec",
    "naive_split": "Naive split",
    "multitask": "Multi-task",
    "multitask_head": "Multi-task head",
    "classifier": "Unsplit model",
}
# Methods whose curve is named by the codec alone ("JPEG"), since the backbone is not the method.
CODEC_METHODS = ("input_codec",)
VARIANT_NAMES = {
    "jpeg": "JPEG",
    "webp": "WebP",
    "avif": "AVIF",
    "jxl": "JPEG XL",
    "jpegxl": "JPEG XL",
    "bpg": "BPG",
    "hevc": "HEVC",
    "vvc": "VVC",
    "png": "PNG",
    "raw": "Raw pixels",
}
METRIC_NAMES = {
    "top1": "Top-1 accuracy",
    "top5": "Top-5 accuracy",
    "map": "mAP@[.5:.95]",
    "map50": "mAP@0.5",
    "miou": "mIoU",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_record(record: Any, where: str) -> dict:
    """Raise a RecordError (naming ``where``) unless ``record`` has the keys a report needs."""
    if not isinstance(record, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise RecordError(f"{where}: missing required key(s) {', '.join(missing)}")
    if record["status"] not in STATUSES:
        raise RecordError(f"{where}: status {record['status']!r} is not one of {', '.join(STATUSES)}")
    if not isinstance(record["rate_param"], dict):
        raise RecordError(f"{where}: rate_param must be an object, got {record['rate_param']!r}")
    if record["status"] != "ok":
        return record
    for key, sub_keys in REQUIRED_OK_KEYS.items():
        if not isinstance(record.get(key), dict):
            raise RecordError(f"{where}: status 'ok' record is missing required key {key!r} (an object)")
        missing = [f"{key}.{s}" for s in sub_keys if not _is_number(record[key].get(s))]
        if missing:
            raise RecordError(f"{where}: missing or non-numeric required key(s) {', '.join(missing)}")
    bad = [name for name, value in record["metrics"].items() if not _is_number(value)]
    if bad or not record["metrics"]:
        raise RecordError(f"{where}: metrics must be a non-empty object of numbers (bad: {bad or 'empty'})")
    if not record["data_size"]["bytes_mean"] > 0:
        got = record["data_size"]["bytes_mean"]
        raise RecordError(f"{where}: data_size.bytes_mean must be > 0, got {got}")
    return record


def load_records(paths: Sequence[str | Path]) -> list[dict]:
    """Read and merge JSON-lines result files; any bad line raises with its file and line number."""
    records: list[dict] = []
    for path in map(Path, paths):
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RecordError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from None
                records.append(validate_record(record, where))
    return records


def is_ok(record: dict) -> bool:
    return record["status"] == "ok"


@dataclass(frozen=True, order=True)
class CurveKey:
    """What makes records one curve; its points differ only by rate_param."""

    method: str
    variant: str
    backbone: str
    task: str
    dataset: str
    split: str

    @classmethod
    def of(cls, record: dict) -> CurveKey:
        return cls(*(str(record[k]) for k in ("method", "variant", "backbone", "task", "dataset", "split")))

    @property
    def method_variant(self) -> str:
        return f"{self.method}:{self.variant}"

    @property
    def group(self) -> tuple[str, str, str]:
        """(task, dataset, split): curves are only compared within one group."""
        return (self.task, self.dataset, self.split)

    @property
    def is_codec(self) -> bool:
        return self.method in CODEC_METHODS


def base_label(key: CurveKey) -> str:
    """Readable name: 'JPEG' for codecs, 'Entropic Student (fp) · resnet18' otherwise."""
    variant = VARIANT_NAMES.get(key.variant, key.variant)
    if key.is_codec:
        return variant or key.method
    method = METHOD_NAMES.get(key.method, key.method)
    return f"{method} ({variant}) · {key.backbone}" if variant else f"{method} · {key.backbone}"


def curve_labels(keys: Iterable[CurveKey]) -> dict[CurveKey, str]:
    """Labels unique within each (task, dataset, split), the scope of one figure or BD table.

    A codec run with two backbones in one group becomes 'JPEG · resnet18' and 'JPEG · resnet50'.
    """
    labels = {k: base_label(k) for k in keys}
    seen: dict[tuple, list[CurveKey]] = {}
    for k in labels:
        seen.setdefault((k.group, labels[k]), []).append(k)
    for (_, label), same in seen.items():
        if len(same) > 1:
            for k in same:
                labels[k] = f"{label} · {k.backbone}"
    return labels


def task_rank(task: str) -> tuple[int, str]:
    return (TASK_ORDER.index(task) if task in TASK_ORDER else len(TASK_ORDER), task)


def curve_sort_key(key: CurveKey) -> tuple:
    """Tasks in the usual order, codec baselines first within a task, then by name."""
    return (task_rank(key.task), key.dataset, key.split, not key.is_codec, key.method, key.variant,
            key.backbone)


def bytes_mean(record: dict) -> float:
    return float(record["data_size"]["bytes_mean"])


def group_curves(records: Iterable[dict]) -> dict[CurveKey, list[dict]]:
    """Successful records grouped into curves (in a stable order), each sorted by data size."""
    curves: dict[CurveKey, list[dict]] = {}
    for record in records:
        if is_ok(record):
            curves.setdefault(CurveKey.of(record), []).append(record)
    return {k: sorted(curves[k], key=bytes_mean) for k in sorted(curves, key=curve_sort_key)}


def group_by_task(records: Iterable[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """Records per (task, dataset, split): the unit one plot or BD table compares within."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for record in records:
        groups.setdefault((record["task"], record["dataset"], record["split"]), []).append(record)
    return {k: groups[k] for k in sorted(groups, key=lambda g: (task_rank(g[0]), g[1], g[2]))}


def format_rate_param(rate_param: dict, empty: str = "–") -> str:
    """'beta=0.32' / 'quality=75'; methods without a rate knob show ``empty``."""
    return ", ".join(f"{k}={v}" for k, v in rate_param.items()) or empty


def latest_records(records: Sequence[dict]) -> tuple[list[dict], int]:
    """One record per (curve, rate_param), since results.jsonl is append-only and points get re-run.

    The latest successful record wins (by ``created``, then file order); a failure is kept only when
    the point never succeeded. Returns the kept records (in input order) and how many were superseded.
    """
    best: dict[tuple, int] = {}
    for i, record in enumerate(records):
        point = (CurveKey.of(record), json.dumps(record["rate_param"], sort_keys=True))
        j = best.get(point)
        if j is None:
            best[point] = i
            continue
        rank_new = (is_ok(record), str(record.get("created", "")), i)
        rank_old = (is_ok(records[j]), str(records[j].get("created", "")), j)
        best[point] = i if rank_new > rank_old else j
    kept = sorted(best.values())
    return [records[i] for i in kept], len(records) - len(kept)


def available_metrics(records: Iterable[dict]) -> list[str]:
    return sorted({name for r in records if is_ok(r) for name in r["metrics"]})


def resolve_metric(records: Sequence[dict], metric: str | None, task: str) -> str:
    """The metric to report for ``task``: ``metric`` if given, else the task's default.

    Raises if it is absent from the task's successful records, listing the metrics that exist.
    """
    ok = [r for r in records if is_ok(r) and r["task"] == task]
    have = available_metrics(ok)
    if metric is None:
        metric = default_metric(task)
        if metric is None:
            raise RecordError(f"no default metric for task {task!r}; pass metric= one of: {', '.join(have)}")
    if metric not in have:
        raise RecordError(f"metric {metric!r} not in the {task} records; available: {', '.join(have)}")
    lacking = [r for r in ok if metric not in r["metrics"]]
    if lacking:
        first = lacking[0]
        raise RecordError(
            f"metric {metric!r} is missing from {len(lacking)} {task} record(s), e.g. "
            f"{first['method']}:{first['variant']} {format_rate_param(first['rate_param'])}; "
            f"available: {', '.join(have)}"
        )
    return metric


def metric_label(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def headline(record: dict) -> str:
    """One line of a record's quality and size: each task's default metric (every task of a combined record)."""
    tasks = combined_tasks(record["task"]) or (record["task"],)
    metrics = [m for m in map(default_metric, tasks) if m is not None and m in record.get("metrics", {})]
    quality = ", ".join(f"{metric_label(m)} {100 * record['metrics'][m]:.2f}%" for m in metrics) or "no metric"
    return f"{quality} at {record['data_size']['bytes_mean']:.0f} B/sample"


def encoder_mb(record: dict) -> float:
    """Encoder size in MB (10^6 bytes) from the recorded bits."""
    return float(record["encoder"]["size_bits"]) / 8 / 1e6
