"""The suite driver: submits a plan's tasks through a launcher, in dependency order, and collects them.

At most ``max_parallel`` jobs are in flight. A task is submitted once the tasks it needs have finished
their training, or earlier where the launcher can chain it on their jobs (Slurm, Ray). A task whose
dependency failed to train fails at once, naming it. When a job ends, its record file is the truth (what
the job wrote, else a failed record written here saying why the job ended without one); the driver merges
it into ``results.jsonl`` and logs one line. ``detach`` submits what can be submitted and returns: jobs
are noted in ``OUT/jobs/<config-hash>.json`` so that a later run waits for them instead of submitting them
again, and merges what they recorded.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitbench.bench.launchers.base import Finished, Launcher
from splitbench.bench.plan import Plan, Task
from splitbench.bench.point_records import merge_records, read_point_records, record_path, write_point_records
from splitbench.bench.records import headline
from splitbench.bench.work import TRAINING
from splitbench.runs import Run
from splitbench.training.checkpoint import atomic_write

log = logging.getLogger("splitbench")


@dataclass
class Outcome:
    task: Task
    status: str  # ok | failed
    error: str | None = None
    failed_in: str | None = None  # training | evaluation | None (the job ended without running the point)
    seconds: float = 0.0
    headline: str = ""

    @property
    def trained(self) -> bool:
        """Whether what depends on this point may run: its training (if any) finished."""
        return self.status == "ok" or self.failed_in not in (TRAINING, None)


@dataclass
class DriveResult:
    outcomes: list[Outcome] = field(default_factory=list)
    pending: list[Task] = field(default_factory=list)  # submitted (or waiting for those), not finished


def _jobs_file(out: Path, task: Task) -> Path:
    return out / "jobs" / f"{task.config_hash}.json"


class Driver:
    def __init__(self, plan: Plan, launcher: Launcher, out: Path, *, max_parallel: int | None, progress: bool,
                 retrain: bool) -> None:
        self.plan, self.launcher, self.out = plan, launcher, Path(out)
        self.cap = max_parallel or launcher.default_parallel or len(plan.tasks) or 1
        self.progress, self.retrain = progress, retrain
        self.done: dict[int, Outcome] = {}
        self.in_flight: dict[int, Any] = {}
        self.started: dict[int, float] = {}
        self.result = DriveResult()

    # ------------------------------------------------------------ submitting

    def _failed_dependency(self, task: Task) -> str | None:
        for index, (role, run) in task.needs.items():
            outcome = self.done.get(index)
            if outcome is not None and not outcome.trained:
                return f"its {role} run {run!r} failed to train in this suite ({outcome.error})"
        return None

    def _submit_ready(self, pending: list[Task]) -> None:
        for task in list(pending):
            reason = self._failed_dependency(task)
            if reason:
                pending.remove(task)
                self._record_failure(task, reason)
                continue
            waiting = [i for i in task.needs if i not in self.done]
            if waiting and not (self.launcher.chains and all(i in self.in_flight for i in waiting)):
                continue
            if len(self.in_flight) >= self.cap:
                break
            pending.remove(task)
            record_path(self.out, task.config_hash).unlink(missing_ok=True)  # a failed record, merged already
            self.started[task.index] = time.perf_counter()
            handle = self._attach(task)
            if handle is None:
                spec = task.spec(self.out, progress=self.progress, retrain=self.retrain)
                handle = self.launcher.submit(task, spec, [self.in_flight[i] for i in waiting])
                self._note_job(task, handle)
            self.in_flight[task.index] = handle

    def _attach(self, task: Task) -> Any | None:
        """The job an earlier (detached) run submitted for this task, if it is still queued or running."""
        path = _jobs_file(self.out, task)
        if not path.is_file():
            return None
        handle = self.launcher.attach(json.loads(path.read_text()))
        if handle is None:
            path.unlink()
        else:
            log.info("%s: waiting for job %s, submitted by an earlier run", task.name, path.read_text().strip())
        return handle

    def _note_job(self, task: Task, handle: Any) -> None:
        info = self.launcher.describe(handle)
        if info is not None:
            text = json.dumps({**info, "run": task.name})
            atomic_write(_jobs_file(self.out, task), lambda p: p.write_text(text))

    # ------------------------------------------------------------ finishing

    def _record_failure(self, task: Task, reason: str) -> None:
        """A point that did not run (or whose job ended without a record): its failed record, written here."""
        write_point_records(self.out, task.config_hash, [Run(task.point.config, self.out).failed_record(reason)])
        self._finish(task, Finished(error=reason))

    def _finish(self, task: Task, finished: Finished) -> None:
        self.in_flight.pop(task.index, None)
        _jobs_file(self.out, task).unlink(missing_ok=True)
        records = read_point_records(self.out, task.config_hash)
        if records is None:  # the job never wrote one (crashed, cancelled, its dependency failed)
            reason = self._failed_dependency(task) or finished.error or "the job ended without a record"
            write_point_records(self.out, task.config_hash,
                                [Run(task.point.config, self.out).failed_record(reason)])
            records = read_point_records(self.out, task.config_hash)
        merge_records(self.out, [task.config_hash])
        first = records[0]
        seconds = time.perf_counter() - self.started.get(task.index, time.perf_counter())
        outcome = Outcome(task, first["status"], first.get("error"), first.get("failed_in"), seconds)
        if outcome.status == "ok":
            outcome.headline = headline(first)
        self.done[task.index] = outcome
        self.result.outcomes.append(outcome)
        position = f"[{len(self.done) + len(self.plan.skipped)}/{self.plan.total}]"
        if outcome.status == "ok":
            log.info("%s %s: done in %.1f s (%s)", position, task.name, seconds, outcome.headline)
        else:
            log.error("%s %s: FAILED after %.1f s: %s", position, task.name, seconds,
                      (outcome.error or "").splitlines()[0] if outcome.error else "")

    # ------------------------------------------------------------ the loop

    def run(self, detach: bool = False) -> DriveResult:
        pending = list(self.plan.tasks)
        try:
            while pending or self.in_flight:
                self._submit_ready(pending)
                if detach:
                    break
                if not self.in_flight:
                    break  # nothing runs and nothing can start (cannot happen with a valid plan)
                for index, finished in self.launcher.wait(dict(self.in_flight)):
                    self._finish(self._task(index), finished)
        except BaseException:
            if not detach:
                self.launcher.cancel(list(self.in_flight.values()))
            raise
        self.result.pending = [self._task(i) for i in self.in_flight] + pending
        return self.result

    def _task(self, index: int) -> Task:
        return next(t for t in self.plan.tasks if t.index == index)
