"""Benchmark suites: many experiments (each possibly a sweep) run as one resumable job, then one report.

A suite is a short YAML file (``splitbench bench SUITE.yaml``)::

    experiments:                        # run in order
      - shapes/teacher.yaml             # a config file, as is
      - config: shapes/entropic_student.yaml
        set: {method_args.beta: [0.05, 0.2]}
      - config: shapes/input_codec.yaml
        set: {method_args.codec: avif, method_args.quality: [10, 30, 50, 70]}
    set: {data.train_samples: 2000}     # optional: applied to every experiment (an entry's own set wins)
    report: {title: My sweep, log_x: true, metric: top1, anchor: jpeg}   # optional: write_report options

Keys:

* ``experiments`` (required, non-empty): each item is a config path, or ``{config: PATH, set: {...}}``.
  Paths are relative to the suite file, else names under ``splitbench/configs/``.
* ``shipped: true`` on an entry: where a point's config is the one splitbench ships trained weights for
  (:mod:`splitbench.shipped`), they are installed (hash-checked) instead of training; ``--retrain`` trains.
* ``set``: dotted config keys, as ``--set`` takes them. A **list value is a sweep dimension**: it
  replaces the config's own sweep of that key or adds one; a scalar pins the key (dropping the
  config's sweep of it). To set a key whose value is itself a list, wrap it: ``milestones: [[5, 8]]``.
  A suite-level ``set`` reaches every experiment, so keep it to keys they all share (``data.*``,
  ``train.*``, ``eval.*``).
* ``report``: ``title``, ``metric``, ``anchor``, ``log_x`` — passed to ``write_report``.
* ``launcher`` (suite level, and on an entry to replace some keys): each point's job resources when it
  runs through a cluster launcher (:class:`~splitbench.bench.resources.Resources`: ``gpus``, ``nodes``,
  ``cpus``, ``memory_gb``, ``time_min``, ``partition``, ``account``, ...). In no config hash.

``--set KEY=VALUE`` on the command line is applied last to every point, exactly as for
``splitbench train`` (a literal value that pins the key, never a sweep).

Running a suite expands every experiment into its points, plans them (:mod:`splitbench.bench.plan`: a
point after the runs it is built from) and hands them to a launcher (:mod:`splitbench.bench.launchers`:
inline by default, submitit or Ray). Each point's unit of work (:mod:`splitbench.bench.work`) trains it
if its method needs training (resuming an interrupted run, skipping a finished one), evaluates it into
its record file ``OUT/records/<config-hash>.json``; the driver merges that into ``OUT/results.jsonl``
and logs one line. A point whose ok record (same config hash) is
already there is skipped, so a suite killed midway and started again only does what is missing.
A point that raises is recorded with ``status: failed`` and the error, and the suite goes on; the
next run retries it; points whose teacher failed to train fail at once, naming it. A run folder
trained with other settings (run names leave data and training settings out) is never reused: the
point fails naming the keys that differ. Everything is validated before anything runs, so a typo
costs no compute. Last, the report of every record in ``OUT/results.jsonl`` is written into OUT.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

from splitbench.bench.driver import Driver
from splitbench.bench.launchers import Launcher, make_launcher
from splitbench.bench.plan import plan_suite
from splitbench.bench.point_records import merge_records
from splitbench.bench.resources import Resources, parse_resources
from splitbench.config import (
    PACKAGE_CONFIGS,
    Strict,
    apply_overrides,
    expand_sweep,
    format_errors,
    load_raw,
    pin_swept,
    resolve_config_path,
)
from splitbench.errors import ConfigError, SplitbenchError
from splitbench.experiment import Experiment, validate

log = logging.getLogger("splitbench")


# ---------------------------------------------------------------- schema


class SuiteEntry(Strict):
    config: str = Field(description="experiment config: relative to the suite file, or under splitbench/configs/")
    set: dict[str, Any] = Field({}, description="dotted key → value; a list value is a sweep dimension")
    shipped: bool = Field(False, description="install the weights shipped with splitbench for this config instead "
                                             "of training it (see splitbench.shipped); --retrain trains anyway")
    launcher: Resources = Field(Resources(), description="this entry's job resources: the keys given replace "
                                                         "the suite's launcher block")


class ReportOptions(Strict):
    title: str | None = None
    metric: str | None = None
    anchor: str | list[str] | None = Field(None, description="BD-rate anchor curve(s); default JPEG")
    log_x: bool = False


class Suite(Strict):
    experiments: list[SuiteEntry] = Field(min_length=1)
    set: dict[str, Any] = {}
    report: ReportOptions = ReportOptions()
    launcher: Resources = Field(Resources(), description="job resources of every point (gpus, nodes, cpus, "
                                                         "memory_gb, time_min, partition, ...); not in any hash")

    @field_validator("experiments", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """A bare string is the common case (a config as is); make it the long form."""
        if isinstance(value, list):
            return [{"config": v} if isinstance(v, str) else v for v in value]
        return value


@dataclass(frozen=True)
class SuitePoint:
    """One validated config, where in the suite it came from (for messages), whether it may use shipped weights."""

    config: Experiment
    source: str
    shipped: bool = False
    resources: Resources = field(default_factory=Resources)


@dataclass(frozen=True)
class FailedPoint:
    run: str
    config_hash: str
    error: str
    source: str


@dataclass
class SuiteSummary:
    ok: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[FailedPoint] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # submitted (--detach), not finished
    report: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


# ---------------------------------------------------------------- loading


def load_suite(path: str | Path) -> tuple[Suite, Path]:
    """The validated suite and its resolved file (entries' paths are relative to its folder)."""
    file = resolve_config_path(path)
    try:
        raw = yaml.safe_load(file.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{file}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: a suite is a mapping with an 'experiments' list, got {type(raw).__name__}")
    try:
        return Suite.model_validate(raw), file
    except ValidationError as error:
        message = format_errors(error, Suite).replace("invalid config:", "invalid suite:", 1)
        raise ConfigError(f"{file}: {message}") from None


def _entry_path(name: str, suite_dir: Path, where: str) -> Path:
    for candidate in (suite_dir / name, PACKAGE_CONFIGS / name):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{where}: config file not found: {name} (looked in {suite_dir} and {PACKAGE_CONFIGS})")


def _yaml_value(value: Any) -> str:
    """A value as ``apply_overrides`` parses it back unchanged (JSON's ``1e-05`` would come back a string)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=2**20).strip()
    return text.removesuffix("...").strip()


def apply_suite_set(raw: dict, values: dict[str, Any], where: str) -> dict:
    """Lists become (or replace) sweep dimensions; scalars pin their key, as ``--set`` does."""
    sweep = raw.get("sweep") or {}
    if not isinstance(sweep, dict):
        raise ConfigError(f"{where}: sweep: maps dotted keys to non-empty lists")
    sweep = dict(sweep)
    pins = []
    for key, value in values.items():
        if isinstance(value, list):
            if not value:
                raise ConfigError(f"{where}: set.{key} is an empty list (a sweep of no points)")
            sweep[key] = value
        else:
            sweep.pop(key, None)
            pins.append(f"{key}={_yaml_value(value)}")
    raw = {k: v for k, v in raw.items() if k != "sweep"}
    if sweep:
        raw["sweep"] = sweep
    return apply_overrides(raw, pins)


def suite_points(path: str | Path, overrides: Sequence[str] = (),
                 resources: Sequence[str] = ()) -> tuple[Suite, list[SuitePoint]]:
    """Every point of the suite, validated, in run order; ``resources`` (``KEY=VALUE``) win over the suite's
    ``launcher:`` blocks."""
    suite, file = load_suite(path)
    cli = parse_resources(resources)
    overrides = list(overrides)
    points: list[SuitePoint] = []
    for i, entry in enumerate(suite.experiments):
        where = f"{file}: experiments[{i}] ({entry.config})"
        raw = load_raw(_entry_path(entry.config, file.parent, where))
        raw = apply_suite_set(raw, {**suite.set, **entry.set}, where)
        raw = apply_overrides(pin_swept(raw, overrides), overrides)
        job = suite.launcher.merged(entry.launcher).merged(cli)
        points += [SuitePoint(validate(p, where), where, entry.shipped, job) for p in expand_sweep(raw)]
    return suite, points


# ---------------------------------------------------------------- records and checks


def recorded_hashes(results: Path) -> set[str]:
    """Config hashes with an ok record: the points a rerun skips."""
    if not results.exists():
        return set()
    hashes = set()
    for line in results.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a report will name the bad line; here it only means "not done"
        if isinstance(record, dict) and record.get("status") == "ok":
            hashes.add(record.get("config_hash"))
    return hashes


def peak_memory_mib() -> float:
    """Peak resident memory of this process and of its finished children (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


# ---------------------------------------------------------------- running


def execute_suite(path: str | Path, out: Path, *, overrides: Sequence[str] = (), progress: bool = True,
                  retrain: bool = False, launcher: str | Launcher = "inline", cluster: str | None = None,
                  address: str | None = None, max_parallel: int | None = None, detach: bool = False,
                  resources: Sequence[str] = ()) -> SuiteSummary:
    """Run every point not yet recorded through ``launcher``, record failures, write the report; see the
    module docstring."""
    from splitbench.bench.records import load_records
    from splitbench.bench.report import write_report

    start = time.perf_counter()
    if max_parallel is not None and max_parallel < 1:
        raise SplitbenchError(f"--max-parallel must be at least 1, got {max_parallel}")
    suite, points = suite_points(path, overrides, resources)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    merged = merge_records(out)  # what jobs of an earlier (detached or killed) run recorded
    if merged:
        log.info("merged %d record(s) from %s into %s", merged, out / "records", results)
    plan = plan_suite(points, out, recorded_hashes(results))
    if isinstance(launcher, str):
        launcher = make_launcher(launcher, out, cluster=cluster, address=address)
    summary = SuiteSummary()
    try:
        if detach and not launcher.outlives_driver:
            raise SplitbenchError(f"--detach needs jobs that outlive this process (--launcher submitit --cluster "
                                  f"slurm), not --launcher {launcher.name}")
        launcher.check(plan.tasks)  # before anything runs
        log.info("suite %s: %d points (%d already recorded) -> %s (launcher %s)", path, plan.total,
                 len(plan.skipped), out, launcher.name)
        for i in plan.skipped:
            summary.skipped.append(points[i].config.run_name())
            log.info("[%d/%d] %s: already recorded", i + 1, plan.total, points[i].config.run_name())
        driver = Driver(plan, launcher, out, max_parallel=max_parallel, progress=progress, retrain=retrain)
        result = driver.run(detach)
    finally:
        launcher.close()
    for outcome in result.outcomes:
        task = outcome.task
        if outcome.status == "ok":
            summary.ok.append(task.name)
        else:
            summary.failed.append(FailedPoint(task.name, task.config_hash, outcome.error or "", task.point.source))
    summary.pending = [t.name for t in result.pending]

    records = load_records([results]) if results.exists() else []
    if any(r["status"] == "ok" for r in records):
        options = suite.report.model_dump()
        options["title"] = options["title"] or f"splitbench bench {Path(path).stem}"
        summary.report = write_report(records, out, **options)
    else:
        log.warning("no successful point in %s: no report written", results)
    summary.seconds = time.perf_counter() - start
    ran = [o.seconds for o in result.outcomes if o.failed_in is not None or o.status == "ok"]
    per_point = f", {sum(ran) / len(ran):.1f} s per point run" if ran else ""
    pending = f", {len(summary.pending)} pending (submitted, not finished)" if summary.pending else ""
    log.info("suite %s: %d ok, %d skipped (already recorded), %d failed%s of %d points in %.1f min%s; "
             "peak memory %.0f MiB; report: %s", path, len(summary.ok), len(summary.skipped), len(summary.failed),
             pending, plan.total, summary.seconds / 60, per_point, peak_memory_mib(),
             summary.report.get("report.md", "none"))
    for failure in summary.failed:
        log.error("failed: %s (%s): %s", failure.run, failure.source, (failure.error.splitlines() or [""])[0])
    if summary.pending:
        log.info("pending: %s; run the same command again to merge what they record", ", ".join(summary.pending))
    return summary


def run_suite(path: str | Path, out: Path, *, overrides: Sequence[str] = (), progress: bool = True,
              retrain: bool = False, **launch: Any) -> list[FailedPoint]:
    """Run a suite (resumable); returns the points that failed (the CLI exits 1 if any). ``launch``: the
    launcher options of :func:`execute_suite`."""
    return execute_suite(path, out, overrides=overrides, progress=progress, retrain=retrain, **launch).failed
