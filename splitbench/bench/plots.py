"""Paper-ready figures of one (task, dataset, split): rate–accuracy, ExR-D trade-off, three-way view.

Figures are built on matplotlib's Agg canvas directly (no pyplot state), so reports can be written
from threads or alongside a user's own interactive session. Each figure is saved as PNG and PDF.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from splitbench.bench.bdrate import pareto_front
from splitbench.bench.records import CurveKey, bytes_mean, encoder_mb, metric_label

STYLE = {
    "font.size": 10,
    "axes.labelsize": 11,
    "axes.titlesize": 11,
    "legend.fontsize": 9,
    "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "pdf.fonttype": 42,  # embed TrueType, as publishers ask
    "ps.fonttype": 42,
    "savefig.dpi": 200,
}
# Disjoint marker sets, so a codec baseline never looks like a learned method.
MARKERS = "oP*X<>8"
CODEC_MARKERS = "s^vDph"
FIGSIZE = (7.2, 4.0)

Curves = dict[CurveKey, list[dict]]


def curve_styles(keys: Sequence[CurveKey], labels: dict[CurveKey, str]) -> dict[CurveKey, tuple[str, str]]:
    """(colour, marker) per curve, one per label, so 'JPEG' looks the same in every figure and task."""
    colors = mpl.colormaps["tab10"].colors
    by_label: dict[str, tuple[str, str]] = {}
    counts = {True: 0, False: 0}
    for key in keys:
        if labels[key] not in by_label:
            pool = CODEC_MARKERS if key.is_codec else MARKERS
            marker = pool[counts[key.is_codec] % len(pool)]
            counts[key.is_codec] += 1
            by_label[labels[key]] = (mpl.colors.to_hex(colors[len(by_label) % len(colors)]), marker)
    return {key: by_label[labels[key]] for key in keys}


def new_figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    paths = [stem.parent / f"{stem.name}.{ext}" for ext in ("png", "pdf")]
    with mpl.rc_context(STYLE):
        for path in paths:
            fig.savefig(path, bbox_inches="tight", pad_inches=0.05)
    return paths


def log_x_axis(ax, zero_at: float | None = None, hide_below: float = 0.0) -> None:
    """Log x with plain 1-2-5 tick labels (papers read '0.5', not '5×10⁻¹'); ``zero_at`` is ticked '0'."""

    def label(x: float, _pos) -> str:
        if zero_at is not None and math.isclose(x, zero_at):
            return "0"
        return "" if x < hide_below else f"{x:g}"

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(label))
    ax.xaxis.set_minor_formatter(NullFormatter())


def legend_outside(ax, handles=None, title: str | None = None):
    """Legend right of the axes, so it never hides a point."""
    kwargs = {"handles": handles} if handles is not None else {}
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, title=title, frameon=False,
                     **kwargs)


def rd_plot(
    curves: Curves,
    metric: str,
    labels: dict[CurveKey, str],
    styles: dict[CurveKey, tuple[str, str]],
    stem: Path,
    *,
    log_x: bool = False,
    title: str | None = None,
) -> list[Path]:
    """Metric (%) vs data size (KB/sample), one line per curve, the Pareto front over all points."""
    with mpl.rc_context(STYLE):
        fig = new_figure()
        ax = fig.add_subplot()
        points = []
        for key, records in curves.items():
            x = [bytes_mean(r) / 1000 for r in records]
            y = [100 * r["metrics"][metric] for r in records]
            color, marker = styles[key]
            ax.plot(x, y, marker=marker, color=color, label=labels[key], lw=1.5, ms=6, zorder=3)
            points += list(zip(x, y, strict=True))
        front = sorted((points[i] for i in pareto_front(points)), key=lambda p: p[0])
        if front:
            fx, fy = zip(*front, strict=True)
            ax.step(fx, fy, where="post", color="0.45", ls="--", lw=1.2, zorder=2)
            ax.scatter(fx, fy, s=110, facecolors="none", edgecolors="0.25", lw=1.0, zorder=4)
        if log_x:
            log_x_axis(ax)
        ax.set_xlabel("Data size [KB/sample]")
        ax.set_ylabel(f"{metric_label(metric)} [%]")
        if title:
            ax.set_title(title)
        handles = ax.get_legend_handles_labels()[0]
        if front:
            handles.append(Line2D([], [], color="0.45", ls="--", lw=1.2, marker="o", ms=10, mfc="none",
                                  mec="0.25", label="Pareto front"))
        legend_outside(ax, handles)
        paths = save_figure(fig, stem)
    return paths


def _size_handles(max_mb: float, has_codec: bool, area) -> list[Line2D]:
    """A few round reference sizes for the marker-area legend, plus the codec (0 MB) marker."""
    def nice(v: float) -> float:  # round down to one significant digit, so no reference exceeds the data
        if v <= 0:
            return 0.0
        scale = 10 ** math.floor(math.log10(v))
        return math.floor(v / scale) * scale

    refs = sorted({nice(max_mb * f) for f in (0.1, 0.3, 1.0)} - {0.0})
    handles = [
        Line2D([], [], ls="", marker="o", color="0.5", alpha=0.6, ms=math.sqrt(area(v)), label=f"{v:g} MB")
        for v in refs
    ]
    if has_codec:
        handles.append(
            Line2D([], [], ls="", marker="o", mfc="none", mec="0.3", ms=math.sqrt(area(0)), label="0 (codec)")
        )
    return handles


def three_way_plot(
    curves: Curves,
    metric: str,
    labels: dict[CurveKey, str],
    styles: dict[CurveKey, tuple[str, str]],
    stem: Path,
    *,
    log_x: bool = False,
    title: str | None = None,
) -> list[Path]:
    """Metric vs data size with marker area ∝ encoder size: all three SC2 metrics in one view.

    Standard codecs (encoder size 0) are drawn hollow at the smallest marker size.
    """
    mbs = [encoder_mb(r) for recs in curves.values() for r in recs]
    max_mb = max(mbs, default=0.0)
    min_area, max_area = 30.0, 420.0

    def area(mb: float) -> float:
        return min_area + (max_area - min_area) * (mb / max_mb if max_mb > 0 else 0.0)

    with mpl.rc_context(STYLE):
        fig = new_figure((7.6, 4.4))
        ax = fig.add_subplot()
        handles = []
        for key, records in curves.items():
            x = np.array([bytes_mean(r) / 1000 for r in records])
            y = np.array([100 * r["metrics"][metric] for r in records])
            sizes = np.array([area(encoder_mb(r)) for r in records])
            color, marker = styles[key]
            ax.plot(x, y, color=color, lw=0.9, alpha=0.6, zorder=2)
            zero = np.array([encoder_mb(r) == 0 for r in records])
            ax.scatter(x[~zero], y[~zero], s=sizes[~zero], color=color, marker=marker, alpha=0.6,
                       edgecolors=color, lw=0.8, zorder=3)
            ax.scatter(x[zero], y[zero], s=sizes[zero], facecolors="none", edgecolors=color, marker=marker,
                       lw=1.2, zorder=3)
            handles.append(Line2D([], [], color=color, marker=marker, ms=6, lw=0.9, label=labels[key],
                                  mfc="none" if zero.all() else color))
        if log_x:
            log_x_axis(ax)
        ax.set_xlabel("Data size [KB/sample]")
        ax.set_ylabel(f"{metric_label(metric)} [%]")
        if title:
            ax.set_title(title)
        # Figure legends with "outside" locations are laid out by constrained layout, so neither is cut.
        legend = dict(frameon=False, alignment="left")
        fig.legend(handles=handles, loc="outside right upper", title="Method", **legend)
        sizes = _size_handles(max_mb, any(mb == 0 for mb in mbs), area)
        fig.legend(handles=sizes, loc="outside right lower", title="Encoder size", labelspacing=1.0, **legend)
        paths = save_figure(fig, stem)
    return paths


def encoder_tradeoff_plot(
    curves: Curves,
    metric: str,
    labels: dict[CurveKey, str],
    styles: dict[CurveKey, tuple[str, str]],
    stem: Path,
    *,
    title: str | None = None,
) -> list[Path]:
    """ExR-D: metric vs (data size × encoder size), log x.

    A product of 0 (standard codecs: no learned encoder) has no place on a log axis, so those points
    sit on a floor one decade below the smallest positive product, ticked "0" and set off by a line.
    """
    products = {
        id(r): bytes_mean(r) / 1000 * encoder_mb(r) for recs in curves.values() for r in recs
    }
    positive = [p for p in products.values() if p > 0]
    floor = 10 ** (math.floor(math.log10(min(positive))) - 1) if positive else 1.0
    has_zero = any(p <= 0 for p in products.values())

    with mpl.rc_context(STYLE):
        fig = new_figure()
        ax = fig.add_subplot()
        zero_curves = [k for k, recs in curves.items() if any(products[id(r)] <= 0 for r in recs)]
        for key, records in curves.items():
            color, marker = styles[key]
            xy = [(products[id(r)], 100 * r["metrics"][metric]) for r in records]
            pos = sorted(p for p in xy if p[0] > 0)
            if pos:
                ax.plot(*zip(*pos, strict=True), marker=marker, color=color, label=labels[key], lw=1.5, ms=6,
                        zorder=3)
            zero = [y for x, y in xy if x <= 0]
            if zero:  # side by side around the floor, so codec columns do not hide each other
                j = zero_curves.index(key) - (len(zero_curves) - 1) / 2
                ax.plot([floor * 10 ** (0.12 * j)] * len(zero), zero, ls="", marker=marker, color=color,
                        ms=6, zorder=3, label=None if pos else labels[key])
        log_x_axis(ax, zero_at=floor if has_zero else None, hide_below=floor * 10**0.5 if has_zero else 0.0)
        if has_zero:
            ax.axvline(floor * 10**0.5, color="0.5", ls=":", lw=1)
            ax.set_xlim(left=floor / 10**0.4, right=None if positive else floor * 10**1.4)
            ax.text(floor * 10**0.55, 0.02, "← encoder size 0\n    (standard codecs)",
                    transform=ax.get_xaxis_transform(), fontsize=8, color="0.35", va="bottom")
        ax.set_xlabel("Data size × encoder size [KB · MB]")
        ax.set_ylabel(f"{metric_label(metric)} [%]")
        if title:
            ax.set_title(title)
        legend_outside(ax)
        paths = save_figure(fig, stem)
    return paths
