"""The multi-task scenario: a device that needs every task's answer for each image, served three ways —

* the **multi-task model**: one encoder run, one upload, every head answers from that one bitstream;
* **single-task students** (one Entropic Student per task at the same β): three encoder runs, three uploads,
  one after another on the device's one encoder and the one FIFO link;
* **local models**: each task's unsplit model on the device, one after another, no network.

Built from records only (the combined ``task: multitask`` record, the students', the unsplit models'), through the
same latency and energy model as every other configuration.
"""

from __future__ import annotations

from collections.abc import Sequence

from splitbench.bench.multitask import single_task_record
from splitbench.bench.records import combined_tasks, default_metric, is_ok, latest_records, metric_label
from splitbench.bench.tables import latex_table, markdown_table
from splitbench.deploy.links import DeployLink
from splitbench.deploy.model import LOCAL, SPLIT, Estimate, Option, estimate, reduction, request
from splitbench.deploy.options import UNSPLIT
from splitbench.deploy.profiles import DeviceProfile, ServerProfile


def _unsplit(records: Sequence[dict], combined: dict, task: str) -> dict | None:
    matches = [r for r in records if r["method"] == UNSPLIT and r["task"] == task
               and r["dataset"] == combined["dataset"] and r["split"] == combined["split"]]
    return max(matches, key=lambda r: r["metrics"].get(default_metric(task) or "", 0.0), default=None)


def scenario_options(combined: dict, records: Sequence[dict], device: DeviceProfile,
                     server: ServerProfile) -> tuple[list[Option], list[str]]:
    """The three ways to answer every task of ``combined`` (those whose records exist), and what is missing."""
    tasks = combined_tasks(combined["task"])
    missing = []
    req, source = request(combined, device, server)
    options = [Option("multi-task (1 encoder, 1 upload)", SPLIT, None, (req,), sources=source, record=combined)]
    singles = {t: single_task_record(records, combined, t) for t in tasks}
    if all(singles.values()):
        reqs = [request(r, device, server) for r in singles.values()]
        options.append(Option(f"single-task students ({len(tasks)} encoders, {len(tasks)} uploads)", SPLIT, None,
                              tuple(q for q, _ in reqs), sources=" | ".join(s for _, s in reqs)))
    else:
        missing.append("single-task students of " + ", ".join(t for t, r in singles.items() if r is None))
    locals_ = {t: _unsplit(records, combined, t) for t in tasks}
    if all(locals_.values()):
        times = [device.local_model_ms(r) for r in locals_.values()]
        options.append(Option(f"local models ({len(tasks)} unsplit models on the device)", LOCAL, None,
                              local_ms=sum(ms for ms, _ in times), sources=" | ".join(s for _, s in times)))
    else:
        missing.append("unsplit models of " + ", ".join(t for t, r in locals_.items() if r is None))
    return options, missing


HEADERS = ["β", "Pipeline", "Uploads", "Bytes/image", "Latency p50 [ms]", "Device [J]", "Latency vs multi-task [%]",
           "Energy vs multi-task [%]"]


def multitask_section(records: Sequence[dict], device: DeviceProfile, server: ServerProfile,
                      links: Sequence[DeployLink], rate: float | None) -> tuple[list[str], list[str]]:
    """Markdown and LaTeX of the scenario per link; reductions are the multi-task model's against each other
    pipeline (positive: the multi-task model is lower)."""
    latest = [r for r in latest_records(list(records))[0] if is_ok(r)]
    combined = sorted((r for r in latest if combined_tasks(r["task"])), key=lambda r: r["rate_param"].get("beta", 0))
    if not combined:
        return [], []
    md, tex = [], []
    tasks = combined_tasks(combined[0]["task"])
    md += [f"Every image needs all of {', '.join(tasks)}. Quality per task of the multi-task model: "
           + "; ".join(f"β={r['rate_param'].get('beta')}: " + ", ".join(
               f"{metric_label(m)} {100 * r['metrics'][m]:.2f}%" for m in map(default_metric, tasks)
               if m in r["metrics"]) for r in combined), ""]
    for link in links:
        rows = []
        for record in combined:
            options, missing = scenario_options(record, latest, device, server)
            ests: list[Estimate] = [estimate(o, link, rate, device.power) for o in options]
            mt = ests[0]
            for e in ests:
                mine = e is mt
                rows.append([str(record["rate_param"].get("beta", "")), e.option.label, str(len(e.option.requests)),
                             f"{sum(q.request_bytes for q in e.option.requests):.0f}", f"{e.latency_ms:.1f}",
                             f"{e.device_j:.3f}", "–" if mine else f"{reduction(mt.latency_ms, e.latency_ms):.1f}",
                             "–" if mine else f"{reduction(mt.device_j, e.device_j):.1f}"])
            if missing:
                md.append(f"β={record['rate_param'].get('beta')}: no records of the {'; '.join(missing)}.")
        numeric = [False, False, True, True, True, True, True, True]
        md += [f"#### `{link.label}`", "", markdown_table(HEADERS, rows, numeric)]
        tex += [f"% multi-task scenario, {link.label}", latex_table(HEADERS, rows, numeric)]
    md += ["Bytes/image: on the wire, HTTP headers included. Reductions: how much lower the multi-task model is than "
           "that pipeline, in % of it.", ""]
    return md, tex
