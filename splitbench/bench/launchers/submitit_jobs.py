"""``--launcher submitit``: one job per point on Slurm (``--cluster slurm``), in subprocesses of this
machine (``local``) or in this process (``debug``), through submitit.

Resources come from the suite's ``launcher:`` block. A point with several training processes gets one
task per process (``tasks_per_node``), each exporting the torch distributed environment of its job
(``TorchDistributedEnvironment``, leaving ``CUDA_VISIBLE_DEVICES`` alone: the trainer picks
``cuda:LOCAL_RANK``). On Slurm a job whose teacher (or body, heads...) is still queued or running gets
``afterok`` on that job, and ``kill-on-invalid-dep`` so it is cancelled if the teacher's training fails;
a teacher with a record is no dependency at all (Slurm refuses ``afterok`` on a finished job). A job
that reaches its time limit or is preempted is requeued by submitit (:class:`PointJob` is checkpointable)
and the point resumes from its training checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from splitbench.bench import work
from splitbench.bench.launchers.base import Finished, check_one_node
from splitbench.bench.plan import Task
from splitbench.bench.work import PointSpec
from splitbench.errors import SplitbenchError

log = logging.getLogger("splitbench")

try:
    import submitit
except ImportError:  # the launcher says what to install when it is asked for
    submitit = None

ALIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED"}


class PointJob(submitit.helpers.Checkpointable if submitit else object):
    """The unit of work as a submitit callable. Its state is on disk (the run's checkpoint), so the
    checkpoint submitit takes on a timeout or preemption is this callable with the same spec."""

    def __init__(self, fail_job_on_training_failure: bool) -> None:
        self.fail_job = fail_job_on_training_failure  # not in debug: submitit opens pdb on an exception

    def __call__(self, spec: dict[str, Any]) -> dict[str, Any]:
        if not logging.getLogger().handlers:  # a job's own process: its log is a file
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
        environment = submitit.JobEnvironment()
        if environment.num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        if environment.global_rank == 0:
            log.info("job %s: %s (%d task(s))", environment.job_id, spec["source"], environment.num_tasks)
        return (work.run_point_job if self.fail_job else work.run_point)(spec)

    def checkpoint(self, spec: dict[str, Any]) -> Any:
        """On a timeout or preemption signal: requeue this callable as it is (the run's checkpoint is on disk)."""
        log.warning("%s: timed out or preempted; requeued, it resumes from its last checkpoint", spec["source"])
        return super().checkpoint(spec)


class SubmititLauncher:
    name = "submitit"

    def __init__(self, out: Path, cluster: str | None = None, poll_s: float = 1.0) -> None:
        if submitit is None:
            raise SplitbenchError("--launcher submitit needs submitit: pip install submitit")
        self.folder = Path(out).resolve() / "jobs" / "submitit" / "%j"
        try:
            self.cluster = cluster or submitit.AutoExecutor.which()
        except RuntimeError as error:
            raise SplitbenchError(f"submitit found no cluster: {error}") from None
        self.chains = self.cluster == "slurm"
        self.outlives_driver = self.cluster == "slurm"
        self.default_parallel = None if self.cluster == "slurm" else 1
        self.poll_s = poll_s

    def check(self, tasks: Sequence[Task]) -> None:
        if self.cluster != "slurm":
            check_one_node(tasks, f"--cluster {self.cluster}")

    def _executor(self, task: Task, after: Sequence[Any]) -> Any:
        r = task.resources
        executor = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster,
                                         **{f"{c}_max_num_timeout": r.retries for c in ("slurm", "local")})
        slurm = {"slurm_partition": r.partition, "slurm_account": r.account}
        extra = dict(r.slurm)
        if after:
            extra["dependency"] = "afterok:" + ":".join(str(job.job_id) for job in after)
            extra["kill-on-invalid-dep"] = "yes"
        if extra:
            slurm["slurm_additional_parameters"] = extra
        executor.update_parameters(name=task.name, timeout_min=r.time_min, nodes=r.nodes,
                                   tasks_per_node=r.processes, gpus_per_node=r.gpus, cpus_per_task=r.cpus,
                                   mem_gb=r.memory_gb, **{k: v for k, v in slurm.items() if v is not None})
        return executor

    def submit(self, task: Task, spec: PointSpec, after: Sequence[Any]) -> Any:
        try:
            job = self._executor(task, after).submit(PointJob(self.cluster != "debug"), spec.to_dict())
        except (OSError, RuntimeError, ValueError) as error:  # sbatch refused it (submitit's FailedJobError)
            lines = str(error).strip().splitlines() or [type(error).__name__]
            raise SplitbenchError(f"{task.name}: could not submit its job ({self.cluster}): {lines[-1]}") from None
        log.info("%s: submitted job %s (%s)%s", task.name, job.job_id, self.cluster,
                 f", after {', '.join(str(j.job_id) for j in after)}" if after else "")
        return job

    def wait(self, handles: Mapping[int, Any]) -> list[tuple[int, Finished]]:
        while True:
            ended = [(i, job) for i, job in handles.items() if job.done()]
            if ended:
                return [(i, self._finished(job)) for i, job in ended]
            time.sleep(self.poll_s)

    @staticmethod
    def _finished(job: Any) -> Finished:
        try:
            return Finished(job.result())
        except Exception as error:  # the job failed, crashed or was cancelled: the driver reads the record
            lines = [line for line in str(error).strip().splitlines() if line.strip()]
            return Finished(error=f"job {job.job_id} ({job.state}): {lines[-1] if lines else type(error).__name__}")

    def describe(self, job: Any) -> dict[str, Any] | None:
        if self.cluster != "slurm":
            return None
        return {"launcher": self.name, "cluster": self.cluster, "job_id": str(job.job_id)}

    def attach(self, info: dict[str, Any]) -> Any | None:
        if self.cluster != "slurm" or (info.get("launcher"), info.get("cluster")) != (self.name, "slurm"):
            return None
        job = submitit.SlurmJob(folder=self.folder, job_id=info["job_id"])
        return job if job.state in ALIVE else None

    def cancel(self, handles: Sequence[Any]) -> None:
        for job in handles:
            job.cancel(check=False)

    def close(self) -> None:
        pass
