"""Checks of the generated text: complete sentences, numbers with their unit and uncertainty.

* :func:`fragments`: a generated sentence or table cell that stops mid-sentence (ends on an
  article, a preposition, a conjunction, a copula or a comma: "the ratio is");
* :func:`unquantified`: a number printed without its unit or without the uncertainty the build
  has for it (:func:`rules`: what each number's spec declares).
"""
from __future__ import annotations

import re
from typing import Any, Mapping

__all__ = ["DANGLING", "rules", "fragments", "table_cells", "unquantified"]

#: words a complete sentence or cell does not end on
DANGLING = frozenset("""a an the of to in on at by for with from than as and or but nor that which whose is are was
were be been being has have had its their our this these those per via into onto between""".split())

def rules(numbers: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The text check's rules from ``numbers.json`` (macro -> entry): every number whose spec
    declares a unit or an uncertainty (:class:`cffdyn.exports.NumberSpec`) -> (its unit as a
    regex, the macros of which one must follow it: its SD, interval or the p of its test)."""
    return {m: (re.escape(e.get("unit") or ""), tuple(e.get("uncertainty") or ()))
            for m, e in numbers.items() if e.get("unit") or e.get("uncertainty")}


WINDOW = 160


def _plain(tex: str) -> str:
    """TeX -> words: comments, math and commands with their braces removed."""
    tex = re.sub(r"(?<!\\)%.*", "", tex)
    tex = re.sub(r"\$[^$]*\$", " X ", tex)
    tex = re.sub(r"\\[A-Za-z]+\*?(\[[^\]]*\])?", " ", tex)
    return re.sub(r"[{}~]", " ", tex)


def _last_word(text: str) -> str:
    words = re.findall(r"[A-Za-z,]+", _plain(text).strip().rstrip(".;:)"))
    return words[-1].lower() if words else ""


def fragments(pieces: list[str]) -> list[str]:
    """The pieces (sentences or cells, LaTeX, of three words or more) that end on a dangling word or a comma."""
    bad = []
    for p in pieces:
        s = _plain(p).strip()
        if len(re.findall(r"[A-Za-z]+", s)) < 3:   # a label ("in", "yes", "clamp"), not a sentence
            continue
        if s.endswith((",", ";", ":")) or _last_word(p).rstrip(",") in DANGLING:
            bad.append(p.strip()[-80:])
    return bad


def table_cells(tab: str) -> list[str]:
    """The cells of a generated tabular (rules, captions and the header row dropped)."""
    body = tab.split(r"\midrule", 1)[-1].split(r"\bottomrule", 1)[0]
    cells = []
    for row in re.split(r"\\\\", body):
        cells += [c for c in re.split(r"(?<!\\)&", row) if c.strip()]
    return cells


def unquantified(tex: str, checks: Mapping[str, tuple[str, tuple[str, ...]]], window: int = WINDOW) -> list[str]:
    """Every use in ``tex`` of a macro of ``checks`` (:func:`rules`) not followed, within ``window``
    characters, by its unit (directly) and by one of its uncertainty macros."""
    body = re.sub(r"(?<!\\)%.*", "", tex)
    body = re.sub(r"\\newcommand\{\\[A-Za-z]+\}\{[^}]*\}", "", body)
    bad = []
    for macro, (unit, unc) in checks.items():
        for m in re.finditer(r"\\" + macro + r"(?![A-Za-z])", body):
            after = body[m.end():m.end() + window]
            if unit and not re.match(r"(\{\})?" + unit, after):
                bad.append(f"\\{macro} without its unit ({unit!r}): ...{body[m.start():m.end() + 40]}")
            if unc and not any(re.search(r"\\" + u + r"(?![A-Za-z])", after) for u in unc):
                bad.append(f"\\{macro} without its uncertainty (one of {', '.join(unc)}): "
                           f"...{body[m.start():m.end() + 60]}")
    return bad
