"""One call from result records to a report folder: tables, BD-rate, figures and a report.md tying them up.

Everything is grouped by (task, dataset, split), the unit within which points are comparable. The
first group (classification first) gets the plain file names (``rd.png``); the others get a suffix
(``rd_detection.png``, or ``rd_detection_coco_val.png`` when a task has several datasets/splits).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from splitbench.bench import plots
from splitbench.bench.bdrate import bd_table
from splitbench.bench.multitask import comparison_table
from splitbench.bench.records import (
    RecordError,
    available_metrics,
    combined_tasks,
    curve_labels,
    format_rate_param,
    group_by_task,
    group_curves,
    is_ok,
    latest_records,
    metric_label,
    resolve_metric,
    validate_record,
)
from splitbench.bench.tables import (
    BD_FOOTNOTE,
    bd_rows,
    latex_table,
    markdown_table,
    points_csv,
    points_table,
)

Group = tuple[str, str, str]


def _suffixes(groups: Sequence[Group]) -> dict[Group, str]:
    """File-name suffix per group: '' for the first, '_task' or '_task_dataset_split' after it."""
    tasks = [g[0] for g in groups]
    out = {}
    for i, group in enumerate(groups):
        parts = [] if i == 0 else group[:1] if tasks.count(group[0]) == 1 else group
        out[group] = "".join("_" + re.sub(r"[^A-Za-z0-9.-]+", "-", p) for p in parts)
    return out


def _heading(group: Group) -> str:
    task, dataset, split = group
    return f"{task} · {dataset}/{split}"


def _task_metrics(ok: Sequence[dict], metric: str | None, tasks: Sequence[str]) -> dict[str, str]:
    """Task → metric: ``metric`` where that task recorded it, else the task default (which must exist)."""
    if metric is not None and metric not in available_metrics(ok):
        have = ", ".join(available_metrics(ok))
        raise RecordError(f"metric {metric!r} not in the records; available: {have}")
    out = {}
    for task in tasks:
        recorded = metric is not None and metric in available_metrics(r for r in ok if r["task"] == task)
        out[task] = resolve_metric(ok, metric if recorded else None, task)
    return out


FIGURES = {
    "rd": "Rate–accuracy (dashed: Pareto front over all points)",
    "encoder_tradeoff": "ExR-D trade-off: accuracy vs data size × encoder size",
    "three_way": "Accuracy vs data size; marker area = encoder size",
}
BD_NUMERIC = [False, False, True, True, True]


MULTITASK_NOTE = ("Per β: the multi-task model (one encoder, one bitstream per image, every task decoded from it) "
                  "against one Entropic Student per task at the same β, whose bytes, encoder sizes and device "
                  "compute add up when a device needs all three answers.")


def write_report(
    records: list[dict],
    out_dir: Path,
    *,
    metric: str | None = None,
    anchor: str | Sequence[str] | None = None,
    log_x: bool = False,
    title: str | None = None,
    deploy: tuple | None = None,
) -> dict[str, Path]:
    """Write the report of ``records`` into ``out_dir``; returns file name → path of every file written.

    ``metric`` overrides the task default (top1 / map / miou) for the tasks whose records have it;
    ``anchor`` is a curve label or ``method:variant``, or a list of them for one BD table against each
    (default: the JPEG input codec, if present).
    Re-runs of a point are collapsed to the latest successful record (see ``latest_records``).
    ``deploy``: a (:class:`~splitbench.deploy.report.Scenario`, links) pair adds the deployment tables and figures.
    """
    if not records:
        raise ValueError("no records to report")
    records = [validate_record(r, f"record #{i}") for i, r in enumerate(records)]
    records, superseded = latest_records(records)
    ok = [r for r in records if is_ok(r)]
    failed = [r for r in records if not is_ok(r)]
    # A multi-task point is plotted through its per-task records; its combined record feeds the comparison.
    combined = [r for r in ok if combined_tasks(r["task"])]
    ok = [r for r in ok if not combined_tasks(r["task"])]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    curves = group_curves(ok)
    labels = curve_labels(curves)
    styles = plots.curve_styles(list(curves), labels)
    groups = list(group_by_task(ok))
    metrics = _task_metrics(ok, metric, list(dict.fromkeys(g[0] for g in groups)))
    bd = bd_table(curves, metrics, labels, anchor)
    paths: dict[str, Path] = {}
    deploy_md: list[str] = []
    if deploy is not None:  # first: its input errors (references, metric) stop the report before it is written
        from splitbench.deploy.report import write_deploy

        written, deploy_md = write_deploy(records, out_dir, *deploy)
        paths.update(written)

    md = [f"# {title or 'splitbench report'}", ""]
    md.append(f"{len(ok)} successful point(s) in {len(curves)} curve(s); {len(failed)} failed.")
    if superseded:
        md.append(f"{superseded} older record(s) of re-run points were superseded by the latest one.")
    md.append("")
    tex = ["% splitbench results; needs \\usepackage{booktabs}", ""]
    bd_md = ["# BD-rate", "", BD_FOOTNOTE, ""]
    bd_tex = ["% splitbench BD-rate; needs \\usepackage{booktabs}", ""]
    for group, suffix in _suffixes(groups).items():
        m = metrics[group[0]]
        in_group = {k: v for k, v in curves.items() if k.group == group}
        group_records = [r for recs in in_group.values() for r in recs]
        note = f" (`{metric}` not recorded for {group[0]}; default used)" if metric and m != metric else ""
        md += [f"## {_heading(group)}", "", f"Metric: **{metric_label(m)}** (`{m}`){note}.", ""]

        for name, caption in FIGURES.items():
            stem = out_dir / f"{name}{suffix}"
            if name == "encoder_tradeoff":
                written = plots.encoder_tradeoff_plot(in_group, m, labels, styles, stem, title=title)
            else:
                plot = plots.rd_plot if name == "rd" else plots.three_way_plot
                written = plot(in_group, m, labels, styles, stem, log_x=log_x, title=title)
            paths.update((p.name, p) for p in written)
            png, pdf = written
            md += [f"![{caption}]({png.name})", "", f"*{caption}* ([PDF]({pdf.name}))", ""]
        md += ["### Points", "", points_table(group_records, "markdown")]
        tex += [f"% {_heading(group)}", points_table(group_records, "latex")]

        rows = [res for res in bd if res.key.group == group]
        md += ["### BD-rate", ""]
        bd_md += [f"## {_heading(group)} — {metric_label(m)}", ""]
        if any(res.anchor is not None for res in rows):
            headers, cells = bd_rows(rows, labels)
            md += [markdown_table(headers, cells, BD_NUMERIC), BD_FOOTNOTE, ""]
            bd_md += [markdown_table(headers, cells, BD_NUMERIC)]
            bd_tex += [f"% {_heading(group)}: {m}", latex_table(headers, cells, BD_NUMERIC)]
        else:
            named = anchor if anchor is None or isinstance(anchor, str) else ", ".join(anchor)
            why = f"anchor {named!r} has no curve here" if named else "no JPEG input-codec curve as anchor"
            md += [f"No BD-rate: {why}.", ""]
            bd_md += [f"No BD-rate: {why}.", ""]
            bd_tex += [f"% {_heading(group)}: no BD-rate ({why})", ""]

    extra = {}
    if combined:
        table = comparison_table(combined, ok)
        md += ["## Multi-task vs single-task pipelines", "", MULTITASK_NOTE, "", table, ""]
        extra["multitask.md"] = "\n".join(["# Multi-task vs single-task pipelines", "", MULTITASK_NOTE, "", table])
    if deploy_md:
        md += ["## Deployment: latency and device energy per image", "", *deploy_md,
               "Tables: [deploy.md](deploy.md), [deploy.csv](deploy.csv), [deploy.tex](deploy.tex).", ""]
    if failed:
        md += ["## Failed points", "", "Not plotted and not in the tables above.", ""]
        cells = [
            [r["task"], r["method"], r["variant"], r["backbone"], format_rate_param(r["rate_param"]),
             (str(r.get("error") or "").strip().splitlines() or ["(no message)"])[0]]
            for r in failed
        ]
        headers = ["Task", "Method", "Variant", "Backbone", "Rate param", "Error"]
        md.append(markdown_table(headers, cells, [False] * len(headers)))
    md += ["Tables: [results.csv](results.csv), [results.tex](results.tex), [bdrate.md](bdrate.md), "
           "[bdrate.tex](bdrate.tex).", ""]

    for name, text in {
        "results.csv": points_csv(ok),
        "results.tex": "\n".join(tex),
        "bdrate.md": "\n".join(bd_md),
        "bdrate.tex": "\n".join(bd_tex),
        "report.md": "\n".join(md),
        **extra,
    }.items():
        (out_dir / name).write_text(text, encoding="utf-8")
        paths[name] = out_dir / name
    return paths
