"""Running a study's tasks outside this process: local subprocesses, or a Slurm job array
through submitit (``pip install 'cffdyn[cluster]'``).

Both executors run the tasks of :mod:`vit.study_tasks` (one per seed, or per seed batch, in
every cell) with :func:`vit.study_tasks.run_planned_task`, so a laptop, one GPU and a cluster
share one code path and one layout; :func:`vit.study.collect_study` assembles ``study.json``.

``local``     each task is a subprocess: submitit's ``LocalExecutor`` (logs under
              ``OUT/logs``), or, where submitit is not installed, a plain process pool
              (``python -m vit.study_exec``, one log per task under ``OUT/logs``); at most
              ``workers`` at a time (default: one; on CUDA one per visible GPU, each task
              pinned to its own GPU).
``submitit``  a Slurm job array (``submitit.SlurmExecutor``): one array task per study task,
              options from :class:`SlurmOptions`; arrays longer than the site's
              ``MaxArraySize`` are split into several arrays.  A task is checkpointable: on
              preemption or time-out Slurm signals it (``--signal=USR2@90``), submitit
              requeues that array task (not the array), and the task resumes from its runs'
              epoch checkpoints.

Submitting never runs a task twice: tasks already complete are not submitted, a study whose
tasks are held by a live process is refused (one line), and a second submission's copy of a
task that another one runs finds its claim and exits.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from cffdyn.errors import UserError
from vit.study import collect_study, projected_wall_s
from vit.study_config import StudyConfig
from vit.study_tasks import (StudyTask, check_not_running, record_submission, run_planned_task, task_state,
                             write_plan)

__all__ = ["EXECUTORS", "SlurmOptions", "slurm_parameters", "array_chunks", "TaskJob", "submit_study",
           "import_submitit"]

EXECUTORS = ("local", "submitit")
LOGS_DIR = "logs"
#: local tasks are never timed out (submitit's LocalExecutor default is 2 minutes)
LOCAL_TIMEOUT_MIN = 60 * 24 * 365


@dataclass(frozen=True)
class SlurmOptions:
    """Slurm side of ``--executor submitit``.

    partition: ``--partition`` (None: the site's default partition).
    gpus_per_task: GPUs of each array task (None: 1 when the study's device is cuda, else 0).
    cpus_per_task: CPUs of each array task (also its torch threads).
    time_min: time limit per array task in minutes (None: twice the projected task time,
        rounded up to 30 minutes, at least 60 and at most 24 h; a task that runs out is
        requeued from its checkpoints up to ``max_requeue`` times).
    array_parallelism: array tasks running at once (``--array=0-N%P``).
    max_array_size: the site's limit on array length (Slurm's default ``MaxArraySize`` allows
        1,000 tasks per array here); longer studies are submitted as several arrays.
    max_requeue: time-outs after which a task is not requeued again.
    extra: further sbatch options, ``(name, value)`` (value True: a flag without value).
    setup: shell lines run before the task (``module load ...``).
    """

    partition: str | None = None
    gpus_per_task: int | None = None
    cpus_per_task: int = 4
    time_min: int | None = None
    array_parallelism: int = 256
    max_array_size: int = 1000
    max_requeue: int = 3
    extra: tuple[tuple[str, Any], ...] = ()
    setup: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("cpus_per_task", "array_parallelism", "max_array_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--slurm-{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.gpus_per_task is not None and self.gpus_per_task < 0:
            raise ValueError(f"--slurm-gpus-per-task must be >= 0, got {self.gpus_per_task}")
        if self.time_min is not None and self.time_min < 1:
            raise ValueError(f"--slurm-time must be >= 1 minute, got {self.time_min}")
        if self.max_requeue < 0:
            raise ValueError(f"--slurm-max-requeue must be >= 0, got {self.max_requeue}")


def import_submitit(executor: str):
    """submitit, or a one-line UserError naming the extra that installs it."""
    try:
        import submitit
    except ImportError:
        raise UserError(f"--executor {executor} needs the submitit package, which is not installed",
                        "pip install 'cffdyn[cluster]' (or pip install submitit)") from None
    return submitit


def _gpus(cfg: StudyConfig, opts: SlurmOptions) -> int:
    return opts.gpus_per_task if opts.gpus_per_task is not None else (1 if cfg.base.device == "cuda" else 0)


def _task_minutes(cfg: StudyConfig, task: StudyTask, device: str) -> float | None:
    w = projected_wall_s(cfg, device)
    return None if w is None else w * len(task.seed_index) / cfg.n_seeds / 60.0


def slurm_parameters(cfg: StudyConfig, tasks: Sequence[StudyTask], opts: SlurmOptions) -> dict[str, Any]:
    """The ``SlurmExecutor.update_parameters`` keywords of the study's array tasks."""
    gpus = _gpus(cfg, opts)
    time_min = opts.time_min
    if time_min is None:
        per_task = max((_task_minutes(cfg, t, "cuda" if gpus else "cpu") or 0.0) for t in tasks) if tasks else 0.0
        time_min = int(min(24 * 60, max(60, 30 * math.ceil(2 * per_task / 30))))
    params: dict[str, Any] = {"job_name": "cffdyn-study", "time": time_min, "nodes": 1, "ntasks_per_node": 1,
                              "cpus_per_task": opts.cpus_per_task, "array_parallelism": opts.array_parallelism,
                              "setup": [f"export OMP_NUM_THREADS={opts.cpus_per_task}", *opts.setup]}
    if gpus:
        params["gpus_per_node"] = gpus
    if opts.partition:
        params["partition"] = opts.partition
    if opts.extra:
        params["additional_parameters"] = dict(opts.extra)
    return params


def array_chunks(items: Sequence[Any], max_size: int) -> list[list[Any]]:
    """``items`` in consecutive arrays of at most ``max_size``."""
    return [list(items[i:i + max_size]) for i in range(0, len(items), max_size)]


class TaskJob:
    """The callable submitit runs for one task; checkpointable: on preemption or time-out
    submitit calls :meth:`checkpoint` and requeues the same call, which resumes from the
    runs' checkpoints on disk (nothing but the task id travels)."""

    def __init__(self, out_dir: str, index: int, plan_hash: str) -> None:
        self.out_dir, self.index, self.plan_hash = str(out_dir), int(index), plan_hash

    def __call__(self) -> dict[str, Any]:
        return run_planned_task(self.out_dir, self.index, self.plan_hash)

    def checkpoint(self, *args: Any, **kwargs: Any):
        from submitit.helpers import DelayedSubmission
        return DelayedSubmission(self)


def _visible_gpus() -> int:
    try:
        import torch
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:   # noqa: BLE001 -- no usable CUDA: CPU tasks
        return 0


def submit_study(cfg: StudyConfig, out_dir: str | Path, *, executor: str, slurm: SlurmOptions | None = None,
                 workers: int | None = None, wait: bool = True, seeds_per_task: int | None = None,
                 progress: bool = True, use_submitit: bool | None = None) -> dict[str, Any]:
    """Run the study's unfinished tasks with ``executor`` and (``wait``) assemble study.json.

    Returns the collected study (``wait``) or ``{"status": "submitted", "jobs": {task: (job id,
    log)}}``.  ``use_submitit=False`` forces the process pool for ``local``."""
    if executor not in EXECUTORS:
        raise UserError(f"unknown executor {executor!r}", f"choose one of {', '.join(EXECUTORS)}")
    out = Path(out_dir).absolute()
    if executor == "submitit":
        submitit = import_submitit(executor)
    elif use_submitit is not False:
        try:
            import submitit
        except ImportError:
            submitit = None
        if use_submitit and submitit is None:
            import_submitit(executor)
    else:
        submitit = None
    check_not_running(out)
    out.mkdir(parents=True, exist_ok=True)
    tasks, plan_hash = write_plan(out, cfg, seeds_per_task)
    todo = [t for t in tasks if task_state(cfg, out, t)["state"] != "complete"]
    say = (lambda msg: print(f"[study] {msg}", file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    say(f"{len(tasks)} tasks ({len(tasks) - len(todo)} complete, {len(todo)} to run) with --executor {executor}; "
        f"logs under {out / LOGS_DIR}")
    if executor == "submitit":
        jobs = _submit_slurm(submitit, cfg, out, todo, plan_hash, slurm or SlurmOptions(), say)
        if not wait:
            return {"status": "submitted", "jobs": {i: (j.job_id, str(j.paths.stderr)) for i, j in jobs.items()}}
        _wait(jobs, cfg, out, tasks, say)
    else:
        n = workers or max(1, _visible_gpus() if cfg.base.device in ("cuda", "auto") else 1)
        if submitit is not None:
            _run_local_submitit(submitit, cfg, out, todo, tasks, plan_hash, n, say)
        else:
            _run_local_pool(cfg, out, todo, tasks, plan_hash, n, say)
    return collect_study(out, cfg)


def _submit_slurm(submitit, cfg: StudyConfig, out: Path, todo: list[StudyTask], plan_hash: str,
                  opts: SlurmOptions, say) -> dict[int, Any]:
    try:
        ex = submitit.SlurmExecutor(folder=out / LOGS_DIR, max_num_timeout=opts.max_requeue)
    except RuntimeError as exc:      # no srun on PATH
        raise UserError(f"--executor submitit needs a Slurm cluster ({exc})",
                        "submit from the cluster's login node, or use --executor local") from None
    try:
        ex.update_parameters(**slurm_parameters(cfg, todo, opts))
    except ValueError as exc:
        raise UserError(f"Slurm options rejected by submitit: {str(exc).splitlines()[0]}",
                        "see 'cffdyn vit study --help' (--slurm-*)") from None
    jobs: dict[int, Any] = {}
    for chunk in array_chunks(todo, opts.max_array_size):
        with ex.batch():
            subs = [(t.index, ex.submit(TaskJob(str(out), t.index, plan_hash))) for t in chunk]
        jobs.update(subs)
        say(f"submitted {len(chunk)} array task(s) as job {subs[0][1].job_id.split('_')[0]}")
    record_submission(out, "submitit", {i: (j.job_id, str(j.paths.stderr)) for i, j in jobs.items()})
    return jobs


def _report(cfg: StudyConfig, out: Path, task: StudyTask, say) -> None:
    s = task_state(cfg, out, task)
    extra = f": {s['error']}; log {s.get('log')}" if s["state"] != "complete" else ""
    say(f"task {task.index} (seeds {', '.join(map(str, task.seeds))}) {s['state']}{extra}")


def _wait(jobs: dict[int, Any], cfg: StudyConfig, out: Path, tasks: list[StudyTask], say,
          poll_s: float = 0.5) -> None:
    pending = dict(jobs)
    while pending:
        for i, job in list(pending.items()):
            if job.done():
                del pending[i]
                _report(cfg, out, tasks[i], say)
        if pending:
            time.sleep(poll_s)


@contextlib.contextmanager
def _stop_on_interrupt(running: dict[int, Any], stop) -> Iterator[None]:
    """Ctrl-C in the submitting process interrupts the running local tasks too (each records
    ``interrupted`` and frees its claim), so the same command resumes them."""
    try:
        yield
    except KeyboardInterrupt:
        for job in running.values():
            try:
                stop(job)
            except Exception:   # noqa: BLE001 -- already gone
                pass
        time.sleep(2.0)
        raise


def _run_local_submitit(submitit, cfg: StudyConfig, out: Path, todo: list[StudyTask], tasks: list[StudyTask],
                        plan_hash: str, workers: int, say) -> None:
    ex = submitit.LocalExecutor(folder=out / LOGS_DIR)
    gpus = _visible_gpus() if cfg.base.device in ("cuda", "auto") else 0
    pending, running = list(todo), {}
    with _stop_on_interrupt(running, lambda job: job.cancel(check=False)):
        _local_loop(ex, cfg, out, pending, running, tasks, plan_hash, workers, gpus, say)


def _local_loop(ex, cfg, out, pending, running, tasks, plan_hash, workers, gpus, say) -> None:
    slot = 0
    while pending or running:
        while pending and len(running) < workers:
            t = pending.pop(0)
            ex.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, gpus_per_node=1 if gpus else 0,
                                 visible_gpus=[slot % gpus] if gpus else ())
            slot += 1
            job = ex.submit(TaskJob(str(out), t.index, plan_hash))
            running[t.index] = job
            record_submission(out, "local", {t.index: (job.job_id, str(job.paths.stderr))})
        for i, job in list(running.items()):
            if job.done():
                del running[i]
                _report(cfg, out, tasks[i], say)
        time.sleep(0.2)


def _run_local_pool(cfg: StudyConfig, out: Path, todo: list[StudyTask], tasks: list[StudyTask], plan_hash: str,
                    workers: int, say) -> None:
    """The local executor without submitit: one ``python -m vit.study_exec`` per task."""
    gpus = _visible_gpus() if cfg.base.device in ("cuda", "auto") else 0
    (out / LOGS_DIR).mkdir(parents=True, exist_ok=True)
    pending, running = list(todo), {}
    with _stop_on_interrupt(running, lambda proc: proc.send_signal(signal.SIGINT)):
        _pool_loop(cfg, out, pending, running, tasks, plan_hash, workers, gpus, say)


def _pool_loop(cfg, out, pending, running, tasks, plan_hash, workers, gpus, say) -> None:
    slot = 0
    while pending or running:
        while pending and len(running) < workers:
            t = pending.pop(0)
            log = out / LOGS_DIR / f"task-{t.index:04d}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}.log"
            env = dict(os.environ, CFFDYN_TASK_LOG=str(log))
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
            slot += 1
            fh = open(log, "ab")
            proc = subprocess.Popen([sys.executable, "-m", "vit.study_exec", str(out), str(t.index), plan_hash],
                                    stdout=fh, stderr=subprocess.STDOUT, env=env)
            fh.close()
            running[t.index] = proc
            record_submission(out, "local", {t.index: (str(proc.pid), str(log))})
        for i, proc in list(running.items()):
            if proc.poll() is not None:
                del running[i]
                _report(cfg, out, tasks[i], say)
        time.sleep(0.2)


def _worker_main(argv: Sequence[str]) -> int:
    """``python -m vit.study_exec OUT INDEX PLAN_HASH``: one task (the process pool's worker)."""
    out, index, plan_hash = argv
    run_planned_task(out, int(index), plan_hash)
    return 0


if __name__ == "__main__":
    from cffdyn.errors import guarded
    sys.exit(guarded(_worker_main, sys.argv[1:], "python -m vit.study_exec"))
