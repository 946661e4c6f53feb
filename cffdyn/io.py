"""Result I/O shared by every long run: atomic writes, JSON lines, progress lines.

A long run never leaves a half-written file behind: every write goes to a temporary file in
the same directory, is flushed and fsync'ed, and is then renamed over the target
(``os.replace`` is atomic on POSIX).  A killed run therefore leaves either the old file or
the new one, and a resumed run can trust whatever it finds.  The rename replaces a symbolic
link planted at the target instead of writing through it, so nothing outside the output
directory is touched; appends (:func:`append_jsonl`) refuse a link.  A full disk is one
:class:`DiskFullError` line naming the file, with the temporary file removed.

Records: :func:`atomic_write_json` adds a ``content_sha256`` of a dict's other keys
(:func:`content_hash`); :func:`read_json` refuses a record whose hash does not match (edited
after it was written), and :func:`record_status` tells a reuse site whether a record is
``"ok"``, ``"unhashed"`` (older code: recompute where possible) or ``"edited"``.

Output directories: :func:`output_dir` takes an advisory ``fcntl.flock`` on ``DIR/.cffdyn.lock``
(a second writer gets one line naming the holder's pid), removes temporary files left by a
killed writer, and removes the directory again when the command fails before writing into it.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from cffdyn.errors import CorruptFileError, UserError, disk_full_error

__all__ = ["atomic_write_bytes", "pid_alive", "atomic_write_json", "atomic_write_text", "atomic_savefig", "append_jsonl",
           "read_json", "read_jsonl", "to_jsonable", "Progress", "ensure_writable_dir",
           "ensure_writable_file", "content_hash", "record_status", "HASH_KEY", "output_dir",
           "OutputLockedError", "clean_stale_tmp", "LOCK_NAME"]

#: key of the content hash that :func:`atomic_write_json` adds to every dict record
HASH_KEY = "content_sha256"
#: advisory lock file of an output directory (see :func:`output_dir`)
LOCK_NAME = ".cffdyn.lock"
# temp files of atomic_write_bytes: .<name>.<pid>.<random>.tmp (the pid tells a live writer's)
_TMP_RE = re.compile(r"^\..+?\.(?:(\d+)\.)?[A-Za-z0-9_]+\.tmp$")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename); returns the path.

    A symlink at ``path`` is replaced by the file, never written through.  A full disk raises
    :class:`DiskFullError` (one line naming ``path``) with the temporary file removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full_error(path) from None
        raise
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; results are meant to be shared and read
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)   # renames over a symlink at `path` (the link goes, its target is untouched)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full_error(path) from None
        raise
    return path


def atomic_savefig(fig: Any, path: str | os.PathLike, *, formats: Iterable[str] | None = None,
                   close: bool = False, **kw: Any) -> Path:
    """Render a matplotlib figure in memory and write it with :func:`atomic_write_bytes`
    (no half-written PNG, no write through a symlink); returns the first file written.

    ``formats`` (e.g. ``("png", "pdf")``): one file per format, ``path`` with its suffix
    replaced (PDF keeps the figure vector); None: the format of ``path``'s suffix.  ``close``
    closes the figure afterwards, also when a write fails (a study drawing many figures would
    otherwise keep every one in memory).  ``kw`` go to ``fig.savefig``."""
    import io as _io

    path = Path(path)
    targets = ([(path, kw.pop("format", None) or path.suffix.lstrip(".").lower() or "png")] if formats is None
               else [(path.with_suffix("." + fmt), fmt) for fmt in formats])
    if not targets:
        raise ValueError("formats is empty: no file to write")
    try:
        for target, fmt in targets:
            buf = _io.BytesIO()
            fig.savefig(buf, format=fmt, **kw)
            atomic_write_bytes(target, buf.getvalue())
    finally:
        if close and "matplotlib.pyplot" in sys.modules:   # a figure made without pyplot has nothing to close
            sys.modules["matplotlib.pyplot"].close(fig)
    return targets[0][0]


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


def content_hash(obj: Any) -> str:
    """SHA-256 of a record's canonical JSON (sorted keys, compact), ``HASH_KEY`` itself left out."""
    obj = to_jsonable(obj)
    if isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if k != HASH_KEY}
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def atomic_write_json(path: str | os.PathLike, obj: Any, *, hashed: bool = True) -> Path:
    """Atomic, strict JSON write (indented, keys in insertion order).

    A dict gets ``HASH_KEY``: the :func:`content_hash` of its other keys (a previous hash is
    replaced), so an edit after writing is detected by :func:`read_json`.  ``hashed=False`` is
    for generated tables keyed by name (every key an entry), which are never reused as records.
    """
    data = to_jsonable(obj)
    if hashed and isinstance(data, dict):
        data = {k: v for k, v in data.items() if k != HASH_KEY}
        data[HASH_KEY] = content_hash(data)
    return atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def record_status(obj: Any) -> str:
    """``"ok"`` (hash matches), ``"unhashed"`` (no hash: written by older code, or not a dict)
    or ``"edited"`` (the content no longer matches its hash)."""
    if not isinstance(obj, dict) or HASH_KEY not in obj:
        return "unhashed"
    return "ok" if obj[HASH_KEY] == content_hash(obj) else "edited"


def _load_json(path: str | os.PathLike) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{path} is not valid JSON ({exc.__class__.__name__}: line "
                        f"{getattr(exc, 'lineno', '?')})",
                        "it was probably cut short by a killed writer or edited by hand: move it "
                        "away (or delete it) and rerun, which recomputes it") from None
    except IsADirectoryError:
        raise CorruptFileError(f"{path} is a directory, not a JSON file",
                               "move it away and rerun, which recomputes it") from None


def read_json(path: str | os.PathLike, *, expect: type | None = None, verify: bool = True) -> Any:
    """Read a JSON file; a corrupt or truncated one is a :class:`CorruptFileError` naming the path.

    ``expect`` (e.g. ``dict``) refuses valid JSON of another shape (``[]``, ``42``) the same way.
    With ``verify`` a record whose :data:`HASH_KEY` does not match its content (edited after it
    was written) is refused; records without a hash (older code) are returned as they are.
    """
    obj = _load_json(path)
    if expect is not None and not isinstance(obj, expect):
        raise CorruptFileError(f"{path} holds a JSON {type(obj).__name__}, expected a JSON "
                               f"{'object' if expect is dict else expect.__name__}",
                               "it is not a file cffdyn wrote (or was overwritten): move it away and rerun, "
                               "which recomputes it")
    if verify and record_status(obj) == "edited":
        raise CorruptFileError(f"{path} was changed after it was written (its {HASH_KEY} does not match "
                               "its content)", "restore the original, or move it away and rerun, which "
                               "recomputes it")
    return obj


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
    if path.is_symlink():
        raise UserError(f"{path} is a symbolic link (to {os.readlink(path)}); cffdyn does not write through "
                        "links in an output directory", f"remove the link {path} and rerun")
    _drop_torn_tail(path)
    lines = "".join(json.dumps(to_jsonable(rec), allow_nan=False) + "\n" for rec in records)
    size = path.stat().st_size if path.exists() else 0
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            with contextlib.suppress(OSError):   # nothing half-appended: back to the last whole record
                os.truncate(path, size)
            raise disk_full_error(path) from None
        raise


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


def clean_stale_tmp(directory: str | os.PathLike, *, min_age_s: float = 300.0) -> list[Path]:
    """Remove temporary files that :func:`atomic_write_bytes` left in ``directory`` (not below it)
    when its writer was killed: those whose writer's pid is gone, and unnamed ones older than
    ``min_age_s``.  Returns the removed paths."""
    removed = []
    d = Path(directory)
    if not d.is_dir():
        return removed
    now = time.time()
    for f in d.iterdir():
        m = _TMP_RE.match(f.name)
        if not m or f.is_symlink() or not f.is_file():
            continue
        pid = int(m.group(1)) if m.group(1) else None
        if pid is not None and pid != os.getpid() and pid_alive(pid):
            continue
        if pid is None:
            try:
                if now - f.stat().st_mtime < min_age_s:
                    continue
            except OSError:
                continue
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
            removed.append(f)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (signal 0; another user's process counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputLockedError(UserError):
    """Another process holds the output directory's lock."""


@contextlib.contextmanager
def output_dir(path: str | os.PathLike, option: str = "--out") -> Iterator[Path]:
    """Claim ``path`` as this process's output directory for the ``with`` block.

    Checks it can be written (:func:`ensure_writable_dir`), takes a non-blocking exclusive
    ``fcntl.flock`` on ``path/.cffdyn.lock`` (held by another process: :class:`OutputLockedError`
    naming its pid), removes temporary files a killed writer left (:func:`clean_stale_tmp`), and
    on leaving releases the lock; when the block failed in a directory it created that holds
    nothing else, the lock file and the directory are removed (a failed run leaves no empty
    ``--out``).
    """
    import fcntl

    path = Path(path)
    created = not path.exists()
    ensure_writable_dir(path, option)
    lock = path / LOCK_NAME
    if lock.is_symlink():
        lock.unlink()
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise OutputLockedError(f"{option} {path} is in use by another cffdyn process (pid {holder})",
                                f"wait for it to finish, or give {option} another directory") from None
    ok = False
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        clean_stale_tmp(path)
        yield path
        ok = True
    finally:
        if created and not ok:
            with contextlib.suppress(OSError):
                if [p.name for p in path.iterdir()] == [LOCK_NAME]:
                    lock.unlink()
                    path.rmdir()
        os.close(fd)   # releases the flock; the lock file stays (removing it would race a waiting writer)


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
