"""The quickstart: teacher → Entropic Student β sweep → JPEG/WebP sweep → report, on the embedded data.

It is the packaged suite ``suites/quickstart.yaml`` run by :mod:`splitbench.bench.suite`, so it is
rerunnable the same way: trained runs are kept (training resumes or skips) and points whose config
hash already has an ok record in ``results.jsonl`` are not evaluated again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from splitbench.bench.suite import execute_suite, peak_memory_mib, recorded_hashes
from splitbench.errors import SplitbenchError

__all__ = ["SUITE", "peak_memory_mib", "recorded_hashes", "run_quickstart"]

log = logging.getLogger("splitbench")

SUITE = "suites/quickstart.yaml"


def run_quickstart(out: Path, *, progress: bool = True, overrides: list[str] = (),
                   retrain_teacher: bool = False) -> dict[str, Path]:
    """Run the quickstart suite into ``out``; returns the report's files. Raises if a point failed. The teacher
    comes from the weights shipped with splitbench unless ``retrain_teacher``."""
    summary = execute_suite(SUITE, out, overrides=overrides, progress=progress, retrain=retrain_teacher)
    log.info("quickstart finished in %.1f min, peak memory %.0f MiB; report: %s",
             summary.seconds / 60, peak_memory_mib(), summary.report.get("report.md", out))
    if summary.failed:
        names = ", ".join(f.run for f in summary.failed)
        raise SplitbenchError(f"{len(summary.failed)} quickstart point(s) failed ({names}); see the log and "
                              f"{Path(out) / 'results.jsonl'}, fix and run again (finished points are kept)")
    return summary.report
