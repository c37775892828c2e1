"""The multi-task claim, measured: one encoder and one bitstream against one single-task Entropic Student
per task at the same β — total bytes sent per image, total encoder size and device compute, and each
task's metric. Built from records only (the combined ``task: multitask`` records and the students')."""

from __future__ import annotations

from collections.abc import Sequence

from splitbench.bench.records import combined_tasks, default_metric, metric_label
from splitbench.bench.tables import markdown_table


def single_task_record(records: Sequence[dict], combined: dict, task: str) -> dict | None:
    """The latest Entropic Student record of ``task`` matching the multi-task point (data, backbone, variant, β)."""
    matches = [r for r in records if r["method"] == "entropic_student" and r["task"] == task
               and r["dataset"] == combined["dataset"] and r["split"] == combined["split"]
               and r["backbone"] == combined["backbone"] and r["variant"] == combined["variant"]
               and r["rate_param"] == combined["rate_param"]]
    return matches[-1] if matches else None


def comparison_table(combined: Sequence[dict], records: Sequence[dict]) -> str:
    """Markdown: per β, the multi-task pipeline and the sum of the single-task pipelines it replaces."""
    tasks = combined_tasks(combined[0]["task"])
    metrics = [default_metric(t) for t in tasks]
    headers = ["β", "pipeline", "encoders", "bytes/image", "encoder MiB", "device MMACs",
               *(metric_label(m) for m in metrics)]
    rows = []
    for record in sorted(combined, key=lambda r: r["rate_param"].get("beta", 0)):
        beta = str(record["rate_param"].get("beta", ""))
        e = record["encoder"]
        rows.append([beta, "multi-task (one bitstream)", "1", f"{record['data_size']['bytes_mean']:.0f}",
                     f"{e['size_bits'] / 8 / 2**20:.3f}", f"{e['macs'] / 1e6:.1f}",
                     *(_percent(record["metrics"].get(m)) for m in metrics)])
        singles = {t: single_task_record(records, record, t) for t in tasks}
        have = {t: r for t, r in singles.items() if r is not None}
        missing = [t for t in tasks if t not in have]
        label = "single-task students, summed" + (f" (no {', '.join(missing)} record)" if missing else "")
        rows.append([beta, label, str(len(have)),
                     f"{sum(r['data_size']['bytes_mean'] for r in have.values()):.0f}",
                     f"{sum(r['encoder']['size_bits'] for r in have.values()) / 8 / 2**20:.3f}",
                     f"{sum(r['encoder']['macs'] for r in have.values()) / 1e6:.1f}",
                     *(_percent(have[t]["metrics"].get(m)) if t in have else "–" for t, m in zip(tasks, metrics,
                                                                                                 strict=True))])
    return markdown_table(headers, rows, [False, False, True, True, True, True, True, True, True])


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"
