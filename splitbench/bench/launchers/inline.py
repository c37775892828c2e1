"""``--launcher inline``: every point in this process, one after another (the default)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from splitbench.bench import work
from splitbench.bench.launchers.base import Finished, check_one_node
from splitbench.bench.plan import Task
from splitbench.bench.work import PointSpec


class InlineLauncher:
    name = "inline"
    chains = False
    default_parallel = 1
    outlives_driver = False

    def check(self, tasks: Sequence[Task]) -> None:
        check_one_node(tasks, "--launcher inline")

    def submit(self, task: Task, spec: PointSpec, after: Sequence[Any]) -> Finished:
        return Finished(work.run_point(spec))  # runs now: the handle is the result

    def wait(self, handles: Mapping[int, Finished]) -> list[tuple[int, Finished]]:
        return list(handles.items())

    def describe(self, handle: Any) -> None:
        return None

    def attach(self, info: dict[str, Any]) -> None:
        return None

    def cancel(self, handles: Sequence[Any]) -> None:
        pass

    def close(self) -> None:
        pass
