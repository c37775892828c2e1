"""Per-point and BD-rate tables as Markdown, CSV and LaTeX (booktabs).

CSV keeps raw values (metrics as fractions, sizes in bytes/bits) so it parses back to the records'
numbers; Markdown and LaTeX show the same points rounded for reading (metrics in %).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from splitbench.bench.bdrate import LOW_OVERLAP, BDResult
from splitbench.bench.records import (
    CurveKey,
    available_metrics,
    encoder_mb,
    format_rate_param,
    metric_label,
)


@dataclass(frozen=True)
class Column:
    """A table column: header text, how to get the value from a record, how to show it."""

    header: str
    get: Callable[[dict], Any]
    fmt: str = "{}"
    numeric: bool = True

    def text(self, record: dict) -> str:
        value = self.get(record)
        return "–" if value is None else self.fmt.format(value)


def _get(*path: str) -> Callable[[dict], Any]:
    def getter(record: dict) -> Any:
        value: Any = record
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value

    return getter


def _pct(metric: str) -> Callable[[dict], float | None]:
    def getter(record: dict) -> float | None:
        value = record["metrics"].get(metric)
        return None if value is None else 100 * value

    return getter


def display_columns(records: Sequence[dict]) -> list[Column]:
    """Columns of the readable (Markdown/LaTeX) table of one task: metrics in %, sizes rounded."""
    metrics = available_metrics(records)
    return [
        Column("Method", _get("method"), numeric=False),
        Column("Variant", _get("variant"), numeric=False),
        Column("Backbone", _get("backbone"), numeric=False),
        Column("Rate param", lambda r: format_rate_param(r["rate_param"]), numeric=False),
        *(Column(f"{metric_label(m)} [%]", _pct(m), "{:.2f}") for m in metrics),
        Column("Bytes mean", _get("data_size", "bytes_mean"), "{:.1f}"),
        Column("Bytes p95", _get("data_size", "bytes_p95"), "{:.1f}"),
        Column("Encoder [MB]", encoder_mb, "{:.3f}"),
        Column("Encoder params", _get("encoder", "params"), "{:,}"),
        Column("Encode [ms]", _get("timing", "encode_ms_mean"), "{:.2f}"),
        Column("Decode [ms]", _get("timing", "decode_ms_mean"), "{:.2f}"),
    ]


CSV_FIELDS = [
    ("task", _get("task")),
    ("dataset", _get("dataset")),
    ("split", _get("split")),
    ("method", _get("method")),
    ("variant", _get("variant")),
    ("backbone", _get("backbone")),
    ("rate_param", lambda r: format_rate_param(r["rate_param"], empty="")),
    ("num_samples", _get("num_samples")),
    ("bytes_mean", _get("data_size", "bytes_mean")),
    ("bytes_std", _get("data_size", "bytes_std")),
    ("bytes_p50", _get("data_size", "bytes_p50")),
    ("bytes_p95", _get("data_size", "bytes_p95")),
    ("estimate_bytes_mean", _get("data_size", "estimate_bytes_mean")),
    ("encoder_params", _get("encoder", "params")),
    ("encoder_size_bits", _get("encoder", "size_bits")),
    ("encoder_mb", encoder_mb),
    ("encoder_macs", _get("encoder", "macs")),
    ("encode_ms_mean", _get("timing", "encode_ms_mean")),
    ("decode_ms_mean", _get("timing", "decode_ms_mean")),
    ("config_hash", _get("config_hash")),
]


def points_csv(records: Sequence[dict]) -> str:
    """All successful points, one row each; metric columns are the union (blank where absent)."""
    metrics = available_metrics(records)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([name for name, _ in CSV_FIELDS[:7]] + metrics + [name for name, _ in CSV_FIELDS[7:]])
    for r in records:
        values = [get(r) for _, get in CSV_FIELDS[:7]]
        values += [r["metrics"].get(m) for m in metrics] + [get(r) for _, get in CSV_FIELDS[7:]]
        writer.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in values])
    return out.getvalue()


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    align = ["---:" if n else ":---" for n in numeric]
    lines = ["| " + " | ".join(map(_md_escape, headers)) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(map(_md_escape, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_LATEX_UNICODE = {"·": r"$\cdot$", "–": "--", "≥": r"$\geq$", "†": r"$^\dagger$", "−": "$-$"}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials (underscores included) and map the few non-ASCII glyphs we emit."""
    out = "".join(_LATEX_SPECIAL.get(c, c) for c in text)
    for glyph, tex in _LATEX_UNICODE.items():
        out = out.replace(glyph, tex)
    return out


def latex_table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``); cells are escaped here."""
    spec = "".join("r" if n else "l" for n in numeric)
    lines = [
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(latex_escape(h) for h in headers) + r" \\",
        "\\midrule",
        *(" & ".join(latex_escape(c) for c in row) + r" \\" for row in rows),
        "\\bottomrule",
        "\\end{tabular}",
    ]
    return "\n".join(lines) + "\n"


def points_table(records: Sequence[dict], fmt: str) -> str:
    """One row per point of one task (pass successful records only), as ``fmt`` 'markdown' or 'latex'."""
    columns = display_columns(records)
    rows = [[c.text(r) for c in columns] for r in records]
    render = markdown_table if fmt == "markdown" else latex_table
    return render([c.header for c in columns], rows, [c.numeric for c in columns])


def _fmt_signed(value: float | None, note: str, unit: str) -> str:
    return note if value is None else f"{value:+.2f}{unit}"


def bd_rows(results: Sequence[BDResult], labels: dict[CurveKey, str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the BD table; low-overlap values carry a dagger (see :data:`LOW_OVERLAP`)."""
    headers = ["Curve", "Anchor", "Points used", "BD-rate [%]", "BD-metric [pp]"]
    rows = []
    for res in results:
        anchor = "–" if res.anchor is None else labels[res.anchor]
        rate = _fmt_signed(res.rate, res.rate_note, "")
        if res.rate is not None and res.rate_overlap < LOW_OVERLAP:
            rate += " †"
        value = _fmt_signed(res.metric, res.metric_note, "")
        if res.metric is not None and res.metric_overlap < LOW_OVERLAP:
            value += " †"
        rows.append([labels[res.key], anchor, f"{res.points_kept}/{res.points_total}", rate, value])
    return headers, rows


BD_FOOTNOTE = (
    "BD-rate: average change in bytes per sample at equal accuracy (negative = fewer bytes). "
    "BD-metric: average change in the metric, in percentage points, at equal bytes. "
    "PCHIP interpolation over each curve's monotone points (sorted by bytes, keeping each point that "
    "raises the metric); 'Points used' = kept/total. "
    f"† = the curves overlap on less than {LOW_OVERLAP:.0%} of their joint range."
)
