"""What a suite point asks of a cluster: the ``launcher:`` block of a suite (and of its entries).

Resources live in the suite, never in an experiment config, so they stay out of the config hash: the
same suite resumes on another cluster (other GPUs, partition, time limit) without redoing a point.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from splitbench.config import Strict


class Resources(Strict):
    """One point's job. The suite-level block gives the defaults; an entry's ``launcher:`` overrides keys."""

    gpus: int = Field(0, ge=0, description="GPUs per node")
    nodes: int = Field(1, ge=1, description="nodes per job (training runs under DDP across them)")
    processes_per_node: int | None = Field(None, ge=1, description="training processes (DDP ranks) per node; "
                                                                   "default one per GPU, else one")
    cpus: int = Field(2, ge=1, description="CPU cores per process (data loading, codec baselines)")
    memory_gb: float | None = Field(None, gt=0, description="memory per node; default the cluster's")
    time_min: int = Field(240, ge=1, description="time limit per attempt; a job that reaches it is requeued and "
                                                 "resumes from its last checkpoint")
    partition: str | None = None
    account: str | None = None
    retries: int = Field(3, ge=0, description="requeues after a timeout or preemption (Slurm), or retries after a "
                                              "lost worker (Ray)")
    slurm: dict[str, Any] = Field({}, description="more sbatch options, e.g. {qos: high, constraint: a100}")

    @property
    def processes(self) -> int:
        """Training processes per node."""
        return self.processes_per_node or max(1, self.gpus)

    @property
    def world_size(self) -> int:
        return self.processes * self.nodes

    def merged(self, override: Resources) -> Resources:
        """These resources with the keys ``override`` sets (only those) replaced."""
        return Resources.model_validate({**self.model_dump(exclude_unset=True),
                                         **override.model_dump(exclude_unset=True)})
