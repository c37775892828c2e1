"""The quickstart: teacher → Entropic Student β sweep → JPEG/WebP sweep → report, on the embedded data.

Rerunnable: trained runs are kept (training resumes or skips) and evaluation points whose
config hash is already in ``results.jsonl`` are not evaluated again.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from pathlib import Path

from splitbench.config import ExperimentConfig, load_configs
from splitbench.experiment import evaluate_experiment, train_experiment

log = logging.getLogger("splitbench")

CONFIGS = ("shapes/teacher.yaml", "shapes/entropic_student.yaml", "shapes/input_codec.yaml")


def recorded_hashes(results: Path) -> set[str]:
    if not results.exists():
        return set()
    hashes = set()
    for line in results.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a report will name the bad line; here it only means "not done"
        if record.get("status") == "ok":
            hashes.add(record.get("config_hash"))
    return hashes


def peak_memory_mib() -> float:
    """Peak resident memory of this process and of its finished children (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def run_quickstart(out: Path, *, progress: bool = True, overrides: list[str] = ()) -> dict[str, Path]:
    from splitbench.bench.records import load_records
    from splitbench.bench.report import write_report

    start = time.perf_counter()
    results = out / "results.jsonl"
    configs: list[ExperimentConfig] = [c for name in CONFIGS for c in load_configs(name, list(overrides))]
    trainable = [c for c in configs if c.train.stages]
    for i, config in enumerate(trainable, 1):
        log.info("[train %d/%d] %s", i, len(trainable), config.run_name())
        train_experiment(config, out, resume=True, progress=progress)
    done = recorded_hashes(results)
    for i, config in enumerate(configs, 1):
        if config.hash() in done:
            log.info("[evaluate %d/%d] %s: already recorded", i, len(configs), config.run_name())
            continue
        record = evaluate_experiment(config, out, progress=progress)
        log.info("[evaluate %d/%d] %s: top-1 %.1f%% at %.0f B", i, len(configs), config.run_name(),
                 100 * record["metrics"]["top1"], record["data_size"]["bytes_mean"])
    paths = write_report(load_records([results]), out, title="splitbench quickstart (embedded shapes data)",
                         log_x=True)
    log.info("quickstart finished in %.1f min, peak memory %.0f MiB; report: %s",
             (time.perf_counter() - start) / 60, peak_memory_mib(), paths.get("report.md", out))
    return paths
