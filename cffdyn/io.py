"""Result I/O shared by every long run: atomic writes, JSON lines, progress lines.

A long run never leaves a half-written file behind: every write goes to a temporary file in
the same directory, is flushed and fsync'ed, and is then renamed over the target
(``os.replace`` is atomic on POSIX).  A killed run therefore leaves either the old file or
the new one, and a resumed run can trust whatever it finds.
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from cffdyn.errors import CorruptFileError, UserError

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "append_jsonl",
           "read_json", "read_jsonl", "to_jsonable", "Progress", "ensure_writable_dir",
           "ensure_writable_file"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; results are meant to be shared and read
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomic text write (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, dataclasses, paths and non-finite floats to JSON.

    Non-finite floats become ``None`` so the files stay strict JSON.
    """
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "tolist"):  # numpy / torch arrays and scalars
        return to_jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return to_jsonable(obj.item())
    raise TypeError(f"cannot convert {type(obj).__name__} to JSON")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomic, strict JSON write (indented, keys in insertion order)."""
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a corrupt or truncated one is a :class:`UserError` naming the path."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{path} is not valid JSON ({exc.__class__.__name__}: line "
                        f"{getattr(exc, 'lineno', '?')})",
                        "it was probably cut short by a killed writer or edited by hand: move it "
                        "away (or delete it) and rerun, which recomputes it") from None


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that has no newline (a writer killed mid-line) so appends stay aligned."""
    try:
        with open(path, "rb+") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            if size == 0:
                return
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            # walk back to the last newline (files are small logs: a linear scan is fine)
            pos = size - 1
            while pos > 0:
                step = min(65536, pos)
                fh.seek(pos - step)
                chunk = fh.read(step)
                k = chunk.rfind(b"\n")
                if k >= 0:
                    fh.truncate(pos - step + k + 1)
                    return
                pos -= step
            fh.truncate(0)
    except FileNotFoundError:
        return


def append_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> None:
    """Append records as JSON lines, flushed and fsync'ed.

    A torn last line (killed writer) is cut before appending, so a record written after it is
    never glued to it and lost, and a second kill cannot make the file unreadable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _drop_torn_tail(path)
    with open(path, "a", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(to_jsonable(rec), allow_nan=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    """Read JSON lines; a torn final line (killed writer) is ignored, any other bad line raises."""
    out: list[Any] = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if k == len(lines) - 1:
                break
            raise CorruptFileError(f"{path}:{k + 1}: not valid JSON",
                            "the log was edited or damaged; move it away and rerun to recompute")
    return out


def ensure_writable_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Create ``path`` if needed and prove it takes a file, BEFORE any work is done.

    Raises :class:`UserError` naming ``option`` when it is a file or cannot be written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file, not a directory", f"give {option} a directory path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise UserError(f"{option} {path} cannot be written ({exc.strerror or exc})",
                        f"give {option} a directory you can write to") from None
    return path


def ensure_writable_file(path: str | os.PathLike, option: str = "--json") -> Path:
    """Check that ``path`` can be (re)written atomically, BEFORE any work is done."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a directory", f"give {option} a file path")
    if path.parent.exists() and not path.parent.is_dir():
        raise UserError(f"{option} {path}: {path.parent} is a file, not a directory",
                        f"give {option} a path inside a directory")
    ensure_writable_dir(path.parent if str(path.parent) else Path("."), option=f"{option}'s directory")
    return path


class Progress:
    """Minimal progress lines on stderr: ``[label] i/n (pct) elapsed eta``.

    Prints at most every ``min_interval`` seconds (and always the last step), so it is cheap in
    loops and readable in CI logs (no carriage-return tricks).
    """

    def __init__(self, total: int, label: str, *, min_interval: float = 2.0, stream=None,
                 enabled: bool = True) -> None:
        self.total = max(int(total), 1)
        self.label = label
        self.min_interval = min_interval
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.start = time.perf_counter()
        self._last = -math.inf

    def update(self, done: int, extra: str = "") -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if done < self.total and now - self._last < self.min_interval:
            return
        self._last = now
        el = now - self.start
        eta = el / done * (self.total - done) if done else float("nan")
        msg = f"[{self.label}] {done}/{self.total} ({100 * done / self.total:.0f}%) {el:.1f}s elapsed"
        if done < self.total and math.isfinite(eta):
            msg += f", ~{eta:.0f}s left"
        if extra:
            msg += f" | {extra}"
        print(msg, file=self.stream, flush=True)
