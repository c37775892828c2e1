"""Records → deployable configurations: every evaluated point (method x rate point) as a split, and the two
references every paper compares against, from the unsplit model's record of the same task and data:

* **local computing**: the unsplit model on the device (its time: the device profile's ``local_ms`` if measured,
  else the record's network time x the profile's scale), no network;
* **full offloading**: the raw image (the unsplit record's raw 8-bit pixels, ``--offload raw``) or a codec's file
  (``--offload jpeg:90``: that input-codec record) uploaded, the whole model on the server.
"""

from __future__ import annotations

from collections.abc import Sequence

from splitbench.bench.records import (
    CurveKey,
    combined_tasks,
    curve_labels,
    format_rate_param,
    group_by_task,
    is_ok,
    latest_records,
)
from splitbench.deploy.model import LOCAL, OFFLOAD, SPLIT, Option, request
from splitbench.deploy.profiles import DeviceProfile, ServerProfile
from splitbench.errors import SplitbenchError

UNSPLIT = "classifier"  # the method of the unsplit model's records


def point_label(record: dict, labels: dict[CurveKey, str]) -> str:
    rate = format_rate_param(record["rate_param"], empty="")
    label = labels[CurveKey.of(record)]
    return f"{label} {rate}" if rate else label


def metric_of(record: dict, metric: str) -> float | None:
    return record["metrics"].get(metric)


def _offload_record(records: Sequence[dict], unsplit: dict, offload: str) -> dict:
    if offload == "raw":
        return unsplit
    codec, _, quality = offload.partition(":")
    codecs = [r for r in records if r["method"] == "input_codec"]
    for r in codecs:
        q = r["rate_param"].get("quality")
        if r["variant"] == codec and q is not None and quality and float(q) == float(quality):
            return r
    have = ", ".join(f"{r['variant']}:{r['rate_param'].get('quality')}" for r in codecs) or "none"
    raise SplitbenchError(f"--offload {offload}: no input-codec record of that codec and quality here (have: {have}; "
                          f"or --offload raw)")


def group_options(records: Sequence[dict], metric: str, device: DeviceProfile, server: ServerProfile,
                  offload: str = "raw", local: str | None = None) -> list[Option]:
    """The references (local computing, full offloading) first, then every other point of one task group."""
    labels = curve_labels({CurveKey.of(r) for r in records})
    unsplit = [r for r in records if r["method"] == UNSPLIT and (local is None or r["run"] == local)]
    options: list[Option] = []
    if not unsplit:
        raise SplitbenchError(f"no unsplit ({UNSPLIT}) record {f'of run {local!r} ' if local else ''}for "
                              f"{records[0]['task']} on {records[0]['dataset']}: local computing and full offloading "
                              f"need the unsplit model's record (evaluate the teacher config)")
    base = max(unsplit, key=lambda r: metric_of(r, metric) or 0.0)
    ms, source = device.local_model_ms(base)
    options.append(Option(f"{LOCAL} ({labels[CurveKey.of(base)]})", LOCAL, metric_of(base, metric), local_ms=ms,
                          sources=f"device: {source}", record=base))
    off = _offload_record(records, base, offload)
    req, source = request(off, device, server)
    what = "raw pixels" if off is base else point_label(off, labels)
    options.append(Option(f"{OFFLOAD} ({what})", OFFLOAD, metric_of(off, metric), (req,), sources=source,
                          record=off))
    for record in records:
        if record["method"] == UNSPLIT:
            continue
        req, source = request(record, device, server)
        options.append(Option(point_label(record, labels), SPLIT, metric_of(record, metric), (req,), sources=source,
                              record=record))
    return options


def task_groups(records: Sequence[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """The latest successful records per (task, dataset, split), without combined (multi-task) records."""
    latest, _ = latest_records(list(records))
    ok = [r for r in latest if is_ok(r) and not combined_tasks(r["task"])]
    return group_by_task(ok)
