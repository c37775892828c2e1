"""Launchers: where the suite's unit of work runs (inline, submitit, Ray), behind one protocol."""

from __future__ import annotations

from pathlib import Path

from splitbench.bench.launchers.base import Finished, Launcher
from splitbench.errors import SplitbenchError

__all__ = ["LAUNCHERS", "Finished", "Launcher", "make_launcher"]

LAUNCHERS = ("inline", "submitit", "ray")
CLUSTERS = ("slurm", "local", "debug")


def make_launcher(name: str, out: Path, *, cluster: str | None = None, address: str | None = None) -> Launcher:
    """The launcher ``name``; ``cluster`` is submitit's, ``address`` Ray's (each refused elsewhere)."""
    if name not in LAUNCHERS:
        raise SplitbenchError(f"unknown launcher {name!r}; known: {', '.join(LAUNCHERS)}")
    if cluster is not None and name != "submitit":
        raise SplitbenchError(f"--cluster {cluster} is for --launcher submitit (got --launcher {name})")
    if cluster is not None and cluster not in CLUSTERS:
        raise SplitbenchError(f"unknown cluster {cluster!r}; known: {', '.join(CLUSTERS)}")
    if address is not None and name != "ray":
        raise SplitbenchError(f"--address is for --launcher ray (got --launcher {name})")
    if name == "submitit":
        from splitbench.bench.launchers.submitit_jobs import SubmititLauncher

        return SubmititLauncher(out, cluster)
    if name == "ray":
        from splitbench.bench.launchers.ray_tasks import RayLauncher

        return RayLauncher(address)
    from splitbench.bench.launchers.inline import InlineLauncher

    return InlineLauncher()
