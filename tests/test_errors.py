"""The shared one-line-error machinery: UserError, guarded, the parser, the writable checks."""
from __future__ import annotations

import json
import os

import pytest

from cffdyn.errors import UserError, guarded, make_parser, positive_int, finite_float
from cffdyn.io import append_jsonl, ensure_writable_dir, ensure_writable_file, read_json, read_jsonl


def test_guarded_user_error_one_line(capsys):
    def main(argv):
        raise UserError("--out /x is a file", "give a directory")
    assert guarded(main, [], "prog") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["prog: error: --out /x is a file; give a directory"]


def test_guarded_interrupt_names_resume(capsys):
    def main(argv):
        raise KeyboardInterrupt
    assert guarded(main, [], "prog", resumable=True) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "resume" in err


def test_parser_rejects_abbreviation_and_bad_numbers(capsys):
    p = make_parser("t")
    p.add_argument("--epochs", type=positive_int, default=1)
    p.add_argument("--tol", type=finite_float, default=1.0)
    for bad in (["--epoch", "1"], ["--epochs", "0"], ["--tol", "nan"]):
        with pytest.raises(SystemExit) as e:
            p.parse_args(bad)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("t: error:")


def test_help_shows_default_once():
    p = make_parser("t")
    p.add_argument("--a", type=int, default=3, help="an option")
    p.add_argument("--b", default=None, help="no default")
    p.add_argument("--seed", type=int, default=0, help="the seed")
    h = p.format_help()
    assert h.count("(default: 3)") == 1 and "default: None" not in h
    assert "(default: 0)" in h


def test_writable_checks(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        ensure_writable_dir(f)
    with pytest.raises(UserError, match="is a directory"):
        ensure_writable_file(tmp_path)
    assert ensure_writable_dir(tmp_path / "new" / "dir").is_dir()
    if os.geteuid() != 0:  # root writes anywhere; the read-only case is only meaningful otherwise
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(UserError, match="cannot be written"):
            ensure_writable_dir(ro / "sub")


def test_append_jsonl_survives_two_torn_lines(tmp_path):
    log = tmp_path / "log.jsonl"
    append_jsonl(log, [{"a": 1}])
    with open(log, "a") as fh:
        fh.write('{"torn": ')          # first kill mid-line
    append_jsonl(log, [{"a": 2}])     # must not be glued to the torn line
    with open(log, "a") as fh:
        fh.write('{"torn2')             # second kill
    append_jsonl(log, [{"a": 3}])
    assert read_jsonl(log) == [{"a": 1}, {"a": 2}, {"a": 3}]


def test_read_json_names_path(tmp_path):
    p = tmp_path / "result.json"
    p.write_text('{"a": 1')
    with pytest.raises(UserError, match="result.json is not valid JSON"):
        read_json(p)
    p.write_text(json.dumps({"a": 1}))
    assert read_json(p) == {"a": 1}
