"""Deployment tables and figures from records + profiles + links, in the report's conventions (Markdown, CSV with
raw values, LaTeX booktabs, PNG + PDF): per link, latency p50 and energy per image of every configuration and both
references with the reductions in % against each; latency and energy against uplink bandwidth (0.1–100 Mbit/s,
log axis) with the bandwidth where each configuration overtakes local computing and full offloading; energy
against the arrival rate."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.lines import Line2D

from splitbench.bench.plots import STYLE, legend_outside, log_x_axis, new_figure, save_figure
from splitbench.bench.records import metric_label, resolve_metric
from splitbench.bench.tables import latex_table, markdown_table
from splitbench.deploy.links import DeployLink
from splitbench.deploy.model import LOCAL, OFFLOAD, Estimate, Option, estimate, reduction
from splitbench.deploy.multitask import multitask_section
from splitbench.deploy.options import group_options, task_groups
from splitbench.deploy.profiles import DeviceProfile, ServerProfile

BANDWIDTHS = np.geomspace(0.1, 100, 31)  # Mbit/s, the bandwidth sweeps
RATES = np.geomspace(0.01, 30, 31)  # images/s, the arrival-rate sweep


@dataclass(frozen=True)
class Scenario:
    """What the tables are computed for: the profiles, the arrival rate, the references' choice."""

    device: DeviceProfile
    server: ServerProfile
    rate: float | None = None
    offload: str = "raw"
    local: str | None = None
    metric: str | None = None

    @property
    def rate_text(self) -> str:
        return "one isolated request" if self.rate is None else f"{self.rate:g} images/s"


def _pct(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def _references(ests: Sequence[Estimate]) -> tuple[Estimate, Estimate]:
    by_kind = {e.option.kind: e for e in ests}
    return by_kind[LOCAL], by_kind[OFFLOAD]


HEADERS = ["Configuration", "Accuracy [%]", "Latency p50 [ms]", "+ promotion [ms]", "Transmit [J]",
           "Session [J]", "Device [J]", "Latency vs local [%]", "Latency vs offload [%]", "Energy vs local [%]",
           "Energy vs offload [%]"]
NUMERIC = [False] + [True] * (len(HEADERS) - 1)
NOTE = ("Reductions: how much lower than the reference, in % of it (positive: lower, as papers state it). Session: "
        "the radio's energy per image (transmit + its share of promotion and tail); Device: compute + session. "
        "+ promotion: the delay the radio's promotion adds when a request finds it idle (not in the latency). "
        "‡: images arrive faster than the device or the link serves them.")


def table_rows(ests: Sequence[Estimate]) -> list[list[str]]:
    local, offload = _references(ests)
    rows = []
    for e in ests:
        accuracy = "–" if e.option.metric is None else f"{100 * e.option.metric:.2f}"
        name = e.option.label + (" ‡" if e.saturated else "")
        rows.append([name, accuracy, f"{e.latency_ms:.1f}", f"{e.promotion_ms:.0f}", f"{e.transmit_j:.4f}",
                     f"{e.session_j:.3f}", f"{e.device_j:.3f}",
                     *(_pct(reduction(e.latency_ms, r.latency_ms)) for r in (local, offload)),
                     *(_pct(reduction(e.device_j, r.device_j)) for r in (local, offload))])
    return rows


CSV_FIELDS = ["task", "dataset", "split", "link", "rate", "configuration", "kind", "metric", "latency_p50_ms",
              "device_ms", "uplink_ms", "server_ms", "downlink_ms", "promotion_ms", "compute_j", "transmit_j",
              "session_j", "device_j", "saturated", "times"]


def csv_rows(group: tuple[str, str, str], ests: Sequence[Estimate]) -> list[list]:
    return [[*group, e.link, "" if e.rate is None else e.rate, e.option.label, e.option.kind,
             "" if e.option.metric is None else e.option.metric, e.latency_ms, e.stages_ms["device"],
             e.stages_ms["uplink"], e.stages_ms["server"], e.stages_ms["downlink"], e.promotion_ms, e.compute_j,
             e.transmit_j, e.session_j, e.device_j, e.saturated, e.option.sources] for e in ests]


def crossings(xs: Sequence[float], ys: Sequence[float], ref: Sequence[float]) -> list[float]:
    """The bandwidths at which ``ys`` crosses ``ref`` (log-interpolated between sweep points), in order."""
    out = []
    for i in range(1, len(xs)):
        d0, d1 = ys[i - 1] - ref[i - 1], ys[i] - ref[i]
        if (d0 < 0) != (d1 < 0):
            f = d0 / (d0 - d1) if d0 != d1 else 1.0
            out.append(float(math.exp(math.log(xs[i - 1]) + f * (math.log(xs[i]) - math.log(xs[i - 1])))))
    return out


def better_where(xs: Sequence[float], ys: Sequence[float], ref: Sequence[float]) -> str:
    """Where on the sweep ``ys`` is below ``ref``, as bandwidth ranges: "all", "never", "≥ 4.1", "≤ 2.5",
    "0.3–12" (a split beats local computing on wide links, full offloading on narrow ones)."""
    better = [y < r for y, r in zip(ys, ref, strict=True)]
    if all(better):
        return "all"
    if not any(better):
        return "never"
    edges = iter(crossings(xs, ys, ref))  # one per change of ``better``, in order
    ranges: list[tuple[float | None, float | None]] = []  # (from, to); None: the sweep's end
    lo = None if better[0] else 0.0
    for i in range(1, len(xs)):
        if better[i] != better[i - 1]:
            x = next(edges)
            if better[i]:
                lo = x
            else:
                ranges.append((None if lo == 0.0 else lo, x))
    if better[-1]:
        ranges.append((None if lo == 0.0 else lo, None))

    def one(lo: float | None, hi: float | None) -> str:
        return f"≥ {lo:.3g}" if hi is None else f"≤ {hi:.3g}" if lo is None else f"{lo:.3g}–{hi:.3g}"

    return ", ".join(one(lo, hi) for lo, hi in ranges)


@dataclass(frozen=True)
class Sweep:
    xs: np.ndarray
    latency: dict[str, list[float]]
    energy: dict[str, list[float]]


def bandwidth_sweep(options: Sequence[Option], link: DeployLink, s: Scenario) -> Sweep:
    lat: dict[str, list[float]] = {o.label: [] for o in options}
    en: dict[str, list[float]] = {o.label: [] for o in options}
    for mbps in BANDWIDTHS:
        swept = link.with_uplink(float(mbps))
        for o in options:
            e = estimate(o, swept, s.rate, s.device.power)
            lat[o.label].append(e.latency_ms)
            en[o.label].append(e.device_j)
    return Sweep(BANDWIDTHS, lat, en)


def rate_sweep(options: Sequence[Option], link: DeployLink, s: Scenario) -> dict[str, list[float]]:
    return {o.label: [estimate(o, link, float(r), s.device.power).device_j for r in RATES] for o in options}


def _styles(options: Sequence[Option]) -> dict[str, dict]:
    colors = mpl.colormaps["tab20"].colors
    out = {}
    for i, o in enumerate(options):
        ref = o.kind in (LOCAL, OFFLOAD)
        out[o.label] = {"color": "k" if o.kind == LOCAL else "0.45" if ref else colors[i % len(colors)],
                        "ls": "--" if ref else "-", "lw": 2.0 if ref else 1.3}
    return out


def _sweep_plot(xs, curves: dict[str, list[float]], options: Sequence[Option], stem: Path, xlabel: str,
                ylabel: str, title: str, marks: bool) -> list[Path]:
    styles = _styles(options)
    local = next(o.label for o in options if o.kind == LOCAL)
    offload = next(o.label for o in options if o.kind == OFFLOAD)
    with mpl.rc_context(STYLE):
        fig = new_figure((8.4, 4.6))
        ax = fig.add_subplot()
        for o in options:
            ax.plot(xs, curves[o.label], label=o.label, **styles[o.label])
            if not marks or o.kind in (LOCAL, OFFLOAD):
                continue
            for ref, marker in ((local, "o"), (offload, "s")):
                for x in crossings(xs, curves[o.label], curves[ref]):
                    y = float(np.interp(math.log(x), np.log(xs), curves[o.label]))
                    ax.plot([x], [y], marker=marker, ms=7, mfc="none", mec=styles[o.label]["color"], mew=1.5, ls="")
        log_x_axis(ax)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        handles = ax.get_legend_handles_labels()[0]
        if marks:
            handles += [Line2D([], [], marker="o", ls="", mfc="none", mec="0.2", label="crosses local computing"),
                        Line2D([], [], marker="s", ls="", mfc="none", mec="0.2", label="crosses full offloading")]
        legend_outside(ax, handles)
        return save_figure(fig, stem)


def _crossover_rows(sweep: Sweep, options: Sequence[Option]) -> list[list[str]]:
    local = next(o.label for o in options if o.kind == LOCAL)
    offload = next(o.label for o in options if o.kind == OFFLOAD)
    return [[o.label, *(better_where(sweep.xs, curves[o.label], curves[ref])
                        for curves in (sweep.latency, sweep.energy) for ref in (local, offload))]
            for o in options if o.kind not in (LOCAL, OFFLOAD)]


CROSS_HEADERS = ["Configuration", "Latency < local [Mbit/s]", "Latency < offload [Mbit/s]",
                 "Energy < local [Mbit/s]", "Energy < offload [Mbit/s]"]


def _suffix(group: tuple[str, str, str], first: bool) -> str:
    return "" if first else "_" + "-".join(group)


def write_deploy(records: Sequence[dict], out_dir: Path, scenario: Scenario, links: Sequence[DeployLink],
                 figures: bool = True) -> tuple[dict[str, Path], list[str]]:
    """Write deploy.md/.csv/.tex and the figures into ``out_dir``; returns the files and the Markdown section
    (for ``report.md``)."""
    s = scenario
    plans = []  # everything that can fail on input, before anything is written
    for group, recs in task_groups(records).items():
        metric = resolve_metric(recs, s.metric, group[0])
        plans.append((group, metric, group_options(recs, metric, s.device, s.server, s.offload, s.local)))
    md = [f"Device profile **{s.device.name}** ({s.device.source}); power: compute {s.device.power.compute_w:g} W, "
          f"idle {s.device.power.idle_w:g} W ({s.device.power.source}). Server profile **{s.server.name}** "
          f"({s.server.spec.source}). Arrival rate: {s.rate_text}.", ""]
    for link in links:
        radio = link.radio
        md.append(f"- Link `{link.label}`: " + ", ".join(f"{k} {v}" for k, v in link.spec.model_dump(
            exclude={"name"}, exclude_none=True).items()) + (f"; radio: {radio.description} — source: {radio.source}"
                                                              if radio else "; no radio model (no radio energy)"))
        if radio and radio.link:
            md.append(f"  (link defaults: {radio.link.source})")
    md.append("")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tex = ["% splitbench deployment tables; needs \\usepackage{booktabs}", ""]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    paths: dict[str, Path] = {}
    for index, (group, metric, options) in enumerate(plans):
        md += [f"### {group[0]} · {group[1]}/{group[2]} — accuracy: {metric_label(metric)}", ""]
        sources = sorted({o.sources for o in options})
        md += ["Times: " + " | ".join(sources), ""]
        for link in links:
            ests = [estimate(o, link, s.rate, s.device.power) for o in options]
            rows = table_rows(ests)
            md += [f"#### `{link.label}`, {s.rate_text}", "", markdown_table(HEADERS, rows, NUMERIC)]
            tex += [f"% {group[0]} {group[1]}/{group[2]}, {link.label}, {s.rate_text}",
                    latex_table(HEADERS, rows, NUMERIC)]
            writer.writerows(csv_rows(group, ests))
            if not figures:
                continue
            stem = f"{link.stem}{_suffix(group, index == 0)}"
            sweep = bandwidth_sweep(options, link, s)
            written = _sweep_plot(sweep.xs, sweep.latency, options, out_dir / f"latency_bandwidth_{stem}",
                                  "Uplink bandwidth [Mbit/s]", "Latency p50 [ms]", f"{link.label}: latency", True)
            written += _sweep_plot(sweep.xs, sweep.energy, options, out_dir / f"energy_bandwidth_{stem}",
                                   "Uplink bandwidth [Mbit/s]", "Device energy per image [J]",
                                   f"{link.label}: device energy, {s.rate_text}", True)
            written += _sweep_plot(RATES, rate_sweep(options, link, s), options, out_dir / f"energy_rate_{stem}",
                                   "Arrival rate [images/s]", "Device energy per image [J]",
                                   f"{link.label}: device energy vs arrival rate", False)
            paths.update((p.name, p) for p in written)
            md += ["Uplink bandwidths at which each configuration beats the references (downlink, RTT, loss "
                   "as above):", "", markdown_table(CROSS_HEADERS, _crossover_rows(sweep, options),
                                                    [False] + [True] * 4)]
            md += [f"![latency vs bandwidth](latency_bandwidth_{stem}.png) "
                   f"![energy vs bandwidth](energy_bandwidth_{stem}.png) "
                   f"![energy vs arrival rate](energy_rate_{stem}.png)", ""]
    md += [NOTE, ""]
    mt_md, mt_tex = multitask_section(records, s.device, s.server, links, s.rate)
    if mt_md:
        md += ["### The multi-task scenario: every task per image", "", *mt_md]
        tex += mt_tex
    for name, text in {"deploy.csv": out.getvalue(), "deploy.tex": "\n".join(tex),
                       "deploy.md": "\n".join(["# Deployment: latency and device energy per image", "", *md])}.items():
        (out_dir / name).write_text(text, encoding="utf-8")
        paths[name] = out_dir / name
    return paths, md
