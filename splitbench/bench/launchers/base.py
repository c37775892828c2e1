"""What the suite driver asks of a launcher: submit a point's job, wait for jobs, cancel them.

The driver (:mod:`splitbench.bench.driver`) plans, caps the jobs in flight, fails the dependents of a
point whose training failed and merges the record files; a launcher only moves the unit of work
(:func:`splitbench.bench.work.run_point`) to where it runs. ``chains`` says whether it can submit a job
before the jobs it depends on have finished (Slurm ``afterok``, Ray object references); a launcher that
cannot is given a job only once its dependencies are done.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from splitbench.bench.plan import Task
from splitbench.bench.work import PointSpec
from splitbench.errors import SplitbenchError


def check_one_node(tasks: Sequence[Task], where: str) -> None:
    """Refuse points that ask for several nodes where jobs run on one machine."""
    for task in tasks:
        if task.resources.nodes > 1:
            raise SplitbenchError(f"{task.name}: launcher.nodes is {task.resources.nodes}, but {where} runs each "
                                  f"point on one machine; use --launcher submitit --cluster slurm")


@dataclass(frozen=True)
class Finished:
    """How a job ended: the unit's outcome, or why there is none (the job crashed, was cancelled, ...)."""

    outcome: dict[str, Any] | None = None
    error: str | None = None


class Launcher(Protocol):
    name: str
    chains: bool  # can submit while the jobs in ``after`` are still in flight
    default_parallel: int | None  # jobs in flight when --max-parallel is not given (None: no cap)
    outlives_driver: bool  # submitted jobs keep running after this process exits (--detach)

    def check(self, tasks: Sequence[Task]) -> None:
        """Raise a SplitbenchError, before anything is submitted, for resources it cannot give a task."""

    def submit(self, task: Task, spec: PointSpec, after: Sequence[Any]) -> Any:
        """Start (or queue) ``spec``'s job after the in-flight jobs ``after``; returns its handle."""

    def wait(self, handles: Mapping[int, Any]) -> list[tuple[int, Finished]]:
        """Block until at least one of ``handles`` (task index -> handle) has ended; return those that have."""

    def describe(self, handle: Any) -> dict[str, Any] | None:
        """What finds the job again from another process (written to OUT/jobs/), or None."""

    def attach(self, info: dict[str, Any]) -> Any | None:
        """The handle of a job an earlier run submitted (``describe``'s output), if it is still queued or
        running."""

    def cancel(self, handles: Sequence[Any]) -> None: ...

    def close(self) -> None: ...
