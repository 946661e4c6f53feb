"""Numbers in the manuscript: every one comes from a JSON file through a :class:`NumberSpec`.

A spec names a LaTeX macro, the source (a study key, or ``"source"`` for the literature values
in ``paper/source_numbers.json``), a :mod:`paper.jsonpath` path, an optional reduction over a
multi-valued path, a scale and a format.  :func:`evaluate_all` turns the specs into
:class:`Number` records, which :func:`write_numbers` writes as

* ``generated/numbers.tex``: ``\\newcommand{\\VarRatio}{5.90}`` lines (the text uses the macros);
* ``numbers.json``: ``macro -> {value, tex, raw, source_json, json_path, scale, fmt, reduce}``
  (``tex``: the value as printed, with a minus sign U+2212 for a leading ``-``), so
  every number in the rendered text can be traced back to (and checked against) its JSON.

Formats: a Python format spec applied to ``raw * scale`` (``".2f"``, ``"d"``, ``".1e"``), or
``"p"`` for p-values (``< 0.001`` below 0.001, else 3 decimals; the build turns ``p = \\P..`` in the
text into ``p < 0.001`` for such a bound, see :func:`paper.build.p_relations`), or ``"sci"``
(``1.2\\times10^{-16}``).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from cffdyn.io import atomic_write_json, atomic_write_text
from paper.jsonpath import resolve, resolve_one

__all__ = ["NumberSpec", "Number", "format_value", "evaluate", "write_numbers", "SOURCE_NUMBERS",
           "load_source_numbers", "macro_name", "REDUCTIONS", "typeset"]

SOURCE_NUMBERS = Path(__file__).with_name("source_numbers.json")
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

    def __post_init__(self) -> None:
        if not _MACRO.match(self.macro):
            raise ValueError(f"NumberSpec: macro {self.macro!r} must be letters only")
        if self.reduce is not None and self.reduce not in REDUCTIONS:
            raise ValueError(f"NumberSpec {self.macro}: reduce={self.reduce!r} not in {REDUCTIONS}")


@dataclass(frozen=True)
class Number:
    spec: NumberSpec
    raw: float | int | None
    value: str             # the text that appears in the manuscript
    source_json: str


def format_value(raw: Any, fmt: str, scale: float = 1.0) -> str:
    """Text of a number (``n/a`` for None/NaN)."""
    if raw is None or (isinstance(raw, float) and not math.isfinite(raw)):
        return "n/a"
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise ValueError(f"format_value: {raw!r} is not a number")
    x = raw * scale
    if fmt == "p":
        return "< 0.001" if x < 0.001 else f"{x:.3f}"
    if fmt == "sci":
        if x == 0:
            return "0"
        e = int(math.floor(math.log10(abs(x))))
        return f"{x / 10 ** e:.1f}\\times10^{{{e}}}"
    if fmt == "d":
        return f"{int(round(x)):d}"
    return format(x, fmt)


def _reduce(vals: Any, how: str | None, spec: NumberSpec) -> Any:
    if how is None:
        return vals
    if not isinstance(vals, list):
        vals = [vals]
    if how == "count":
        return len(vals)
    nums = [float(v) for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not nums:
        return None
    if how == "mean":
        return sum(nums) / len(nums)
    if how == "sd":  # sample SD (ddof 1) over the runs: the spread a mean over them is quoted with
        if len(nums) < 2:
            return None
        m = sum(nums) / len(nums)
        return math.sqrt(sum((x - m) ** 2 for x in nums) / (len(nums) - 1))
    if how == "min":
        return min(nums)
    if how == "max":
        return max(nums)
    if how == "ratio_max_min":
        return max(nums) / min(nums) if min(nums) > 0 else None
    raise ValueError(f"NumberSpec {spec.macro}: unknown reduce {how!r}")


def evaluate(spec: NumberSpec, data: Any, source_json: str) -> Number:
    """Evaluate one spec against the loaded JSON ``data`` (``source_json`` is recorded)."""
    try:
        raw = _reduce(resolve(data, spec.path), spec.reduce, spec) if spec.reduce else resolve_one(data, spec.path)
        value = format_value(raw, spec.fmt, spec.scale)
    except ValueError as exc:
        raise ValueError(f"number \\{spec.macro} ({spec.desc or spec.path}) from {source_json}: {exc}") from None
    return Number(spec, raw, value, source_json)


def typeset(value: str, fmt: str) -> str:
    """The text of a number as it is printed: a leading ``-`` becomes the minus sign U+2212
    (the preamble maps it to a math minus; pandoc passes it through), so ``-0.49`` does not print
    with a hyphen.  ``sci`` values are math already (their signs are math minus signs)."""
    if fmt != "sci" and value.startswith("-"):
        return "\u2212" + value[1:]
    return value


def load_source_numbers(path: Path = SOURCE_NUMBERS) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_numbers(numbers: list[Number], out_dir: Path) -> tuple[Path, Path]:
    """Write ``generated/numbers.tex`` and ``numbers.json`` under ``out_dir``."""
    seen: set[str] = set()
    lines = ["% generated by paper/build.py from the result JSONs: do not edit"]
    table: dict[str, Any] = {}
    for n in numbers:
        if n.spec.macro in seen:
            raise ValueError(f"macro \\{n.spec.macro} defined twice")
        seen.add(n.spec.macro)
        tex = typeset(n.value, n.spec.fmt)
        lines.append(f"\\newcommand{{\\{n.spec.macro}}}{{{tex}}}")
        table[n.spec.macro] = {"value": n.value, "tex": tex, "raw": n.raw, "source_json": n.source_json,
                               "json_path": n.spec.path, "scale": n.spec.scale, "fmt": n.spec.fmt,
                               "reduce": n.spec.reduce, "desc": n.spec.desc}
    tex = atomic_write_text(Path(out_dir) / "generated" / "numbers.tex", "\n".join(lines) + "\n")
    js = atomic_write_json(Path(out_dir) / "numbers.json", table, hashed=False)   # a table: one entry per macro
    return tex, js


def numbers_by_macro(numbers: list[Number]) -> Mapping[str, Number]:
    return {n.spec.macro: n for n in numbers}
