"""Result records: one JSON object per evaluation, appended as one line to ``results.jsonl``."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import splitbench

_PACKAGES = ("torch", "torchvision", "compressai", "timm", "numpy", "pillow")


def versions() -> dict[str, str]:
    out = {"splitbench": splitbench.__version__, "python": platform.python_version()}
    for name in _PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one line with a single write on an O_APPEND descriptor, so concurrent or killed
    writers never interleave or leave half a record."""
    line = (json.dumps(record, sort_keys=False) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
