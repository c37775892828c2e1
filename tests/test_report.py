"""Reports from result records: loading errors, tables, BD-rate, Pareto front and the files written."""

from __future__ import annotations

import copy
import csv
import itertools
import json
import re
from pathlib import Path

import pytest

from splitbench.bench.bdrate import NOT_ENOUGH, bd_delta, bd_table, monotone, pareto_front
from splitbench.bench.records import (
    RecordError,
    curve_labels,
    group_curves,
    is_ok,
    latest_records,
    load_records,
    resolve_metric,
)
from splitbench.bench.report import write_report
from splitbench.bench.tables import bd_rows, latex_escape


def record(method, variant, rate_param, top1, nbytes, *, params=0, task="classification",
           backbone="resnet18"):
    """A realistic ok record; ``params`` > 0 makes it a learned encoder (32-bit weights)."""
    metrics = {"top1": top1, "top5": min(1.0, top1 + 0.15)}
    if task == "detection":
        metrics = {"map": top1 / 2, "map50": top1}
    rec = {
        "method": method, "variant": variant, "task": task, "dataset": "shapes", "split": "val",
        "num_samples": 1000, "backbone": backbone, "rate_param": rate_param, "metrics": metrics,
        "data_size": {"bytes_mean": nbytes, "bytes_std": nbytes / 20, "bytes_p50": nbytes * 0.99,
                      "bytes_p95": nbytes * 1.1},
        "encoder": {"params": params, "size_bits": params * 32, "macs": params * 40},
        "timing": {"encode_ms_mean": 1.25, "decode_ms_mean": 3.5},
        "config_hash": "9f1c2a", "config": {}, "versions": {"splitbench": "0.1.0"},
        "created": "2026-11-22T06:00:00Z", "status": "ok",
    }
    if params:  # only learned methods have an entropy-model estimate
        rec["data_size"]["estimate_bytes_mean"] = nbytes * 0.98
    return rec


JPEG = [record("input_codec", "jpeg", {"quality": q}, a, b)
        for q, a, b in [(10, 0.52, 1480.5), (30, 0.66, 2390.25), (50, 0.72, 3105.0), (75, 0.78, 4620.75)]]
WEBP = [record("input_codec", "webp", {"quality": q}, a, b)
        for q, a, b in [(10, 0.58, 1120.0), (30, 0.69, 1790.5), (50, 0.74, 2410.0), (75, 0.79, 3380.0)]]
STUDENT = [record("entropic_student", "fp", {"beta": beta}, a, b, params=1_234_567)
           for beta, a, b in [(0.08, 0.80, 1380.0), (0.32, 0.76, 812.3), (1.28, 0.68, 455.9)]]
FAILED = {**record("entropic_student", "fp", {"beta": 5.12}, 0.0, 1.0), "status": "failed",
          "error": "CUDA out of memory"}
for key in ("metrics", "data_size", "encoder", "timing"):
    del FAILED[key]
RECORDS = JPEG + WEBP + STUDENT + [FAILED]
OK = JPEG + WEBP + STUDENT


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict[str, Path]:
    return write_report(copy.deepcopy(RECORDS), tmp_path_factory.mktemp("report"), log_x=True)


def _table_after(text: str, heading: str) -> list[str]:
    lines = text[text.index(heading):].splitlines()[2:]
    return list(itertools.takewhile(lambda ln: ln.startswith("|"), lines))


def test_files_written_and_non_empty(report):
    expected = {"report.md", "results.csv", "results.tex", "bdrate.md", "bdrate.tex"}
    expected |= {f"{n}.{e}" for n in ("rd", "encoder_tradeoff", "three_way") for e in ("png", "pdf")}
    assert expected <= set(report)
    for path in report.values():
        assert path.is_file() and path.stat().st_size > 0, path
    assert report["rd.png"].read_bytes()[:4] == b"\x89PNG"
    assert report["rd.pdf"].read_bytes()[:4] == b"%PDF"


def test_markdown_has_one_row_per_ok_point_and_lists_failures(report):
    text = report["report.md"].read_text()
    rows = _table_after(text, "### Points")
    assert len(rows) - 2 == len(OK)  # header + alignment rows
    assert "| 1,234,567 |" in text and "beta=0.32" in text and "quality=75" in text
    failed = text[text.index("## Failed points"):]
    assert "CUDA out of memory" in failed and "beta=5.12" in failed
    assert "beta=5.12" not in text[: text.index("## Failed points")]
    for name in ("rd.png", "encoder_tradeoff.png", "three_way.png", "results.csv"):
        assert f"]({name})" in text


def test_csv_parses_back_to_the_same_numbers(report):
    rows = list(csv.DictReader(report["results.csv"].open()))
    assert len(rows) == len(OK)
    by_point = {(r["method"], r["variant"], r["rate_param"]): r for r in rows}
    for rec in OK:
        param = ", ".join(f"{k}={v}" for k, v in rec["rate_param"].items())
        row = by_point[(rec["method"], rec["variant"], param)]
        assert float(row["top1"]) == rec["metrics"]["top1"]
        assert float(row["top5"]) == rec["metrics"]["top5"]
        assert float(row["bytes_mean"]) == rec["data_size"]["bytes_mean"]
        assert float(row["bytes_p95"]) == rec["data_size"]["bytes_p95"]
        assert int(row["encoder_params"]) == rec["encoder"]["params"]
        assert float(row["encoder_mb"]) == pytest.approx(rec["encoder"]["size_bits"] / 8e6)
        assert float(row["decode_ms_mean"]) == rec["timing"]["decode_ms_mean"]
    assert by_point[("input_codec", "jpeg", "quality=10")]["estimate_bytes_mean"] == ""


def test_latex_is_booktabs_and_escapes_underscores(report):
    for name in ("results.tex", "bdrate.tex"):
        tex = report[name].read_text()
        assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
        body = [ln for ln in tex.splitlines() if not ln.startswith("%")]
        assert not [ln for ln in body if re.search(r"(?<!\\)_", ln)], name
    assert r"entropic\_student" in report["results.tex"].read_text()
    assert latex_escape("a_b & 5% #1") == r"a\_b \& 5\% \#1"


def test_bd_table_in_report_uses_jpeg_anchor(report):
    text = report["bdrate.md"].read_text()
    rows = _table_after(text, "## classification")[2:]
    assert len(rows) == 3  # every curve, the anchor included (a sanity row of zeros)
    assert all("| JPEG |" in row for row in rows)
    assert next(row for row in rows if row.startswith("| JPEG")).endswith("| +0.00 | +0.00 |")
    webp = next(row for row in rows if row.startswith("| WebP"))
    assert re.search(r"\| -\d+\.\d\d", webp)  # WebP needs fewer bytes than JPEG


def test_malformed_line_reports_file_and_line_number(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(JPEG[0]) + "\n\n" + json.dumps(JPEG[1]) + "\n{\"method\": \n")
    with pytest.raises(RecordError, match=rf"{re.escape(str(path))}:4: malformed JSON"):
        load_records([path])


def test_load_merges_files_and_missing_key_names_line(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in JPEG))
    b.write_text("".join(json.dumps(r) + "\n" for r in [*STUDENT, FAILED]))
    assert len(load_records([a, str(b)])) == len(JPEG) + len(STUDENT) + 1
    broken = {k: v for k, v in WEBP[0].items() if k != "backbone"}
    bad = copy.deepcopy(WEBP[1])
    del bad["data_size"]["bytes_mean"]
    b.write_text(json.dumps(STUDENT[0]) + "\n" + json.dumps(broken) + "\n")
    with pytest.raises(RecordError, match=r"b\.jsonl:2: missing required key\(s\) backbone"):
        load_records([a, b])
    b.write_text(json.dumps(bad) + "\n")
    with pytest.raises(RecordError, match=r"b\.jsonl:1: .*data_size\.bytes_mean"):
        load_records([b])


def test_unknown_metric_lists_available(tmp_path):
    with pytest.raises(RecordError, match=r"'acc'.*available: top1, top5"):
        write_report(copy.deepcopy(RECORDS), tmp_path, metric="acc")
    assert resolve_metric(OK, None, "classification") == "top1"
    assert resolve_metric(OK, "top5", "classification") == "top5"


def test_bd_rate_against_itself_is_zero():
    rate, value, *_ = bd_delta(JPEG, JPEG, "top1")
    assert rate == pytest.approx(0.0, abs=1e-9)
    assert value == pytest.approx(0.0, abs=1e-9)


def test_bd_rate_of_half_the_bytes_is_minus_50_percent():
    half = copy.deepcopy(JPEG)
    for r in half:
        r["data_size"]["bytes_mean"] /= 2
    rate, value, *_ = bd_delta(JPEG, half, "top1")
    assert rate == pytest.approx(-50.0, abs=1e-6)
    assert value > 0  # at equal bytes, the cheaper curve is more accurate


def test_non_overlapping_curves_say_not_enough_points(tmp_path):
    far = [record("end_to_end", "fp", {"beta": b}, a, n, params=10_000)
           for b, a, n in [(0.1, 0.91, 50_000.0), (0.2, 0.93, 80_000.0), (0.4, 0.95, 120_000.0)]]
    rate, value, rate_note, metric_note, *_ = bd_delta(JPEG, far, "top1")
    assert rate is None and value is None
    assert NOT_ENOUGH in rate_note and NOT_ENOUGH in metric_note
    one_point = bd_delta(JPEG, STUDENT[:1], "top1")
    assert one_point[0] is None and NOT_ENOUGH in one_point[2]
    curves = group_curves(JPEG + far)
    labels = curve_labels(curves)
    _, rows = bd_rows(bd_table(curves, {"classification": "top1"}, labels, "input_codec:jpeg"), labels)
    row = next(row for row in rows if row[0].startswith("End-to-End"))
    assert row[1] == "JPEG" and NOT_ENOUGH in row[3] and NOT_ENOUGH in row[4]


def test_pareto_front_is_exactly_the_non_dominated_points():
    points = [(1.0, 0.50), (2.0, 0.70), (2.0, 0.60), (3.0, 0.65), (4.0, 0.80), (5.0, 0.80), (0.5, 0.40),
              (4.0, 0.80), (6.0, 0.90)]
    assert pareto_front(points) == [0, 1, 4, 6, 7, 8]
    assert sorted(monotone(points)) == [0, 1, 4, 6, 8]  # duplicates kept once for interpolation


def test_labels_and_anchor_choice():
    curves = group_curves(OK)
    labels = curve_labels(curves)
    assert set(labels.values()) == {"JPEG", "WebP", "Entropic Student (fp) · resnet18"}
    for anchor in ("WebP", "input_codec:webp"):
        _, rows = bd_rows(bd_table(curves, {"classification": "top1"}, labels, anchor), labels)
        assert [row[1] for row in rows] == ["WebP"] * 3
        assert next(row for row in rows if row[0] == "WebP")[3:] == ["+0.00", "+0.00"]
    with pytest.raises(RecordError, match=r"matches no curve; choose one of: .*input_codec:jpeg"):
        bd_table(curves, {"classification": "top1"}, labels, "avif")


def test_several_tasks_get_one_rd_plot_each_and_codecs_collide_by_backbone(tmp_path):
    det = [record("input_codec", "jpeg", {"quality": q}, a, b, task="detection", backbone="fasterrcnn")
           for q, a, b in [(30, 0.40, 2000.0), (75, 0.55, 4000.0)]]
    r50 = [{**r, "backbone": "resnet50"} for r in copy.deepcopy(JPEG)]
    paths = write_report(copy.deepcopy(OK) + det + r50, tmp_path)
    assert {"rd.png", "rd_detection.png", "rd_detection.pdf", "three_way_detection.png"} <= set(paths)
    text = paths["report.md"].read_text()
    assert "mAP@[.5:.95]" in text and "JPEG · resnet50" in text


def test_rerun_point_supersedes_failure_and_older_runs():
    failed = {**copy.deepcopy(FAILED), "rate_param": {"beta": 0.32}}
    newer = copy.deepcopy(JPEG[0])
    newer["created"], newer["metrics"]["top1"] = "2026-11-23T06:00:00Z", 0.53
    kept, superseded = latest_records([failed, newer, *OK])
    assert superseded == 2 and len(kept) == len(OK)
    assert all(is_ok(r) for r in kept) and newer in kept and JPEG[0] not in kept
