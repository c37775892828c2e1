"""The planner: which points of a suite still run, and what each must wait for.

A point is skipped when it has an ok record. The others run after the points whose runs they are built
from, found by run name in the same --out (:meth:`splitbench.runs.Run.needs`): a student after the
teacher it distils from, a multi-task head after its body, the multi-task composition after its body and
heads, a detector after the classifier it starts from. A point whose run folder another, earlier point
trains (same run name) waits for it too, so two jobs never train one folder at once. A dependency
already recorded (or not in the suite at all: a run trained before) is no edge. The order is the
suite's, moved only where a dependency comes later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from splitbench.bench.resources import Resources
from splitbench.bench.work import PointSpec
from splitbench.errors import ConfigError
from splitbench.runs import Run

if TYPE_CHECKING:
    from splitbench.bench.suite import SuitePoint


@dataclass(frozen=True)
class Task:
    """A point to run: its place in the suite (``index``), and the tasks it waits for (index -> role, run)."""

    index: int
    point: SuitePoint
    name: str
    config_hash: str
    trains: bool
    needs: dict[int, tuple[str, str]] = field(default_factory=dict)

    @property
    def resources(self) -> Resources:
        return self.point.resources

    def spec(self, out: Path, *, progress: bool, retrain: bool) -> PointSpec:
        return PointSpec(self.point.config.model_dump(mode="json"), self.config_hash, str(Path(out).resolve()),
                         self.point.source, self.point.shipped, retrain, progress, self.resources.processes)


@dataclass
class Plan:
    tasks: list[Task]  # in the order to submit them
    skipped: list[int]  # indices of the points already recorded
    total: int


def plan_suite(points: Sequence[SuitePoint], out: Path, done: set[str]) -> Plan:
    """The tasks of ``points`` not in ``done`` (config hashes with ok records), ordered by dependency."""
    runs = [Run(p.config, out) for p in points]
    trains = [r.method.needs_training(r.config) for r in runs]
    producer: dict[str, int] = {}
    for i, run in enumerate(runs):
        if trains[i]:
            producer.setdefault(run.name, i)
    skipped = [i for i, p in enumerate(points) if p.config.hash() in done]
    pending = {i for i in range(len(points)) if i not in set(skipped)}
    tasks: dict[int, Task] = {}
    for i in sorted(pending):
        needs = {producer[name]: (role, name) for name, role in runs[i].needs().items()
                 if name in producer and producer[name] != i and producer[name] in pending}
        owner = producer.get(runs[i].name)
        if owner is not None and owner != i and owner in pending:
            needs.setdefault(owner, ("run folder", runs[i].name))
        tasks[i] = Task(i, points[i], runs[i].name, points[i].config.hash(), trains[i], needs)
    return Plan(_ordered(tasks), skipped, len(points))


def _ordered(tasks: dict[int, Task]) -> list[Task]:
    """Suite order where it allows, each task after what it needs; a cycle is a config error naming it."""
    order: list[Task] = []
    placed: set[int] = set()
    while len(order) < len(tasks):
        ready = [t for i, t in sorted(tasks.items()) if i not in placed and set(t.needs) <= placed]
        if not ready:
            stuck = [t for i, t in sorted(tasks.items()) if i not in placed]
            names = ", ".join(f"{t.name} (needs {', '.join(n for _, n in t.needs.values())})" for t in stuck)
            raise ConfigError(f"the suite's points depend on each other in a cycle: {names}")
        order.append(ready[0])
        placed.add(ready[0].index)
    return order
