"""Recorded files, output directories and resource errors (cffdyn.io / cffdyn.errors), one test
per class: wrong-shape and edited records, the output lock, stale temp files, symlinks planted in
an output directory, a full disk, out of memory, Ctrl-C through ``cffdyn``."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cffdyn.errors import CorruptFileError, DiskFullError, UserError, guarded
from cffdyn.io import (HASH_KEY, LOCK_NAME, OutputLockedError, append_jsonl, atomic_write_bytes, atomic_write_json,
                       clean_stale_tmp, content_hash, output_dir, read_json, record_status)

ROOT = Path(__file__).resolve().parents[1]


def _one_line(fn, capsys, prog="cffdyn x") -> str:
    rc = guarded(lambda argv: fn(), None, prog)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- records
def test_written_records_carry_a_hash_that_detects_an_edit(tmp_path, capsys):
    p = tmp_path / "result.json"
    atomic_write_json(p, {"config": {"seed": 0}, "test_acc": 0.81})
    rec = json.loads(p.read_text())
    # the hash is SHA-256 of the canonical JSON of the other keys (independent recomputation here)
    import hashlib
    blob = json.dumps({"config": {"seed": 0}, "test_acc": 0.81}, sort_keys=True, separators=(",", ":"))
    assert rec[HASH_KEY] == hashlib.sha256(blob.encode()).hexdigest() == content_hash(rec)
    assert read_json(p) == rec and record_status(rec) == "ok"
    # rewriting a loaded record replaces its hash (no stale hash carried over)
    rec["test_acc"] = 0.5
    atomic_write_json(p, rec)
    assert record_status(read_json(p)) == "ok"
    # a hand edit (a fabricated accuracy) is refused with one line naming the file
    p.write_text(p.read_text().replace("0.5", "0.99"))
    with pytest.raises(CorruptFileError, match="changed after it was written"):
        read_json(p)
    assert str(p) in _one_line(lambda: read_json(p), capsys)
    # a record of older code (no hash) reads, and says so to reuse sites
    p.write_text(json.dumps({"test_acc": 0.7}))
    assert record_status(read_json(p)) == "unhashed"


def test_a_record_is_reused_only_when_every_condition_holds(tmp_path, capsys):
    """cffdyn.records.reusable_record: the intact record of the same schema and config with its
    outputs is returned as written; breaking any one condition gives None (recompute), and the
    damaged and unhashed cases are said on stderr."""
    from cffdyn.records import record_header, reusable_record
    p, png = tmp_path / "s.json", tmp_path / "s.png"
    cfg = {"seed": 3, "sizes": (1, 2)}                       # compared as JSON: the tuple is a list
    png.write_bytes(b"png")
    atomic_write_json(p, {**record_header(2, cfg), "done": True})
    ok = dict(schema=2, outputs=[png], keys=["done"], when=lambda r: r["done"])
    assert reusable_record(p, cfg, **ok) == read_json(p)
    assert reusable_record(tmp_path / "absent.json", cfg, **ok) is None
    assert reusable_record(p, {**cfg, "seed": 4}, **ok) is None                          # another config
    assert reusable_record(p, cfg, **{**ok, "schema": 3}) is None                        # another layout
    assert reusable_record(p, cfg, **{**ok, "keys": ["missing"]}) is None
    assert reusable_record(p, cfg, **{**ok, "when": lambda r: False}) is None
    png.unlink()
    assert reusable_record(p, cfg, **ok) is None                                          # output gone
    png.write_bytes(b"png")
    capsys.readouterr()
    with pytest.raises(ValueError, match="another run"):
        reusable_record(p, {"seed": 4}, other_config=lambda path: ValueError(f"{path}: another run"))
    # damaged: recomputed with a note, or refused in one line; the file is left as it is
    text = p.read_text().replace("true", "false")
    p.write_text(text)
    assert reusable_record(p, cfg, **ok) is None
    assert "changed after it was written" in capsys.readouterr().err
    with pytest.raises(CorruptFileError, match="changed after it was written"):
        reusable_record(p, cfg, **ok, damaged="refuse")
    p.write_text("[]")
    assert reusable_record(p, cfg, **ok) is None and "expected a JSON object" in capsys.readouterr().err
    assert p.read_text() == "[]"
    # no hash (older code, or by hand): never trusted, said once per file
    p.write_text(json.dumps({**record_header(2, cfg), "done": True}))
    assert reusable_record(p, cfg, **ok) is None and reusable_record(p, cfg, **ok) is None
    assert capsys.readouterr().err.count("carries no content hash") == 1


def test_study_timing_adds_the_load_at_the_end_to_the_machine_at_the_start():
    from cffdyn.machine import machine_info
    from cffdyn.records import study_timing
    t0 = time.perf_counter()
    start = machine_info("cpu")
    t = study_timing(t0, start, key="elapsed_s")
    assert set(t) == {"elapsed_s", "machine"} and t["elapsed_s"] >= 0
    assert {k: v for k, v in t["machine"].items() if k != "load_avg_after"} == start
    assert "load_avg_after" in t["machine"] and "load_avg_after" not in start
    assert "load_avg_after" not in study_timing(t0)["machine"]       # taken at the end: one load, not two


def test_savefig_writes_each_format_whole_and_closes(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from cffdyn.io import atomic_savefig
    fig = plt.figure()
    first = atomic_savefig(fig, tmp_path / "f.png", formats=("png", "pdf"), dpi=50, close=True)
    assert first == tmp_path / "f.png" and not plt.fignum_exists(fig.number)
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF"
    fig = plt.figure()
    with pytest.raises(ValueError):                                  # a format matplotlib cannot write
        atomic_savefig(fig, tmp_path / "g.nope", close=True)
    assert not plt.fignum_exists(fig.number) and not list(tmp_path.glob("*g.nope*"))


@pytest.mark.parametrize("text", ["[]", "42", '"x"', "null"])
def test_valid_json_of_the_wrong_shape_is_one_line(tmp_path, capsys, text):
    p = tmp_path / "study.json"
    p.write_text(text)
    err = _one_line(lambda: read_json(p, expect=dict), capsys)
    assert str(p) in err and "expected a JSON object" in err and "rerun" in err
    d = tmp_path / "dir.json"
    d.mkdir()
    assert "is a directory" in _one_line(lambda: read_json(d), capsys)


def test_readers_of_recorded_files_refuse_wrong_shapes(tmp_path, capsys):
    """vit analyze / vit plot / sim clamp --vit on [] or 42: one line, exit 2, nothing written."""
    from vit.analyze_cli import main as analyze_main
    from vit.cli import main as vit_main
    from sim.cli import main as sim_main

    run = tmp_path / "run"
    run.mkdir()
    for text in ("[]", "42"):
        (run / "result.json").write_text(text)
        err = _one_line(lambda: analyze_main(["car", str(run), "--out", str(tmp_path / "a")]), capsys)
        assert str(run / "result.json") in err
        (run / "log.jsonl").write_text(text + "\n")
        err = _one_line(lambda: vit_main(["plot", str(run), "--out", str(tmp_path / "p")]), capsys)
        assert str(run / "log.jsonl") in err
        (tmp_path / "study.json").write_text(text)
        err = _one_line(lambda: sim_main(["clamp", "--vit", str(tmp_path / "study.json"),
                                          "--out", str(tmp_path / "s")]), capsys)
        assert "study.json" in err
    assert not any((tmp_path / d).exists() for d in ("a", "p", "s"))   # no empty --out left behind


# ----------------------------------------------------------------------------- one writer per directory
def test_second_writer_gets_one_line_with_the_holders_pid(tmp_path, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from cffdyn.io import output_dir\n"
        f"with output_dir({str(out)!r}):\n    print('held', flush=True); time.sleep(30)")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        def second():
            with output_dir(out):
                pytest.fail("a second writer got the lock")
        with pytest.raises(OutputLockedError):
            second()
        err = _one_line(second, capsys)
        assert f"pid {holder.pid}" in err and str(out) in err
    finally:
        holder.kill()
        holder.wait()
    with output_dir(out) as d:          # released when the holder is gone (even killed)
        assert (d / LOCK_NAME).read_text().strip() == str(os.getpid())


def test_commands_lock_their_out(tmp_path, capsys):
    """sim eigen, theory verify and vit analyze refuse a directory another process holds."""
    from sim.eigen_cli import main as eigen_main
    from theory.cli import main as theory_main

    out = tmp_path / "held"
    with output_dir(out):
        # the same process re-entering is refused too (flock on a second descriptor)
        for fn in (lambda: eigen_main(["settings", "--out", str(out), "--quiet"]),
                   lambda: theory_main(["verify", "--cases", "5", "--out", str(out)])):
            assert "in use by another cffdyn process" in _one_line(fn, capsys)


def test_failed_run_leaves_no_empty_out(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(RuntimeError):
        with output_dir(out):
            raise RuntimeError("the run failed")
    assert not out.exists()
    with output_dir(out):
        (out / "x.json").write_text("{}")
    assert (out / "x.json").exists()
    with pytest.raises(RuntimeError):       # a directory that existed (or holds results) stays
        with output_dir(out):
            raise RuntimeError
    assert (out / "x.json").exists()


def test_stale_temp_files_of_a_killed_writer_are_cleaned(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # a writer killed between mkstemp and rename leaves .<name>.<pid>.<random>.tmp
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = out / f".eigen_settings.json.{dead.pid}.k3j_x9.tmp"
    orphan.write_text("{half")
    alive = out / f".log.jsonl.{os.getppid()}.ab12cd.tmp"     # a live process's file is left alone
    alive.write_text("x")
    old_style = out / ".verify.json.ab12cd.tmp"                # no pid: removed once it is old
    old_style.write_text("x")
    young = out / ".verify.png.zz99yy.tmp"
    young.write_text("x")
    past = time.time() - 3600
    os.utime(old_style, (past, past))
    keep = out / "result.json"
    keep.write_text("{}")
    with output_dir(out):
        pass
    assert not orphan.exists() and not old_style.exists()
    assert alive.exists() and young.exists() and keep.exists()
    assert clean_stale_tmp(tmp_path / "missing") == []


# ----------------------------------------------------------------------------- symlinks
def test_writes_never_follow_a_symlink_out_of_the_directory(tmp_path, capsys):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("eigen_settings.json", "diagnostics.png"):
        (out / name).symlink_to(outside)
    atomic_write_json(out / "eigen_settings.json", {"a": 1})       # replaces the link, not its target
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from cffdyn.io import atomic_savefig
    fig = plt.figure()
    atomic_savefig(fig, out / "diagnostics.png")
    plt.close(fig)
    assert outside.read_text() == "precious\n"
    assert not (out / "eigen_settings.json").is_symlink() and read_json(out / "eigen_settings.json")["a"] == 1
    assert (out / "diagnostics.png").read_bytes()[:4] == b"\x89PNG"
    # an append target that is a link is refused (one line), the target untouched
    (out / "eigen_settings.parts.jsonl").symlink_to(outside)
    err = _one_line(lambda: append_jsonl(out / "eigen_settings.parts.jsonl", [{"x": 1}]), capsys)
    assert "symbolic link" in err and outside.read_text() == "precious\n"


# ----------------------------------------------------------------------------- full disk, memory, Ctrl-C
def test_full_disk_is_one_line_and_nothing_half_written(tmp_path, monkeypatch, capsys):
    p = tmp_path / "verify.json"
    atomic_write_json(p, {"old": True})
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskFullError):
        atomic_write_json(p, {"new": True})
    err = _one_line(lambda: atomic_write_json(p, {"new": True}), capsys)
    assert str(p) in err and "free space" in err
    assert read_json(p)["old"] is True                        # the old file intact
    assert [f.name for f in tmp_path.iterdir()] == ["verify.json"]   # no temp file left
    # an append on a full disk goes back to the last whole record
    log = tmp_path / "parts.jsonl"
    monkeypatch.setattr(os, "fsync", real_fsync)
    append_jsonl(log, [{"k": 1}])
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskFullError):
        append_jsonl(log, [{"k": 2}])
    assert log.read_text() == '{"k": 1}\n'
    # an ENOSPC from elsewhere (a library writing directly) is one line too
    def raw():
        raise OSError(errno.ENOSPC, "No space left on device", "/data/ckpt.pt")
    assert "/data/ckpt.pt" in _one_line(raw, capsys)


def test_memory_error_is_one_line(capsys):
    def big():
        raise MemoryError
    err = _one_line(big, capsys)
    assert "out of memory" in err and "reduce" in err


@pytest.mark.parametrize("part", ["vit", "sim", "paper"])
def test_ctrl_c_through_cffdyn_gives_the_resume_hint(part, monkeypatch, capsys):
    import importlib
    from cffdyn import cli

    mod = importlib.import_module(f"{part}.cli")

    def interrupted(argv, prog=None):
        raise KeyboardInterrupt
    monkeypatch.setattr(mod, "main", interrupted)
    assert cli.main([part, "anything"]) == 130
    err = capsys.readouterr().err.strip()
    assert err == f"cffdyn {part}: interrupted; rerun the same command to resume where it stopped"
