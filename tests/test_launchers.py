"""Suites through launchers: the planner's rules, Slurm's dependency rules (a fake sbatch), submitit's debug and
local executors end to end (with a forced timeout and requeue), Ray on a 2-CPU local cluster; every
launcher's records equal the inline run's, and none is duplicated."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from test_suite import read_records, write_suite

from splitbench.bench import report
from splitbench.bench.driver import Driver
from splitbench.bench.launchers.submitit_jobs import SubmititLauncher
from splitbench.bench.plan import plan_suite
from splitbench.bench.point_records import RECORDS
from splitbench.bench.suite import execute_suite, suite_points
from splitbench.errors import ConfigError, SplitbenchError

STUDENT = "entropic_student-fp-resnet10n-beta0.1"
TEACHER = "classifier-resnet10n"
# Teacher, a student that trains 6 steps with a checkpoint after each (the point the local test interrupts),
# and a codec: after the teacher, the student and the codec can run side by side.
SUITE = """
experiments:
  - teacher.yaml
  - config: student.yaml
    set: {train.max_steps_per_epoch: 2, train.checkpoint_every: 1, train.stages.0.epochs: 2}
  - config: codec.yaml
    set: {method_args.codec: jpeg, method_args.quality: 50}
launcher: {cpus: 1, time_min: 10}
"""
COMPARED = ("run", "metrics", "data_size", "encoder", "config", "status")


def by_hash(out: Path) -> dict[str, dict]:
    records = read_records(out)
    assert len(records) == len({r["config_hash"] for r in records}), "a record was merged twice"
    assert sorted(p.stem for p in (out / RECORDS).glob("*.json")) == sorted(r["config_hash"] for r in records)
    return {r["config_hash"]: {k: r[k] for k in COMPARED} for r in records}


@pytest.fixture(scope="module")
def inline(tmp_path_factory) -> tuple[Path, dict[str, dict], float]:
    """The suite run inline once: (suite file, its records by hash, seconds)."""
    folder = tmp_path_factory.mktemp("launch")
    suite = write_suite(folder, SUITE)
    began = time.perf_counter()
    with single_threaded(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(report, "write_report", lambda *a, **k: {})
        summary = execute_suite(suite, folder / "inline", progress=False)
    assert not summary.failed and len(summary.ok) == 3
    return suite, by_hash(folder / "inline"), time.perf_counter() - began


@pytest.fixture
def no_report(monkeypatch):
    """The report is the end-to-end tests' business (tests/test_suite.py); here it only costs seconds."""
    monkeypatch.setattr(report, "write_report", lambda *a, **k: {})


@contextmanager
def single_threaded():
    """This process and the jobs it starts compute with one thread each: the same floats everywhere (the thread
    count changes float sums), and two jobs on two cores do not oversubscribe them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("OMP_NUM_THREADS", "1")
            yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def same_threads():
    with single_threaded():
        yield


# ---------------------------------------------------------------- the planner


def test_plan_orders_by_dependency_and_skips_recorded_points(tmp_path):
    text = """
experiments:
  - config: codec.yaml
    set: {method_args.codec: jpeg, method_args.quality: 50}
  - student.yaml
  - teacher.yaml
  - config: teacher.yaml          # the same run folder, evaluated with other settings: after the first
    set: {eval.batch_size: 8}
"""
    _, points = suite_points(write_suite(tmp_path, text))
    plan = plan_suite(points, tmp_path / "out", done=set())
    assert [(t.index, t.name) for t in plan.tasks] == [
        (2, TEACHER), (0, "input_codec-jpeg-resnet10n-quality50"), (1, STUDENT), (3, TEACHER)]
    needs = {t.index: t.needs for t in plan.tasks}
    assert needs == {2: {}, 0: {2: ("teacher", TEACHER)}, 1: {2: ("teacher", TEACHER)},
                     3: {2: ("run folder", TEACHER)}}
    # A recorded teacher is skipped and is nobody's dependency any more (no afterok on a finished job)
    plan = plan_suite(points, tmp_path / "out", done={points[2].config.hash()})
    assert plan.skipped == [2] and [t.index for t in plan.tasks] == [0, 1, 3]
    assert all(t.needs == {} for t in plan.tasks)


def test_multitask_composition_runs_after_its_heads_and_their_body():
    _, points = suite_points("suites/shapes_multitask.yaml")
    tasks = {t.name: t for t in plan_suite(points, Path("unused"), done=set()).tasks}
    order = list(tasks)
    composed = next(n for n in tasks if n.startswith("multitask-"))
    roles = sorted(role for role, _ in tasks[composed].needs.values())
    assert roles == ["body", "head", "head"]
    for _, run in tasks[composed].needs.values():
        assert order.index(run) < order.index(composed)
    head = next(n for n in tasks if n.startswith("multitask_head-"))
    assert [role for role, _ in tasks[head].needs.values()] == ["body"]


def test_launcher_block_is_validated_merged_and_kept_out_of_the_hash(tmp_path):
    base = "experiments:\n  - teacher.yaml\n  - student.yaml\n"
    _, plain = suite_points(write_suite(tmp_path, base, "plain.yaml"))
    text = """
experiments:
  - teacher.yaml
  - config: student.yaml
    launcher: {gpus: 4, time_min: 30}
launcher: {partition: gpu, time_min: 600, slurm: {qos: high}}
"""
    _, points = suite_points(write_suite(tmp_path, text, "cluster.yaml"))
    assert [p.config.hash() for p in points] == [p.config.hash() for p in plain]
    teacher, student = (p.resources for p in points)
    assert (teacher.gpus, teacher.processes, teacher.time_min, teacher.partition) == (0, 1, 600, "gpu")
    assert (student.gpus, student.processes, student.time_min, student.partition) == (4, 4, 30, "gpu")
    assert student.slurm == {"qos": "high"}
    for typo, expected in [("launcher: {gpu: 1}\n", "unknown key 'launcher.gpu' (did you mean 'gpus'?)"),
                           ("launcher: {time_min: 0}\n", "launcher.time_min")]:
        with pytest.raises(ConfigError, match=re.escape(expected)):
            suite_points(write_suite(tmp_path, base + typo, "typo.yaml"))
    _, points = suite_points(write_suite(tmp_path, text, "cluster.yaml"), resources=["partition=a100", "gpus=1"])
    assert [(p.resources.partition, p.resources.gpus, p.resources.time_min) for p in points] == [
        ("a100", 1, 600), ("a100", 1, 30)]
    with pytest.raises(ConfigError, match=re.escape("unknown key '--resources.partiton' (did you mean")):
        suite_points(write_suite(tmp_path, text, "cluster.yaml"), resources=["partiton=a100"])
    with pytest.raises(ConfigError, match=r"experiments.1.launcher.tme_min.*time_min"):
        suite_points(write_suite(tmp_path, base.replace("- student.yaml", "- {config: student.yaml, "
                                                        "launcher: {tme_min: 5}}"), "typo2.yaml"))


def test_bad_launcher_options_are_one_line_errors(tmp_path, capsys):
    from splitbench.cli import main

    suite = write_suite(tmp_path, "experiments: [teacher.yaml]\n")
    for args, expected in [(["--cluster", "local"], "--cluster local is for --launcher submitit"),
                           (["--address", "x:1"], "--address is for --launcher ray"),
                           (["--detach"], "--detach needs jobs that outlive this process"),
                           (["--max-parallel", "0"], "--max-parallel must be at least 1")]:
        assert main(["bench", str(suite), "--out", str(tmp_path / "out"), *args]) == 2
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "results.jsonl").exists()


# ---------------------------------------------------------------- Slurm's dependency rules, on a fake sbatch


FAKE_SBATCH = """#!{python}
import pathlib, sys
folder = pathlib.Path({folder!r})
n = len(list(folder.glob("*.sh"))) + 101
(folder / f"{{n}}.sh").write_text(pathlib.Path(sys.argv[-1]).read_text())
print(f"Submitted batch job {{n}}")
"""
FAKE_SACCT = """#!{python}
import sys
ids = [sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == "-j"]
print("JobID|State|NodeList")
for i in ",".join(ids).split(","):
    print(f"{{i}}|PENDING|None")
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """sbatch that keeps each script (job ids 101, 102, ...), sacct that says every job is pending, srun."""
    bin_dir, scripts = tmp_path / "bin", tmp_path / "sbatch"
    bin_dir.mkdir()
    scripts.mkdir()
    for name, text in [("sbatch", FAKE_SBATCH), ("sacct", FAKE_SACCT), ("srun", "#!/bin/sh\n")]:
        path = bin_dir / name
        path.write_text(text.format(python=sys.executable, folder=str(scripts)))
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return scripts


def sbatch_options(scripts: Path) -> dict[str, dict[str, str]]:
    """Job id -> its #SBATCH options."""
    out = {}
    for script in sorted(scripts.glob("*.sh")):
        lines = [line.removeprefix("#SBATCH --") for line in script.read_text().splitlines()
                 if line.startswith("#SBATCH --")]
        out[script.stem] = dict(line.split("=", 1) if "=" in line else (line, "") for line in lines)
    return out


def test_slurm_jobs_wait_with_afterok_only_for_unrecorded_teachers(tmp_path, fake_slurm):
    suite = write_suite(tmp_path / "cfg", SUITE.replace("launcher: {", "launcher: {partition: gpu, gpus: 2, "))
    out = tmp_path / "out"
    summary = execute_suite(suite, out, launcher="submitit", cluster="slurm", detach=True)
    assert summary.pending == [TEACHER, STUDENT, "input_codec-jpeg-resnet10n-quality50"] and not summary.failed
    jobs = sbatch_options(fake_slurm)
    assert list(jobs) == ["101", "102", "103"]
    assert "dependency" not in jobs["101"]
    for job in ("102", "103"):
        assert jobs[job]["dependency"] == "afterok:101" and jobs[job]["kill-on-invalid-dep"] == "yes"
    assert {j["partition"] for j in jobs.values()} == {"gpu"} and {j["ntasks-per-node"] for j in jobs.values()} == {"2"}
    assert {j["time"] for j in jobs.values()} == {"10"}
    # Submitted and still queued: a second run submits nothing again (sacct says pending)
    again = execute_suite(suite, out, launcher="submitit", cluster="slurm", detach=True)
    assert len(sbatch_options(fake_slurm)) == 3 and len(again.pending) == 3

    # With the teacher recorded, its students are submitted with no dependency at all
    _, points = suite_points(suite)
    plan = plan_suite(points, tmp_path / "out2", done={points[0].config.hash()})
    launcher = SubmititLauncher(tmp_path / "out2", "slurm")
    Driver(plan, launcher, tmp_path / "out2", max_parallel=None, progress=False, retrain=False).run(detach=True)
    jobs = sbatch_options(fake_slurm)
    assert list(jobs) == ["101", "102", "103", "104", "105"]
    assert "dependency" not in jobs["104"] and "dependency" not in jobs["105"]


def test_nodes_beyond_one_need_slurm(tmp_path):
    suite = write_suite(tmp_path, "experiments: [teacher.yaml]\nlauncher: {nodes: 2}\n")
    for launcher, where in [("inline", "--launcher inline"), ("submitit", "--cluster debug")]:
        with pytest.raises(SplitbenchError, match=f"launcher.nodes is 2, but {where} runs each point on one"):
            execute_suite(suite, tmp_path / "out", launcher=launcher, cluster="debug" if launcher != "inline" else None)
    assert not (tmp_path / "out" / "results.jsonl").exists()


# ---------------------------------------------------------------- submitit's executors, Ray


def test_submitit_debug_executor_matches_inline(inline, tmp_path, same_threads, no_report):
    suite, expected, _ = inline
    summary = execute_suite(suite, tmp_path / "out", launcher="submitit", cluster="debug", progress=False)
    assert not summary.failed and len(summary.ok) == 3
    assert by_hash(tmp_path / "out") == expected
    rerun = execute_suite(suite, tmp_path / "out", launcher="submitit", cluster="debug", progress=False)
    assert rerun.ok == [] and len(rerun.skipped) == 3 and by_hash(tmp_path / "out") == expected


def signal_local_job(job) -> None:
    """SIGUSR2 (what Slurm sends before a time limit) to the tasks of a local-executor job."""
    import psutil

    for task in psutil.Process(int(job.job_id)).children():
        os.kill(task.pid, signal.SIGUSR2)


def signal_slurm_job(job) -> None:
    subprocess.run(["scancel", "--signal=USR2", str(job.job_id)], check=True)


class Interrupter:
    """Notes the jobs the launcher submits, and signals the student's job once its training has checkpointed."""

    def __init__(self, monkeypatch, out: Path, interrupt) -> None:
        self.jobs: dict = {}
        self.done = threading.Event()
        submit = SubmititLauncher.submit

        def noting(launcher, task, spec, after):
            job = submit(launcher, task, spec, after)
            self.jobs[task.name] = job
            return job

        monkeypatch.setattr(SubmititLauncher, "submit", noting)
        self.thread = threading.Thread(target=self._watch, args=(out / STUDENT / "checkpoint.pt", interrupt),
                                       daemon=True)
        self.thread.start()

    def _watch(self, checkpoint: Path, interrupt) -> None:
        while not self.done.is_set():
            if checkpoint.exists() and STUDENT in self.jobs:
                interrupt(self.jobs[STUDENT])
                return
            time.sleep(0.01)

    def log(self) -> str:
        self.done.set()
        return Path(str(self.jobs[STUDENT].paths.stderr)).read_text()


def assert_resumed(log: str) -> None:
    assert "timed out or preempted; requeued" in log
    assert f"resuming {STUDENT} at stage" in log  # from its checkpoint, not from the start


def test_local_executor_two_in_flight_requeues_a_timed_out_point(inline, tmp_path, monkeypatch, same_threads,
                                                                 no_report):
    suite, expected, inline_seconds = inline
    out = tmp_path / "out"
    interrupter = Interrupter(monkeypatch, out, signal_local_job)
    began = time.perf_counter()
    try:
        summary = execute_suite(suite, out, launcher="submitit", cluster="local", max_parallel=2, progress=True)
    finally:
        log = interrupter.log()
    seconds = time.perf_counter() - began
    assert not summary.failed and len(summary.ok) == 3
    assert_resumed(log)
    assert "\r" not in log and "bottleneck 1/2" in log  # job logs get lines, not carriage-return bars
    assert by_hash(out) == expected  # the resumed point's record is the uninterrupted one's, once
    print(f"local executor, 2 in flight: {seconds:.1f} s; inline: {inline_seconds:.1f} s "
          f"(ratio {seconds / inline_seconds:.2f})")


@pytest.mark.skipif(not os.environ.get("SPLITBENCH_SLURM_TEST"), reason="opt-in: needs a running Slurm, e.g. the "
                    "single-node one of tests/slurm/local_slurm.sh (README, 'Suites on a cluster')")
def test_real_slurm_matches_inline(inline, tmp_path, monkeypatch, same_threads, no_report):
    """Through sbatch: the student and the codec wait on the teacher's job with afterok; the student, signalled
    as before a time limit, is requeued by Slurm and resumes."""
    suite, expected, _ = inline
    out = tmp_path / "out"
    interrupter = Interrupter(monkeypatch, out, signal_slurm_job)
    try:
        summary = execute_suite(suite, out, launcher="submitit", cluster="slurm", progress=True)
    finally:
        log = interrupter.log()
    assert not summary.failed and len(summary.ok) == 3
    assert_resumed(log)
    scripts = "".join(p.read_text() for p in (out / "jobs" / "submitit").rglob("*_submission.sh"))
    assert scripts.count(f"--dependency=afterok:{interrupter.jobs[TEACHER].job_id}") == 2
    assert by_hash(out) == expected


def test_ray_local_cluster_matches_inline(inline, tmp_path, same_threads, no_report):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'splitbench[ray]'); make test installs it")
    from splitbench.bench.launchers.ray_tasks import RayLauncher

    suite, expected, _ = inline
    launcher = RayLauncher(num_cpus=2)
    summary = execute_suite(suite, tmp_path / "out", launcher=launcher, progress=False)
    assert not summary.failed and len(summary.ok) == 3
    assert by_hash(tmp_path / "out") == expected


def test_ray_without_ray_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    from splitbench.bench.launchers.ray_tasks import RayLauncher

    with pytest.raises(SplitbenchError, match=r"pip install 'splitbench\[ray\]'"):
        RayLauncher()


def test_records_written_by_jobs_are_merged_once(inline, tmp_path, no_report):
    """A record file that a detached job left (and results.jsonl without it) is merged by the next run, once."""
    suite, expected, _ = inline
    out = tmp_path / "out"
    source = Path(str(suite).replace("suite.yaml", "inline"))
    (out / RECORDS).mkdir(parents=True)
    for path in (source / RECORDS).glob("*.json"):
        (out / RECORDS / path.name).write_text(path.read_text())
    first = execute_suite(suite, out, progress=False)
    second = execute_suite(suite, out, progress=False)
    assert first.ok == second.ok == [] and len(second.skipped) == 3
    assert by_hash(out) == expected
    assert json.loads((out / RECORDS / f"{next(iter(expected))}.json").read_text())[0]["status"] == "ok"


# ---------------------------------------------------------------- DDP inside a job, logs off a terminal


def test_a_two_process_point_trains_under_ddp_in_its_job_as_under_torchrun(tmp_path, same_threads, no_report):
    """submitit starts one task per process (each a DDP rank); inline, the unit starts torchrun. Same weights."""
    suite = write_suite(tmp_path, "experiments: [teacher.yaml]\nlauncher: {processes_per_node: 2, cpus: 1}\n")
    records = {}
    for launcher, cluster in [("submitit", "local"), ("inline", None)]:
        out = tmp_path / launcher
        summary = execute_suite(suite, out, launcher=launcher, cluster=cluster, progress=False)
        assert not summary.failed
        records[launcher] = by_hash(out)
    assert records["submitit"] == records["inline"]
    logs = sorted((tmp_path / "submitit" / "jobs" / "submitit").rglob("*_log.err"))
    assert [p.name.split("_")[1] for p in logs] == ["0", "1"]  # two tasks
    assert f"training {TEACHER} on 96 samples (cpu, 2 processes)" in logs[0].read_text()


def test_a_process_group_started_elsewhere_is_used_and_left_alone(monkeypatch):
    import socket

    import torch.distributed as dist

    from splitbench.training.distributed import cleanup, init_distributed

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        monkeypatch.setenv("WORLD_SIZE", "1")
        assert init_distributed(torch.device("cpu")).world_size == 1
        monkeypatch.setenv("WORLD_SIZE", "2")  # what a launcher's environment says; the group is already up
        info = init_distributed(torch.device("cpu"))
        assert not info.owns_group
        cleanup(info)
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


def test_progress_off_a_terminal_is_one_line_per_n_steps(caplog, monkeypatch):
    from splitbench import progress

    monkeypatch.setattr(progress, "is_terminal", lambda: False)
    caplog.set_level("INFO", logger="splitbench.progress")
    bar = progress.progress_bar(10, "train 1/2", enabled=True, every=4, unit="step")
    for step in range(10):
        bar.set_postfix({"loss": f"{1 / (step + 1):.3g}"}, refresh=False)
        bar.update(1)
    bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" step")[0] for line in lines] == ["train 1/2 4/10", "train 1/2 8/10", "train 1/2 10/10"]
    assert "loss 0.1" in lines[-1] and not any("\r" in line for line in lines)
    monkeypatch.setattr(progress, "is_terminal", lambda: True)
    assert not isinstance(progress.progress_bar(10, "x", enabled=True, every=4), progress.LineProgress)
    assert not isinstance(progress.progress_bar(10, "x", enabled=False, every=4), progress.LineProgress)
