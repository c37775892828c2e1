"""One record file per suite point, merged into ``results.jsonl`` by the driver alone.

Jobs on many nodes cannot safely append to one file on a network file system (appends there are not
atomic), so each point's job writes ``OUT/records/<config-hash>.json`` (temp file + rename) and the
process that runs the suite merges those files into ``results.jsonl``: after each point, and at the start
of every run (what a detached or killed run left behind). A record already in ``results.jsonl`` is
never appended twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from splitbench.evaluation.records import append_record
from splitbench.training.checkpoint import atomic_write

RECORDS = "records"


def record_path(out: Path, config_hash: str) -> Path:
    return Path(out) / RECORDS / f"{config_hash}.json"


def write_point_records(out: Path, config_hash: str, records: list[dict[str, Any]]) -> Path:
    """A point's records (one, or a combined record then one per task), written atomically."""
    path = record_path(out, config_hash)
    text = json.dumps(records, indent=1) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def read_point_records(out: Path, config_hash: str) -> list[dict[str, Any]] | None:
    """The point's records, or None where it has no (readable) record file."""
    path = record_path(out, config_hash)
    try:
        records = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return records if isinstance(records, list) and records else None


def _key(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)


def merge_records(out: Path, hashes: list[str] | None = None) -> int:
    """Append to ``OUT/results.jsonl`` every record of the record files (all, or those of ``hashes``) that
    is not in it yet; returns how many were appended."""
    out = Path(out)
    results = out / "results.jsonl"
    files = sorted((out / RECORDS).glob("*.json")) if hashes is None else [record_path(out, h) for h in hashes]
    incoming = [r for f in files for r in read_point_records(out, f.stem) or []]
    if not incoming:
        return 0
    present = set()
    if results.exists():
        for line in results.read_text().splitlines():
            try:
                present.add(_key(json.loads(line)))
            except json.JSONDecodeError:
                continue
    added = 0
    for record in incoming:
        if _key(record) not in present:
            append_record(results, record)
            present.add(_key(record))
            added += 1
    return added
