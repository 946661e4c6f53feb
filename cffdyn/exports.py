"""What a study declares for the manuscript: its numbers, as :class:`NumberSpec` records.

A study's numbers module (``theory/verify_numbers.py``, ``vit/study_numbers.py``, ...) maps the
study's result JSON to the specs of the numbers the manuscript prints: each spec names a LaTeX
macro, the source (the study's key in the build, ``"derived"`` for numbers a study computes from
its recorded runs at build time, or ``"source"`` for the literature values), a
:mod:`paper.jsonpath` path into that JSON, an optional reduction over a multi-valued path, a
scale, a format and what the number is (``desc``).  A number the manuscript prints with a unit
or beside its uncertainty declares them (``unit``: the TeX the text prints right after it;
``uncertainty``: the macros of which one must stand beside it), and the manuscript's text check
(:func:`paper.prose.unquantified`) holds the text to them.  The paper build evaluates and
renders the specs (:mod:`paper.numbers`); nothing here imports a study or the paper.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["NumberSpec", "REDUCTIONS", "macro_name", "study_timing_specs", "finite"]

REDUCTIONS = ("mean", "sd", "min", "max", "count", "ratio_max_min")
_MACRO = re.compile(r"^[A-Za-z]+$")
_DIGITS = ["Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine"]


_NUMBERS = {"10": "Ten", "100": "Hundred", "1000": "Thousand"}


def _digits(chunk: str) -> str:
    return _NUMBERS.get(chunk) or "".join(_DIGITS[int(ch)] for ch in chunk)


def macro_name(*parts: Any) -> str:
    """A LaTeX-safe macro name (letters only) from parts: ``('cell', 'cff2', 0)`` -> ``CellCffTwoZero``."""
    out = ""
    for p in parts:
        for tok in re.split(r"[^A-Za-z0-9]+", str(p)):
            for chunk in re.findall(r"[A-Za-z]+|\d+", tok):
                out += _digits(chunk) if chunk.isdigit() else chunk[:1].upper() + chunk[1:]
    if not out:
        raise ValueError(f"macro_name{parts}: empty")
    return out


@dataclass(frozen=True)
class NumberSpec:
    macro: str
    source: str            # study key, or "source" (paper/source_numbers.json)
    path: str
    fmt: str = ".2f"
    scale: float = 1.0
    reduce: str | None = None
    desc: str = ""
    unit: str = ""                    # TeX printed right after the number, e.g. r"\%", r"\,s"
    uncertainty: tuple[str, ...] = ()  # macros of its SD, interval or test, one printed beside it

    def __post_init__(self) -> None:
        if not _MACRO.match(self.macro):
            raise ValueError(f"NumberSpec: macro {self.macro!r} must be letters only")
        if self.reduce is not None and self.reduce not in REDUCTIONS:
            raise ValueError(f"NumberSpec {self.macro}: reduce={self.reduce!r} not in {REDUCTIONS}")


def study_timing_specs(prefix: str, source: str, data: dict) -> list[NumberSpec]:
    """``<prefix>WallMin``, ``<prefix>LoadStart``, ``<prefix>LoadEnd`` from a study record's
    ``timing`` (the ViT study layout: wall, load at the first task's start, machine at the end),
    each only where recorded."""
    t = data.get("timing") or {}
    out = []
    if t.get("wall_s") is not None:
        out.append(NumberSpec(f"{prefix}WallMin", source, "timing.wall_s", ".1f", 1 / 60, None, "study wall time (min)",
                              unit=r"\,min"))
    if t.get("load_avg_start"):
        out.append(NumberSpec(f"{prefix}LoadStart", source, "timing.load_avg_start[0]", ".1f", 1.0, None,
                              "1-min load average at the start"))
    if (t.get("machine") or {}).get("load_avg"):
        out.append(NumberSpec(f"{prefix}LoadEnd", source, "timing.machine.load_avg[0]", ".1f", 1.0, None,
                              "1-min load average at the end"))
    return out


def finite(x: Any) -> bool:
    """A real number that is not NaN or infinite (a bool is not a number here)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
