"""The unit of work of a suite: one point, trained if it must be, then evaluated into its record file.

Every launcher runs this same function: in the suite's own process (``--launcher inline``), in a
submitit job on Slurm or on this machine, in a Ray task. Its argument is JSON (a :class:`PointSpec` as
a dict), never a model, so it pickles anywhere and a requeued job starts from what is on disk: a run with
finished weights is not trained again, an interrupted one resumes from its checkpoint
(``OUT/<run>/checkpoint.pt``), and the record goes to ``OUT/records/<config-hash>.json`` atomically.
The driver alone merges record files into ``results.jsonl`` (:mod:`splitbench.bench.point_records`).

A point whose training needs several processes trains under DDP through the existing path
(:func:`splitbench.training.distributed.init_distributed`): inside a job that already started one task
per GPU (submitit), each task is a rank; elsewhere, ``torchrun --standalone`` starts them here. Rank 0
alone evaluates and writes the record.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from splitbench import shipped
from splitbench.bench.point_records import write_point_records
from splitbench.bench.records import headline
from splitbench.errors import SplitbenchError
from splitbench.experiment import validate
from splitbench.runs import Run, measure_experiment, train_experiment

log = logging.getLogger("splitbench")

TRAINING, EVALUATION = "training", "evaluation"


class TrainingFailed(SplitbenchError):
    """Raised by :func:`run_point_job` so that a scheduler sees the job fail and holds its dependents."""


@dataclass(frozen=True)
class PointSpec:
    """Everything a job needs to run one point, as JSON."""

    config: dict[str, Any]  # the validated experiment, dumped
    config_hash: str  # checked against the config rebuilt in the job
    out: str  # absolute: jobs may start in another folder
    source: str = ""  # where in the suite the point came from (messages)
    shipped: bool = False  # may install the weights splitbench ships for this config
    retrain: bool = False
    progress: bool = False
    processes: int = 1  # training processes (DDP ranks) this job starts itself when no launcher did

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PointSpec:
        return cls(**data)


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _train(spec: PointSpec, run: Run) -> None:
    config, out = run.config, Path(spec.out)
    if spec.shipped and not spec.retrain and not run.weights.exists():
        run.check_reusable()
        if not shipped.install(run):
            log.info("%s: nothing shipped for this config (hash %s); training it", run.name, run.config_hash)
    if spec.processes > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not run.weights.exists():
        _train_under_torchrun(spec, run)
    train_experiment(config, out, resume=True, progress=spec.progress)  # under torchrun: finds it finished


def _train_under_torchrun(spec: PointSpec, run: Run) -> None:
    """``torchrun --standalone`` with one rank per process this point asks for, each training it."""
    run.folder.mkdir(parents=True, exist_ok=True)
    spec_file = run.folder / "point.json"
    spec_file.write_text(json.dumps(spec.to_dict()))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={spec.processes}",
               "-m", "splitbench.bench.work", str(spec_file)]
    log.info("%s: training under DDP, %d processes: %s", run.name, spec.processes, " ".join(command))
    code = subprocess.run(command, check=False).returncode
    if code != 0:
        raise SplitbenchError(f"training under torchrun ({spec.processes} processes) exited with code {code}")


def run_point(spec: PointSpec | dict[str, Any]) -> dict[str, Any]:
    """Train (if needed; resuming) and evaluate one point, write its record file; returns its outcome
    (``status``, ``failed_in``, ``error``, ``seconds``). A point's error is recorded, not raised; only
    interrupts (KeyboardInterrupt, a job's SystemExit on preemption) go through."""
    spec = spec if isinstance(spec, PointSpec) else PointSpec.from_dict(spec)
    began = time.perf_counter()
    config = validate(spec.config, spec.source or "suite point")
    if config.hash() != spec.config_hash:
        raise SplitbenchError(f"{spec.source}: the config rebuilt in the job hashes to {config.hash()}, not "
                              f"{spec.config_hash}; run the suite with the same splitbench on every node")
    run = Run(config, Path(spec.out))
    phase = TRAINING
    try:
        if run.method.needs_training(config):
            _train(spec, run)
        if _rank() != 0:
            return {"status": "ok", "rank": _rank()}
        phase = EVALUATION
        records = measure_experiment(config, Path(spec.out), progress=spec.progress)
    except Exception as error:  # any failure is a failed point; interrupts are BaseExceptions
        message = f"{type(error).__name__}: {error}"
        if not isinstance(error, SplitbenchError):
            log.debug("traceback of %s", run.name, exc_info=True)
        if _rank() != 0:
            raise
        write_point_records(Path(spec.out), spec.config_hash, [{**run.failed_record(message), "failed_in": phase}])
        return {"status": "failed", "failed_in": phase, "error": message, "seconds": time.perf_counter() - began}
    write_point_records(Path(spec.out), spec.config_hash, records)
    return {"status": "ok", "headline": headline(records[0]), "seconds": time.perf_counter() - began}


def run_point_job(spec: PointSpec | dict[str, Any]) -> dict[str, Any]:
    """:func:`run_point` for a scheduler that holds dependents on a failed job (Slurm ``afterok``, Ray's
    object references): a point whose training failed fails its job (its record is written first)."""
    outcome = run_point(spec)
    if outcome.get("failed_in") == TRAINING:
        raise TrainingFailed(outcome["error"])
    return outcome


def main(argv: list[str] | None = None) -> int:
    """``python -m splitbench.bench.work SPEC.json``: one rank of a point's DDP training (under torchrun)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = PointSpec.from_dict(json.loads(Path((argv or sys.argv[1:])[0]).read_text()))
    config = validate(spec.config, spec.source or "suite point")
    train_experiment(config, Path(spec.out), resume=True, progress=spec.progress and _rank() == 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
