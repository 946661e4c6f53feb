"""Studies as tasks (vit.study_tasks) run by executors (vit.study_exec): real subprocess jobs
through the local executor give the sequential study.json; a task killed mid-run resumes to the
same results; a failing task is listed with its log and the study is incomplete; collection
after a partial run names exactly what is missing; the sbatch script submitit writes carries
the options; bad input is one line.  Tiny digits runs on CPU, one thread per process."""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import sys
import time
from pathlib import Path

import pytest

from cffdyn.errors import guarded
from cffdyn.io import read_json
from vit import study_exec, study_tasks
from vit.study import StudyConfig, cell_runs, collect_study, run_dir, run_study
from vit.study_cli import config_from_args, build_parser
from vit.study_cli import main as study_main
from vit.study_exec import SlurmOptions, submit_study
from vit.study_tasks import claim_path, plan_tasks, run_task, write_plan
from vit.train import TrainConfig

submitit = pytest.importorskip("submitit")

BASE = TrainConfig(dataset="digits", subset=200, embed_dim=16, heads=2, layers=2, patch=2, epochs=3,
                   head_epochs=5, batch_size=64, head_lr=5e-3, device="cpu")
CFG = StudyConfig(base=BASE, factors=(("loss_mode", ("clamp", "subtract")),), n_seeds=2, n_boot=200, n_perm=200)
KEYS = ("schema", "config", "design", "status", "analysis", "table", "probe")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _one_thread_subprocesses(monkeypatch):
    # task subprocesses inherit the environment: one thread each, as the in-process reference
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        monkeypatch.setenv(k, "1")
    root = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The sequential study (this process, task after task)."""
    return run_study(CFG, tmp_path_factory.mktemp("seq"), progress=False)


def _same(a, b):
    assert {k: a[k] for k in KEYS} == {k: b[k] for k in KEYS}
    strip = ("run_dir", "trained_now", "wall_s", "epoch_time_s")
    assert [{k: v for k, v in r.items() if k not in strip} for r in a["runs"]] == \
           [{k: v for k, v in r.items() if k not in strip} for r in b["runs"]]


def test_tasks_cover_every_cell_of_their_seeds_seed_major():
    cfg = CFG.replace(factors=(("loss_mode", ("clamp", "subtract")), ("method", ("cff2", "cff1"))), n_seeds=5)
    for k in (1, 2, 5):
        tasks = plan_tasks(cfg, k)
        assert [r for t in tasks for r in t.runs] == cell_runs(cfg)          # one schedule, seed-major
        assert len(tasks) == -(-5 // k)
        for t in tasks:       # every cell of each of the task's seeds: whole matched pairs
            assert sorted(t.runs) == sorted((tuple(c), sd) for sd in t.seeds for c in cfg.cells())
    assert len(plan_tasks(cfg)) == 5 and len(plan_tasks(cfg.replace(batched=True))) == 1
    assert len(plan_tasks(cfg.replace(batched=True, n_seeds=50))) == 8      # at most 7 seeds per GPU pass
    ind = cfg.replace(independent_seeds=True)
    assert [r for t in plan_tasks(ind) for r in t.runs] == cell_runs(ind)


@pytest.mark.parametrize("use_submitit", [True, False], ids=["submitit-local", "process-pool"])
def test_local_executor_tasks_give_the_sequential_study(reference, tmp_path, use_submitit):
    res = submit_study(CFG, tmp_path, executor="local", workers=2, progress=False, use_submitit=use_submitit)
    assert res["status"] == "complete" and res["tasks"]["missing"] == [] and res["tasks"]["n"] == 2
    _same(res, reference)
    recs = [read_json(tmp_path / "tasks" / f"task-{i:04d}.json") for i in range(2)]
    assert all(r["status"] == "complete" and r["owner"]["pid"] != os.getpid() for r in recs)  # subprocesses
    assert all(Path(r["owner"]["log"]).is_file() for r in recs)
    assert not list((tmp_path / "tasks").glob("*.claim"))
    # a second submission runs nothing: every task is complete
    subs = (tmp_path / "tasks" / "submissions.jsonl").read_text()
    stamps = [p.stat().st_mtime_ns for p in sorted((tmp_path / "tasks").glob("task-*.json"))]
    again = submit_study(CFG, tmp_path, executor="local", progress=False, use_submitit=use_submitit)
    _same(again, res)
    assert (tmp_path / "tasks" / "submissions.jsonl").read_text() == subs
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "tasks").glob("task-*.json"))] == stamps


def _wait_mid_run(out: Path, cfg: StudyConfig, timeout: float = 120.0):
    """(pid, run dir, task, label) of a task caught between a run's first epoch checkpoint and
    its result; ``label`` is the run's progress-line label."""
    t_end = time.time() + timeout
    while time.time() < t_end:
        for task in plan_tasks(cfg):
            holder = study_tasks.read_claim(claim_path(out, task))
            if not holder:
                continue
            for cell, seed in task.runs:
                rd = run_dir(out, cfg, cell, seed)
                if (rd / "ckpt.pt").is_file() and not (rd / "result.json").is_file():
                    rc = cfg.run_config(cell, seed)
                    return holder["pid"], rd, task, f"[{rc.method}/{rc.loss_mode} {rc.dataset} seed {rc.seed}]"
        time.sleep(0.01)
    raise AssertionError("no task was caught mid-run")


def _first_epoch_after(log: str, marker: str | None, label: str) -> int:
    """The epoch the run ``label`` reports first after the last ``marker`` (None: from the
    start) in a task log: its first progress line shows the epoch it starts or resumes from."""
    text = log[log.rindex(marker):] if marker else log
    line = next(x for x in text.splitlines() if x.startswith(label + " "))
    return int(line[len(label) + 1:].split("/")[0])


def test_killed_task_resumes_and_the_study_completes_identically(reference, tmp_path):
    import threading

    box = {}
    th = threading.Thread(target=lambda: box.update(res=submit_study(CFG, tmp_path, executor="local", workers=1,
                                                                     progress=False)))
    th.start()
    pid, rd, task, label = _wait_mid_run(tmp_path, CFG)
    os.kill(pid, signal.SIGKILL)                 # the task process dies mid-run, no record written
    th.join(timeout=300)
    from vit.train import load_checkpoint
    epoch = load_checkpoint(rd / "ckpt.pt")["epoch"]
    part = box["res"]
    assert part["status"] == "incomplete"
    killed = [m for m in part["tasks"]["missing"] if m["state"] == "interrupted"]
    assert len(killed) == 1 and Path(killed[0]["log"]).is_file()
    assert (rd / "ckpt.pt").is_file() and not (rd / "result.json").is_file()
    finished = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/result.json")}
    res = submit_study(CFG, tmp_path, executor="local", progress=False)     # the stale claim is taken over
    assert res["status"] == "complete"
    _same(res, reference)
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())     # finished runs were read back
    # the killed run resumed from its checkpoint in the new attempt (a log of its own)
    log = Path(study_tasks.submitted_logs(tmp_path)[task.index]["log"])
    assert log != Path(killed[0]["log"])
    assert _first_epoch_after(log.read_text(), None, label) == epoch + 1


def test_preempted_task_is_requeued_by_submitit_and_resumes(reference, tmp_path):
    """SIGUSR2 (Slurm's pre-emption/time-out warning): submitit checkpoints the task and requeues
    it in the same job; the task resumes from its run checkpoints and the study completes."""
    import threading

    box = {}
    th = threading.Thread(target=lambda: box.update(res=submit_study(CFG, tmp_path, executor="local", workers=1,
                                                                     progress=False)))
    th.start()
    pid, rd, task, label = _wait_mid_run(tmp_path, CFG)
    os.kill(pid, signal.SIGUSR2)
    th.join(timeout=300)
    res = box["res"]
    assert res["status"] == "complete"
    _same(res, reference)
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*_log.*"))
    assert "Requeued job" in logs                        # requeued by submitit, not resubmitted
    assert len(study_tasks.submitted_logs(tmp_path)) == 2
    err = Path(study_tasks.submitted_logs(tmp_path)[task.index]["log"]).read_text()
    assert _first_epoch_after(err, "Caught signal SIGUSR2", label) >= 1    # resumed, not restarted


def test_a_failing_task_is_listed_with_its_log_and_the_study_is_incomplete(tmp_path, capsys):
    cell, seed = cell_runs(CFG)[-1]                      # a run of the last task (seed 1)
    rd = run_dir(tmp_path, CFG, cell, seed)
    rd.mkdir(parents=True)
    (rd / "result.json").write_text('{"config": {"dataset": "dig')        # truncated: the task fails
    res = submit_study(CFG, tmp_path, executor="local", workers=2, progress=False)
    assert res["status"] == "incomplete" and res["tasks"]["complete"] == [0]
    (miss,) = res["tasks"]["missing"]
    assert miss["task"] == 1 and miss["seeds"] == [1] and miss["state"] == "failed"
    assert str(rd / "result.json") in miss["error"] and str(rd / "result.json") in Path(miss["log"]).read_text()
    assert res["analysis"] is None and res["table"].startswith("INCOMPLETE: 1 of 2 tasks")
    assert [r["seed"] for r in res["runs"]] == [0, 0]
    capsys.readouterr()
    assert study_main(["--collect", str(tmp_path)], prog="cffdyn vit study") == 1
    out = capsys.readouterr().out
    assert f"task 1 (seeds 1): failed" in out and miss["log"] in out and "study INCOMPLETE" in out
    assert read_json(tmp_path / "study.json")["status"] == "incomplete"


def test_collect_after_a_partial_run_reports_exactly_what_is_missing(reference, tmp_path):
    tasks, h = write_plan(tmp_path, CFG)
    run_task(CFG, tmp_path, tasks[1], plan_hash=h)        # only the second seed's task has run
    res = collect_study(tmp_path)
    assert res["status"] == "incomplete" and res["tasks"]["complete"] == [1]
    assert [(m["task"], m["seeds"], m["state"]) for m in res["tasks"]["missing"]] == [(0, [0], "not started")]
    assert res["tasks"]["missing"][0]["missing"] == [str(run_dir(tmp_path, CFG, c, s)) for c, s in tasks[0].runs] \
        + [str(study_tasks.probe_path(tmp_path, CFG, 0))]
    assert [(r["cell"], r["seed"]) for r in res["runs"]] == [(dict(loss_mode=c[0]), s) for c, s in tasks[1].runs]
    ref = {(json.dumps(r["cell"]), r["seed"]): r["metric"] for r in reference["runs"]}
    assert all(ref[(json.dumps(r["cell"]), r["seed"])] == r["metric"] for r in res["runs"])
    run_task(CFG, tmp_path, tasks[0], plan_hash=h)
    _same(collect_study(tmp_path), reference)


def _fake_slurm(tmp_path: Path, monkeypatch) -> Path:
    """``srun`` and ``sbatch`` stand-ins on PATH: sbatch keeps a copy of each script it is given
    and answers as Slurm does, so submitit's own submission path writes its real sbatch files."""
    bindir, got = tmp_path / "bin", tmp_path / "sbatch_calls"
    bindir.mkdir()
    got.mkdir()
    (bindir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bindir / "sbatch").write_text(
        "#!/bin/sh\nn=$(ls " + str(got) + " | wc -l)\nid=$((4200 + n))\ncp \"$1\" " + str(got)
        + "/$id.sh\necho \"Submitted batch job $id\"\n")
    for f in ("srun", "sbatch"):
        (bindir / f).chmod((bindir / f).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return got


def _sbatch_options(text: str) -> dict[str, str]:
    opts = {}
    for line in text.splitlines():
        if line.startswith("#SBATCH --"):
            k, _, v = line[len("#SBATCH --"):].partition("=")
            opts[k] = v
    return opts


def test_the_sbatch_script_submitit_writes_carries_the_options(tmp_path, monkeypatch):
    got = _fake_slurm(tmp_path, monkeypatch)
    cfg = CFG.replace(n_seeds=7, base=BASE.replace(device="cuda"))
    out = tmp_path / "study"
    opts = SlurmOptions(partition="gpu", gpus_per_task=1, cpus_per_task=8, time_min=90, array_parallelism=2,
                        max_array_size=3, extra=(("account", "proj7"), ("exclusive", True)),
                        setup=("module load cuda",))
    res = submit_study(cfg, out, executor="submitit", slurm=opts, wait=False, progress=False)
    scripts = sorted(got.glob("*.sh"))
    assert len(scripts) == 3 and sorted(res["jobs"]) == list(range(7))      # 7 tasks, arrays of <= 3
    arrays = []
    for p in scripts:
        text = p.read_text()
        o = _sbatch_options(text)
        assert (o["partition"], o["gpus-per-node"], o["cpus-per-task"], o["time"]) == ("gpu", "1", "8", "90")
        assert (o["nodes"], o["ntasks-per-node"], o["account"], o["job-name"]) == ("1", "1", "proj7", "cffdyn-study")
        assert "exclusive" in o and o["signal"] == "USR2@90" and o["open-mode"] == "append"
        # an array task logs as <array>_<index>; a chunk of one task is a plain job (<job id>)
        assert o["output"] == str(out / "logs" / ("%A_%a_0_log.out" if "array" in o else "%j_0_log.out"))
        assert "module load cuda" in text and "export OMP_NUM_THREADS=8" in text
        assert "-m submitit.core._submit" in text and sys.executable in text
        arrays.append(o.get("array"))
    assert arrays == ["0-2%2", "0-2%2", None]
    assert res["jobs"][6][0] == "4202" and res["jobs"][3][0] == "4201_0"
    # every task is listed as submitted, not started, with the log its array task will write
    col = collect_study(out)
    assert col["status"] == "incomplete" and len(col["tasks"]["missing"]) == 7
    m = col["tasks"]["missing"][4]
    assert m["state"] == "submitted, not started" and m["job_id"] == "4201_1" \
        and m["log"] == str(out / "logs" / "4201_1_0_log.err")


def test_slurm_defaults_follow_the_study():
    from vit.study import FMNIST_FULL, QUICK
    tasks = plan_tasks(FMNIST_FULL)
    p = study_exec.slurm_parameters(FMNIST_FULL, tasks, SlurmOptions())
    assert p["gpus_per_node"] == 1 and "partition" not in p and p["cpus_per_task"] == 4
    assert 60 <= p["time"] <= 24 * 60 and p["time"] % 30 == 0
    q = study_exec.slurm_parameters(QUICK, plan_tasks(QUICK), SlurmOptions())
    assert "gpus_per_node" not in q
    assert study_exec.array_chunks(list(range(2500)), 1000)[-1] == list(range(2000, 2500))


def _one_line(argv, capsys, tmp_path):
    try:
        rc = guarded(lambda a: study_main(a, prog="cffdyn vit study"), argv, "cffdyn vit study")
    except SystemExit as exc:         # argparse's own errors (one line: cffdyn.errors.ArgumentParser)
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


TINY_SETS = ["--set", "dataset=digits", "--set", "subset=200", "--set", "patch=2", "--set", "embed_dim=16",
             "--set", "heads=2", "--set", "layers=1", "--set", "epochs=1", "--set", "device=cpu",
             "--factor", "loss_mode=clamp,subtract", "--seeds", "2", "--quiet"]


def test_bad_executor_input_is_one_line(tmp_path, capsys, monkeypatch):
    out = tmp_path / "o"
    assert "invalid choice: 'slurm'" in _one_line(["--executor", "slurm", "--out", str(out)], capsys, tmp_path)
    err = _one_line(["--slurm-partition", "gpu", "--out", str(out)], capsys, tmp_path)
    assert "Slurm option" in err and "--executor submitit" in err
    err = _one_line(["--slurm-account=abc", "--executor", "local", "--out", str(out)], capsys, tmp_path)
    assert "--slurm-account is a Slurm option" in err
    monkeypatch.setitem(sys.modules, "submitit", None)           # submitit not installed
    err = _one_line(["--executor", "submitit", "--out", str(out)] + TINY_SETS, capsys, tmp_path)
    assert "needs the submitit package" in err and "cffdyn[cluster]" in err
    monkeypatch.delitem(sys.modules, "submitit")
    monkeypatch.setenv("PATH", str(tmp_path))                   # no srun: not a Slurm cluster
    err = _one_line(["--executor", "submitit", "--out", str(out)] + TINY_SETS, capsys, tmp_path)
    assert "needs a Slurm cluster" in err
    assert not (out / "study.json").exists()


def test_a_study_being_run_by_another_submission_is_refused(tmp_path, capsys):
    out = tmp_path / "o"
    cfg = config_from_args(build_parser().parse_args(TINY_SETS))
    tasks, _ = write_plan(out, cfg)
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "job_id": "77_1", "log": "x.log",
              "started": "2026-12-02T07:00:00+00:00", "token": "t"}
    claim_path(out, tasks[1]).write_text(json.dumps(holder))
    before = sorted(p.name for p in (out / "tasks").iterdir())
    for extra in ([], ["--executor", "local"]):
        err = _one_line(TINY_SETS + ["--out", str(out)] + extra, capsys, tmp_path)
        assert "already being run by another submission" in err and "task-0001 is held by" in err
    assert sorted(p.name for p in (out / "tasks").iterdir()) == before and not (out / "study.json").exists()
    assert not list((out / "runs").glob("*/result.json")) if (out / "runs").exists() else True


def test_presets_own_their_defaults(monkeypatch):
    from vit import study
    odd = study.QUICK.replace(seed0=5, n_boot=500, n_perm=300, stats_seed=3, metric="val_acc", alpha=0.1,
                              assumed_ratio=2.0, assumed_corr=0.2, probe=False, independent_seeds=True)
    monkeypatch.setitem(study.PRESETS, "quick", odd)
    p = build_parser()
    assert config_from_args(p.parse_args([])) == odd                 # no flag given: the preset as is
    for name, cfg in study.PRESETS.items():
        if name != "quick":
            assert config_from_args(p.parse_args(["--preset", name])) == cfg
    assert config_from_args(p.parse_args(["--seed0", "0", "--n-boot", "9999"])) == odd.replace(seed0=0, n_boot=9999)
