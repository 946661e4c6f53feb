"""One-line failures for every command.

Bad input or an unusable environment is the user's to fix, so it ends in ONE line that names
the problem and the fix, a non-zero exit, and no traceback.  Code raises :class:`UserError`
(or lets a known exception pass through :func:`guarded`); a traceback that still reaches the
user is a bug in cffdyn.

Exit codes: 2 bad input (as argparse), 130 interrupted (Ctrl-C, as the shell).
"""
from __future__ import annotations

import argparse
import errno
import math
import sys
from typing import Callable, Sequence

__all__ = ["UserError", "CorruptFileError", "DiskFullError", "disk_full_error", "guarded", "HelpFormatter",
           "ArgumentParser", "make_parser", "positive_int", "nonneg_int", "finite_float", "positive_float", "nonneg_float", "EXIT_USAGE",
           "EXIT_INTERRUPTED"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem the user can fix: ``UserError("--out /x is a file", "give a directory")``.

    ``str()`` is the whole one-line message: ``problem; fix``.
    """

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}" if fix else problem)


class CorruptFileError(UserError, ValueError):
    """A recorded file (JSON, checkpoint, data) that cannot be read; names its path."""


class DiskFullError(UserError, OSError):
    """The filesystem (or quota) is full while writing a named file; nothing was half-written."""


def disk_full_error(path: object, atomic: bool = True) -> DiskFullError:
    """One line for ENOSPC/EDQUOT while writing ``path`` (``atomic``: by the atomic writer, so
    the old file, if any, is intact)."""
    import os.path

    state = " (nothing was half-written: the old file, if any, is intact)" if atomic else ""
    where = os.path.dirname(str(path)) or "."
    err = DiskFullError(f"no space left on the device writing {path}{state}",
                        f"free space on that filesystem (see 'df -h {where}'), or give --out a directory on "
                        "another disk, then rerun")
    err.errno = errno.ENOSPC   # callers that test the errno of an OSError still see a full disk
    return err


_MEMORY_FIX = ("reduce the sizes (--cases, --N, --subset, --batch-size, --trials, model width) or free memory, "
               "then rerun")


def guarded(fn: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None,
            prog: str, *, resumable: bool = False) -> int:
    """Run a command's ``main``; turn UserError and Ctrl-C into one line and an exit code.

    ``resumable`` adds the hint that rerunning the same command resumes (studies, training).
    """
    try:
        return int(fn(argv) or 0)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        hint = "; rerun the same command to resume where it stopped" if resumable else ""
        print(f"\n{prog}: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `cffdyn ... | head`: the reader left, nothing to report
        return 0
    except MemoryError:
        print(f"{prog}: error: out of memory; {_MEMORY_FIX}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as exc:
        # torch reports a failed allocation (CPU "can't allocate memory", CUDA OutOfMemoryError)
        # and a scalar that overflows float32 as RuntimeError: the user's sizes or step sizes
        text = str(exc)
        if type(exc).__name__ == "OutOfMemoryError" or "can't allocate memory" in text:
            print(f"{prog}: error: out of memory ({text.splitlines()[0][:160]}); {_MEMORY_FIX}", file=sys.stderr)
            return EXIT_USAGE
        if "cannot be converted to type" in text and "without overflow" in text:
            print(f"{prog}: error: a value overflowed float32 ({text.splitlines()[0]}); likely cause: a learning "
                  f"rate, weight decay or noise level too large, reduce it and rerun", file=sys.stderr)
            return EXIT_USAGE
        raise
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = exc.filename or "the output"
        print(f"{prog}: error: {disk_full_error(where, atomic=False)}", file=sys.stderr)
        return EXIT_USAGE


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown once: skipped where the help already says ``default`` or it is None/False."""

    def _get_help_string(self, action: argparse.Action) -> str:
        h = action.help or ""
        d = action.default
        if "default" in h or d is None or d is False or d is argparse.SUPPRESS \
                or action.option_strings == [] or isinstance(action, argparse._HelpAction):
            return h
        return h + " (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and no silent abbreviations."""

    def __init__(self, *args, **kw) -> None:
        kw.setdefault("formatter_class", HelpFormatter)
        kw.setdefault("allow_abbrev", False)
        super().__init__(*args, **kw)

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def make_parser(prog: str | None = None, **kw) -> ArgumentParser:
    """A parser with the project's conventions; ``add_subparsers`` children inherit them."""
    p = ArgumentParser(prog=prog, **kw)
    return p


def _typed(name: str, conv: Callable[[str], float | int], ok: Callable[[float], bool], what: str):
    def parse(text: str):
        try:
            val = conv(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if isinstance(val, float) and not math.isfinite(val) or not ok(val):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return val
    parse.__name__ = name  # argparse names the type in its messages
    return parse


positive_int = _typed("positive_int", int, lambda v: v >= 1, "an integer >= 1")
nonneg_int = _typed("nonneg_int", int, lambda v: v >= 0, "an integer >= 0")
finite_float = _typed("finite_float", float, lambda v: True, "a finite number")
positive_float = _typed("positive_float", float, lambda v: v > 0, "a finite number > 0")
nonneg_float = _typed("nonneg_float", float, lambda v: v >= 0, "a finite number >= 0")
