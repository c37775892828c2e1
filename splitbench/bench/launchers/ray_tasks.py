"""``--launcher ray``: one Ray task per point, on the cluster at ``--address`` or on a local one started here.

A task asks for the point's ``launcher:`` resources (``num_gpus``, ``num_cpus``); one that trains on
several GPUs runs ``torchrun --standalone`` inside the task (:mod:`splitbench.bench.work`). A task is
given the results of the tasks it depends on, so Ray starts it only after they finished, and not at all if
one of them failed (its training failed). A task whose worker or node is lost is retried
(``launcher.retries``) and resumes from its run's checkpoint: ``OUT`` must be on storage every node sees.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from splitbench.bench import work
from splitbench.bench.launchers.base import Finished, check_one_node
from splitbench.bench.plan import Task
from splitbench.bench.work import PointSpec
from splitbench.errors import SplitbenchError

log = logging.getLogger("splitbench")


def _ray_point(spec: dict[str, Any], cwd: str, *after: dict[str, Any]) -> dict[str, Any]:
    """The unit in a Ray worker: relative paths in the config mean what they meant to the driver."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if Path(cwd).is_dir():
        os.chdir(cwd)
    return work.run_point_job(spec)


class RayLauncher:
    name = "ray"
    chains = True
    default_parallel = None  # Ray queues tasks by their resources itself
    outlives_driver = False  # a driver's tasks end with it

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise SplitbenchError("--launcher ray needs Ray: pip install 'splitbench[ray]'") from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            options = {"address": address} if address else {"num_cpus": num_cpus, "include_dashboard": False}
            ray.init(**options, log_to_driver=True, configure_logging=False)
            log.info("ray: %s", "connected to " + address if address else "started a local cluster "
                     f"({ray.cluster_resources().get('CPU', 0):.0f} CPUs, {ray.cluster_resources().get('GPU', 0):.0f}"
                     " GPUs)")
        self.remote = ray.remote(_ray_point)

    def check(self, tasks: Sequence[Task]) -> None:
        check_one_node(tasks, "a Ray task")

    def submit(self, task: Task, spec: PointSpec, after: Sequence[Any]) -> Any:
        r = task.resources
        options: dict[str, Any] = {"num_cpus": r.cpus * r.processes, "num_gpus": r.gpus, "max_retries": r.retries,
                                   "name": task.name}
        if r.memory_gb:
            options["memory"] = int(r.memory_gb * 2**30)
        return self.remote.options(**options).remote(spec.to_dict(), os.getcwd(), *after)

    def wait(self, handles: Mapping[int, Any]) -> list[tuple[int, Finished]]:
        index = {ref: i for i, ref in handles.items()}
        ready, _ = self.ray.wait(list(index), num_returns=1)
        return [(index[ref], self._finished(ref)) for ref in ready]

    def _finished(self, ref: Any) -> Finished:
        try:
            return Finished(self.ray.get(ref))
        except Exception as error:  # the task raised, or never ran because a dependency did
            lines = [line for line in str(error).strip().splitlines() if line.strip()]
            return Finished(error=f"ray task: {lines[-1] if lines else type(error).__name__}")

    def describe(self, handle: Any) -> None:
        return None

    def attach(self, info: dict[str, Any]) -> None:
        return None

    def cancel(self, handles: Sequence[Any]) -> None:
        for ref in handles:
            self.ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
