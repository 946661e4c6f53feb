"""A study as a list of tasks, and running one task (the one place that schedules a study's runs).

A task covers one seed (or a batch of consecutive seeds) in EVERY cell, seed-major, so a task
that fails loses whole matched pairs and never half a pair: the paired statistics of
:mod:`vit.stats` see a seed in all cells or not at all.  The same task runs in this process
(:func:`vit.study.run_study`), as a local subprocess or as a Slurm array task
(:mod:`vit.study_exec`); every way writes the same files.

Files under the study directory ``OUT``
---------------------------------------
``tasks/plan.json``         the study config and its task list (:func:`write_plan`); a worker
                            reads its task from here, ``--collect OUT`` reads the config.
``tasks/task-<i>.claim``    who runs task ``i`` now (host, pid, job id, log): created with
                            ``O_EXCL``, so two submissions never run one task twice; refreshed
                            every :data:`HEARTBEAT_S` seconds; taken over when its holder is gone
                            (same host: the pid has exited; other host: no heartbeat for
                            :data:`STALE_S`; same job id: the job was requeued).
``tasks/task-<i>.json``     the task's record, written atomically when it ends: ``complete``
                            (its runs, probes, timing) or ``failed``/``interrupted`` with the
                            error and the log path.
``runs/...``                one :func:`vit.train.train_run` directory per run (result.json is
                            written atomically; ``ckpt.pt`` after every epoch, so a killed or
                            requeued task resumes its interrupted run where it stopped).
``runs/.../failed.json``    a run that diverged (:class:`vit.method.RunDiverged`: a non-finite
                            loss or metric) instead of a ``result.json``: its config and the
                            one-line reason.  The task goes on with its other runs and counts as
                            complete; the study leaves the run out of its statistics and says how
                            many failed.  Training is deterministic, so a rerun reads the failure
                            back instead of diverging again; delete the file to retry the run.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from cffdyn.errors import UserError
from cffdyn.io import HASH_KEY, atomic_write_json, pid_alive, read_json
from cffdyn.records import record_header, reusable_record
from vit.study_config import PlannedRun, StudyConfig, cell_name, planned_runs, probe_config, probe_path
from vit.config import TrainConfig
from vit.method import RunDiverged
from vit.train import recorded_result, train_run

__all__ = ["TASKS_DIR", "TASK_SCHEMA", "HEARTBEAT_S", "STALE_S", "StudyTask", "plan_tasks", "default_seeds_per_task", "MAX_BATCHED_SEEDS",
           "write_plan", "read_plan", "plan_path", "task_record_path", "claim_path", "read_claim", "claim_alive",
           "TaskClaimed", "Claim", "acquire_claim", "check_not_running", "this_owner", "DatasetCache", "run_task", "run_planned_task",
           "read_result", "PROBE_SCHEMA", "read_probe", "FAILED_NAME", "read_failure", "record_failure", "run_finished", "task_state", "record_submission", "submitted_logs"]

TASKS_DIR = "tasks"
TASK_SCHEMA = 1
#: seconds between refreshes of a held claim, and the age after which a claim held on another
#: host counts as abandoned (a holder on this host is checked by its pid instead)
HEARTBEAT_S = 60.0
STALE_S = 600.0


@dataclass(frozen=True)
class StudyTask:
    """Task ``index``: the seeds at positions ``seed_index`` of every cell (seed-major runs)."""

    index: int
    seed_index: tuple[int, ...]
    runs: tuple[tuple[tuple[Any, ...], int], ...]
    probe_seeds: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"task-{self.index:04d}"

    @property
    def seeds(self) -> list[int]:
        return sorted({sd for _, sd in self.runs})

    def planned(self, cfg: StudyConfig, out: Path) -> list[PlannedRun]:
        """The task's runs under ``out``, in order, each with its config and directory."""
        return planned_runs(cfg, out, self.runs)


#: seeds of one task of a seed-batched study by default: the batch measured on one H100
#: (``recorded/vit/wall_model``, :func:`vit.study.wall_model`); more seeds make more tasks, each
#: one GPU pass
MAX_BATCHED_SEEDS = 7


def default_seeds_per_task(cfg: StudyConfig) -> int:
    """One seed per task; a seed-batched study up to :data:`MAX_BATCHED_SEEDS` seeds per task."""
    return min(cfg.n_seeds, MAX_BATCHED_SEEDS) if cfg.batched else 1


def plan_tasks(cfg: StudyConfig, seeds_per_task: int | None = None) -> list[StudyTask]:
    """The study's tasks; their runs, concatenated, are :func:`vit.study_config.cell_runs`."""
    k = default_seeds_per_task(cfg) if seeds_per_task is None else int(seeds_per_task)
    if k < 1:
        raise ValueError(f"seeds per task must be >= 1, got {k}")
    cells = cfg.cells()
    tasks = []
    for t, i0 in enumerate(range(0, cfg.n_seeds, k)):
        idx = tuple(range(i0, min(i0 + k, cfg.n_seeds)))
        runs = tuple((tuple(cell), cfg.seeds(cell)[i]) for i in idx for cell in cells)
        probes = tuple(dict.fromkeys(sd for _, sd in runs)) if cfg.probe else ()
        tasks.append(StudyTask(t, idx, runs, probes))
    return tasks


# ----------------------------------------------------------------------------- plan
def plan_path(out: Path) -> Path:
    return Path(out) / TASKS_DIR / "plan.json"


def task_record_path(out: Path, task: StudyTask | int) -> Path:
    i = task if isinstance(task, int) else task.index
    return Path(out) / TASKS_DIR / f"task-{i:04d}.json"


def claim_path(out: Path, task: StudyTask | int) -> Path:
    return task_record_path(out, task).with_suffix(".claim")


def _plan_dict(cfg: StudyConfig, seeds_per_task: int, tasks: Sequence[StudyTask]) -> dict[str, Any]:
    return json.loads(json.dumps({
        "schema": TASK_SCHEMA, "config": cfg.to_dict(), "seeds_per_task": seeds_per_task,
        "tasks": [{"task": t.index, "seed_index": list(t.seed_index), "seeds": t.seeds,
                   "runs": [{"cell": dict(zip(cfg.factor_names, c)), "seed": sd} for c, sd in t.runs],
                   "probe_seeds": list(t.probe_seeds)} for t in tasks]}))


_PLAN_KEYS = ("schema", "config", "seeds_per_task", "tasks")


def _hash(d: Mapping[str, Any]) -> str:
    """Digest of the plan's own keys (keys a writer adds to every record do not count)."""
    return hashlib.sha256(json.dumps({k: d.get(k) for k in _PLAN_KEYS}, sort_keys=True).encode()).hexdigest()[:16]


def write_plan(out: Path, cfg: StudyConfig, seeds_per_task: int | None = None) -> tuple[list[StudyTask], str]:
    """Write ``tasks/plan.json`` (unchanged if it already holds this plan); returns the tasks
    and the plan's hash, which a submitted task checks before it runs."""
    k = default_seeds_per_task(cfg) if seeds_per_task is None else int(seeds_per_task)
    tasks = plan_tasks(cfg, k)
    d = _plan_dict(cfg, k, tasks)
    p = plan_path(out)
    if not p.is_file() or _hash(read_json(p, expect=dict)) != _hash(d):
        atomic_write_json(p, d)
    return tasks, _hash(d)


def read_plan(out: Path) -> tuple[StudyConfig, list[StudyTask], str]:
    """The config, tasks and plan hash recorded in ``OUT/tasks/plan.json``."""
    p = plan_path(out)
    if not p.is_file():
        raise UserError(f"{out} holds no study plan ({p} is missing)",
                        "give the --out directory of a study started with this version of cffdyn")
    d = read_json(p, expect=dict)
    if d.get("schema") != TASK_SCHEMA:
        raise UserError(f"{p} has plan schema {d.get('schema')!r}, this code reads {TASK_SCHEMA}",
                        "rerun the study command, which rewrites the plan (finished runs are reused)")
    cfg = StudyConfig.from_dict(d["config"])
    return cfg, plan_tasks(cfg, d["seeds_per_task"]), _hash(d)


# ----------------------------------------------------------------------------- claims
def this_owner() -> dict[str, Any]:
    """Who is running: host, pid, the submitit job id and log (None outside submitit)."""
    job_id = log = None
    if os.environ.get("SUBMITIT_EXECUTOR"):
        import submitit
        env = submitit.JobEnvironment()
        job_id, log = str(env.job_id), str(env.paths.stderr)
    elif os.environ.get("CFFDYN_TASK_LOG"):        # the process-pool worker of vit.study_exec
        log = os.environ["CFFDYN_TASK_LOG"]
    return {"host": socket.gethostname(), "pid": os.getpid(), "job_id": job_id, "log": log,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "token": uuid.uuid4().hex}


class TaskClaimed(UserError):
    """The task is held by a live holder (another submission runs it)."""

    def __init__(self, path: Path, holder: Mapping[str, Any]) -> None:
        self.holder = dict(holder)
        who = f"pid {holder.get('pid')} on {holder.get('host')}" + (
            f" (job {holder['job_id']})" if holder.get("job_id") else "")
        super().__init__(f"{path.parent.parent} is already being run by another submission: {path.stem} is held by "
                         f"{who} since {holder.get('started')}",
                         f"wait for it to finish (then 'cffdyn vit study --collect {path.parent.parent}'), "
                         f"or give another --out")


def read_claim(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}          # torn by a killed writer: no live holder can be named


def claim_alive(path: Path, holder: Mapping[str, Any] | None, me: Mapping[str, Any] | None = None) -> bool:
    """Whether ``holder`` still runs the task (see module doc); a requeued job (same job id as
    ``me``) never counts its own earlier attempt as alive."""
    if not holder:
        return False
    if me is not None and me.get("job_id") and holder.get("job_id") == me.get("job_id"):
        return False
    if holder.get("host") == socket.gethostname():
        pid = holder.get("pid")
        if not isinstance(pid, int) or not pid_alive(pid):
            return False
        # the pid of a dead holder may have been reused: a live holder refreshes its heartbeat
        try:
            return time.time() - path.stat().st_mtime < STALE_S
        except FileNotFoundError:
            return False
    try:
        return time.time() - path.stat().st_mtime < STALE_S
    except FileNotFoundError:
        return False


class Claim:
    """A held task claim: refreshed by a heartbeat thread until :meth:`release`."""

    def __init__(self, path: Path, owner: dict[str, Any]) -> None:
        self.path, self.owner = path, owner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"claim {path.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def release(self) -> None:
        self._stop.set()
        holder = read_claim(self.path)
        if holder and holder.get("token") == self.owner["token"]:
            self.path.unlink(missing_ok=True)


def acquire_claim(out: Path, task: StudyTask | int, owner: dict[str, Any] | None = None) -> Claim:
    """Claim the task or raise :class:`TaskClaimed` naming the live holder."""
    owner = owner or this_owner()
    path = claim_path(out, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(owner).encode()
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = read_claim(path)
            if holder is None:
                continue                         # released meanwhile: try again
            if claim_alive(path, holder, owner):
                raise TaskClaimed(path, holder)
            # abandoned: move it aside atomically, so of two takers exactly one succeeds
            try:
                os.replace(path, path.with_name(f".{path.name}.{owner['token']}.stale"))
            except FileNotFoundError:
                continue
            path.with_name(f".{path.name}.{owner['token']}.stale").unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return Claim(path, owner)
    holder = read_claim(path) or {}
    raise TaskClaimed(path, holder)


def check_not_running(out: Path) -> None:
    """Refuse (one line) a study directory with a task held by a live process."""
    for p in sorted((Path(out) / TASKS_DIR).glob("task-*.claim")):
        holder = read_claim(p)
        if holder and claim_alive(p, holder):
            raise TaskClaimed(p, holder)


# ----------------------------------------------------------------------------- running a task
class DatasetCache:
    """Datasets loaded once per (dataset, root, subset, split seed, size), one held at a time
    (runs are seed-major); a missing dataset is one line naming the option."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._data: Any = None

    def __call__(self, rc: TrainConfig) -> Any:
        from vit.config import data_key, load_run_dataset

        key = data_key(rc)
        if key != self._key:
            self._key, self._data = None, None
            try:
                self._data = load_run_dataset(rc)
            except FileNotFoundError as exc:
                raise UserError(f"dataset {rc.dataset!r} not found ({exc})",
                                "give the directory that holds its files with --data-root DIR "
                                "(or --set data_root=DIR)") from None
            self._key = key
        return self._data


def read_result(rc: TrainConfig, rd: Path) -> dict[str, Any] | None:
    """The recorded ``result.json`` of run ``rd``: None if absent or without a content hash
    (recomputed, :func:`vit.train.recorded_result`); one line if edited or not a result;
    ValueError if it holds another config."""
    return recorded_result(rd / "result.json", rc.to_dict())


FAILED_NAME = "failed.json"
FAILED_SCHEMA = 1


def read_failure(rc: TrainConfig, rd: Path) -> dict[str, Any] | None:
    """The recorded divergence of run ``rd`` (``failed.json``) when it is one of config ``rc``;
    None otherwise (none, damaged, edited or of another config: the run is trained again)."""
    return reusable_record(rd / FAILED_NAME, rc.to_dict(), schema=FAILED_SCHEMA,
                           when=lambda r: r.get("status") == "diverged" and isinstance(r.get("reason"), str),
                           unhashed="and the run is trained again")


def record_failure(rc: TrainConfig, rd: Path, exc: RunDiverged) -> dict[str, Any]:
    """Write ``rd/failed.json`` (atomically, hashed) for run ``rc`` that raised ``exc``; return it."""
    rec = {**record_header(FAILED_SCHEMA, rc.to_dict()), "status": "diverged", "reason": str(exc), "recorded": _now()}
    atomic_write_json(rd / FAILED_NAME, rec)
    return rec


PROBE_SCHEMA = 1
_PROBE_KEYS = ("seed", "val_acc", "test_acc", "protocol")


def read_probe(cfg: StudyConfig, out: Path, seed: int) -> dict[str, Any] | None:
    """``seed``'s recorded raw-pixel probe (``runs/probe__seed<k>__<hash>.json``) when it is an
    intact record of its config (:func:`vit.study_config.probe_config`), without the record's
    header keys; None otherwise (none, edited, unhashed, another config or schema: trained again)."""
    rec = reusable_record(probe_path(out, cfg, seed), probe_config(cfg, seed).to_dict(), schema=PROBE_SCHEMA,
                          keys=_PROBE_KEYS, unhashed="and the probe is trained again")
    return None if rec is None else {k: v for k, v in rec.items() if k not in ("schema", "config", HASH_KEY)}


def run_finished(rc: TrainConfig, rd: Path) -> bool:
    """A run is finished when it has a result of its config or a recorded divergence."""
    return read_result(rc, rd) is not None or read_failure(rc, rd) is not None


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _train_batched(cfg: StudyConfig, out: Path, runs: Sequence[PlannedRun]) -> set[tuple]:
    """Seed-batched tasks: per cell, the unfinished seeds of the task's ``runs`` in one pass of
    :func:`vit.train.train_runs` (which writes each seed's ``result.json``); a killed pass
    resumes from its checkpoint.  A seed that diverges is recorded as failed and the others are
    trained again in a pass without it (a smaller stack: each result's ``seed_batch`` records
    its layout).  Returns the (cell, seed) trained or failed now."""
    from vit import train as vtrain

    trained = set()
    for cell in cfg.cells():
        todo = [r for r in runs if r.cell == tuple(cell) and not run_finished(r.config, r.dir)]
        while todo:
            rcs, rds = [r.config for r in todo], [r.dir for r in todo]
            tag = hashlib.sha256(json.dumps([c.to_dict() for c in rcs], sort_keys=True).encode()).hexdigest()[:10]
            ck = out / "runs" / f"{cell_name(cfg.factor_names, cell)}__batched__{tag}.pt"
            try:
                vtrain.train_runs(rcs, rds, ckpt=ck, progress=False)
            except RunDiverged as exc:      # (an interruption keeps the checkpoint to resume from)
                bad = min(max(exc.position, 0), len(todo) - 1)
                record_failure(rcs[bad], rds[bad], exc)
                ck.unlink(missing_ok=True)
                trained.add((tuple(cell), todo[bad].seed))
                todo = todo[:bad] + todo[bad + 1:]
                continue
            ck.unlink(missing_ok=True)
            trained |= {(tuple(cell), r.seed) for r in todo}
            break
    return trained


OnRun = Callable[[tuple, int, Mapping[str, Any], Path, bool, float], None]


def run_task(cfg: StudyConfig, out_dir: str | Path, task: StudyTask, *, plan_hash: str | None = None,
             run_progress: bool = False, on_run: OnRun | None = None, data: DatasetCache | None = None,
             owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """Claim ``task``, train (or resume, or read back) its runs and probes, write its record
    ``tasks/task-<i>.json`` atomically and return it.  ``on_run(cell, seed, result, run_dir,
    trained, wall_s)`` is called after each run (``result`` None for a run that diverged: it is
    recorded as failed, ``failed.json``, and the task goes on).  Any other failure writes a
    ``failed`` task record naming the error and the log, then propagates."""
    import torch

    from cffdyn.machine import load_average

    out = Path(out_dir)
    claim = acquire_claim(out, task, owner)
    get_data = data or DatasetCache()
    t0, cpu0 = time.perf_counter(), time.process_time()
    rec: dict[str, Any] = {"schema": TASK_SCHEMA, "task": task.index, "plan": plan_hash, "seeds": task.seeds,
                           "owner": {k: v for k, v in claim.owner.items() if k != "token"},
                           "started": _now(), "t_start": time.time(), "load_avg_start": load_average(),
                           "runs": [], "probes": []}
    try:
        runs = task.planned(cfg, out)
        todo = [r for r in runs if not run_finished(r.config, r.dir)]
        if todo and not cfg.batched:
            get_data(todo[0].config)     # a missing dataset fails here, before any training
        batched = _train_batched(cfg, out, runs) if cfg.batched else set()
        for r in runs:
            cell, seed, rc, rd = r.cell, r.seed, r.config, r.dir
            t_run = time.perf_counter()
            res = read_result(rc, rd)
            fail = read_failure(rc, rd) if res is None else None
            trained = (res is None and fail is None) or (cell, seed) in batched
            if res is None and fail is None:
                try:
                    res = train_run(rc, rd, progress=run_progress, dataset=get_data(rc))
                except RunDiverged as exc:      # recorded; the task's other runs still train
                    fail = record_failure(rc, rd, exc)
            wall = time.perf_counter() - t_run
            rec["runs"].append({"cell": dict(zip(cfg.factor_names, cell)), "seed": seed, "run_dir": str(rd),
                                "trained_now": trained, "wall_s": wall,
                                **({"failed": fail["reason"]} if fail is not None else {})})
            if on_run is not None:
                on_run(cell, seed, res, rd, trained, wall)
        t_probe = time.perf_counter()
        for seed in task.probe_seeds:
            path = probe_path(out, cfg, seed)
            if read_probe(cfg, out, seed) is None:
                from vit.probe import raw_pixel_probe
                rc = probe_config(cfg, seed)
                atomic_write_json(path, {**record_header(PROBE_SCHEMA, rc.to_dict()), "seed": seed,
                                         **raw_pixel_probe(rc, get_data(rc))})
            rec["probes"].append(str(path))
        rec.update(status="complete", probe_s=time.perf_counter() - t_probe)
    except BaseException as exc:
        # KeyboardInterrupt, SystemExit (a submitit requeue) and RunInterrupted stop a task that
        # resumes; anything else is a failure the collector lists with the log
        from vit.train import RunInterrupted
        stopped = isinstance(exc, (KeyboardInterrupt, SystemExit, RunInterrupted))
        rec.update(status="interrupted" if stopped else "failed",
                   error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        raise
    finally:
        rec.update(finished=_now(), t_end=time.time(), wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - cpu0,
                   torch_threads=torch.get_num_threads())
        try:
            atomic_write_json(task_record_path(out, task), rec)
        finally:
            claim.release()
    return rec


def run_planned_task(out_dir: str | Path, index: int, plan_hash: str, *, run_progress: bool = True) -> dict[str, Any]:
    """A worker's entry: task ``index`` of ``OUT/tasks/plan.json`` (refused if the plan changed
    since the task was submitted)."""
    out = Path(out_dir)
    cfg, tasks, h = read_plan(out)
    if h != plan_hash:
        raise UserError(f"the study plan {plan_path(out)} changed since task {index} was submitted",
                        "submit the study again")
    state = task_state(cfg, out, tasks[index])
    if state["state"] in ("complete", "running"):     # a second submission's copy of this task
        print(f"task {index} is {state['state']} (another submission ran it); not run twice", flush=True)
        return {"task": index, "status": "skipped", "state": state["state"]}
    if cfg.base.device in ("cpu", "auto") and os.environ.get("SLURM_CPUS_PER_TASK"):
        import torch
        torch.set_num_threads(int(os.environ["SLURM_CPUS_PER_TASK"]))
    try:
        return run_task(cfg, out, tasks[index], plan_hash=plan_hash, run_progress=run_progress)
    except TaskClaimed as exc:
        print(f"task {index}: {exc.problem}; not run twice", flush=True)
        return {"task": index, "status": "skipped", "state": "running"}


def record_submission(out: Path, executor: str, jobs: Mapping[int, tuple[str, str | None]]) -> None:
    """Append one submission (executor, time, task -> (job id, log path)) to
    ``tasks/submissions.jsonl``, so a task that never started is still listed with its log."""
    from cffdyn.io import append_jsonl
    append_jsonl(Path(out) / TASKS_DIR / "submissions.jsonl",
                 [{"time": _now(), "executor": executor,
                   "tasks": {str(i): {"job_id": j, "log": log} for i, (j, log) in jobs.items()}}])


def submitted_logs(out: Path) -> dict[int, dict[str, Any]]:
    """task index -> {job_id, log} of its latest submission."""
    from cffdyn.io import read_jsonl
    p = Path(out) / TASKS_DIR / "submissions.jsonl"
    found: dict[int, dict[str, Any]] = {}
    for sub in (read_jsonl(p) if p.is_file() else []):
        for i, v in sub.get("tasks", {}).items():
            found[int(i)] = dict(v, executor=sub.get("executor"))
    return found


def task_state(cfg: StudyConfig, out: Path, task: StudyTask) -> dict[str, Any]:
    """Where ``task`` stands on disk: ``complete`` (record complete and every run recorded),
    ``running`` (a live claim), ``failed``/``interrupted`` (its record, or a claim whose holder
    is gone), or ``not started``; with the log path where one is known.  A run counts as
    recorded only when its ``result.json`` is intact (:func:`read_result`); an edited or
    damaged one makes the task unfinished, its reason in ``error``; a recorded divergence
    (:func:`read_failure`) is a finished run."""
    rec_path, cl_path = task_record_path(out, task), claim_path(out, task)
    rec = read_json(rec_path, expect=dict) if rec_path.is_file() else None
    holder = read_claim(cl_path)
    if holder is not None and claim_alive(cl_path, holder):
        return {"task": task.index, "seeds": task.seeds, "state": "running", "log": holder.get("log"),
                "holder": {k: holder.get(k) for k in ("host", "pid", "job_id", "started")}}
    missing, unusable = [], []
    for r in task.planned(cfg, out):
        rd = r.dir
        try:
            found = run_finished(r.config, rd)
        except ValueError as exc:    # an edited, truncated or foreign result (CorruptFileError): not finished
            found = False
            unusable.append(str(exc).splitlines()[0])
        if not found:
            missing.append(str(rd))
    missing += [str(probe_path(out, cfg, sd)) for sd in task.probe_seeds if read_probe(cfg, out, sd) is None]
    if rec is not None and rec.get("status") == "complete" and not missing:
        return {"task": task.index, "seeds": task.seeds, "state": "complete", "record": rec}
    if holder is not None:      # a claim left by a holder that is gone: killed mid-run
        return {"task": task.index, "seeds": task.seeds, "state": "interrupted", "log": holder.get("log"),
                "error": "its process ended without a record (killed?)", "missing": missing}
    if rec is not None:
        state = rec.get("status") if rec.get("status") in ("failed", "interrupted") else "incomplete"
        return {"task": task.index, "seeds": task.seeds, "state": state, "log": (rec.get("owner") or {}).get("log"),
                "error": rec.get("error") or (unusable[0] if unusable else "runs missing after a complete record"),
                "missing": missing}
    sub = submitted_logs(out).get(task.index) or {}
    return {"task": task.index, "seeds": task.seeds, "state": "not started" if not sub else "submitted, not started",
            "log": sub.get("log"), "job_id": sub.get("job_id"), "missing": missing}
