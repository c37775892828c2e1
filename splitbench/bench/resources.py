"""What a suite point asks of a cluster: the ``launcher:`` block of a suite (and of its entries).

Resources live in the suite, never in an experiment config, so they stay out of the config hash: the
same suite resumes on another cluster (other GPUs, partition, time limit) without redoing a point.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import Field, ValidationError

from splitbench.config import Strict, format_errors
from splitbench.errors import ConfigError


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


def parse_resources(items: Sequence[str]) -> Resources:
    """``--resources KEY=VALUE`` (repeatable) as resources that win over the suite's, e.g. ``partition=gpu``."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--resources takes KEY=VALUE (e.g. partition=gpu), got {item!r}")
        values[key.strip()] = yaml.safe_load(text)
    try:
        return Resources.model_validate(values)
    except ValidationError as error:
        message = format_errors(error, Resources, prefix="--resources").replace("invalid config:", "", 1)
        raise ConfigError(f"invalid --resources:{message}") from None
