"""A tiny path language for picking one number out of a result JSON.

A path is dot-separated segments; each segment is a key optionally followed by selectors::

    autograd.max_rel_err
    analysis.comparisons[factor=loss_mode].ratio
    analysis.cells[levels.loss_mode=clamp,levels.method=cff2].mean
    analysis.comparisons[0].boot_ci[1]
    runs[cell.method=cff1].epoch_time_s           # several matches -> a list (for reduce="mean")
    runs[*].car_layer0

Selectors: ``[i]`` (list index, negative allowed), ``[*]`` (every element), ``[k=v,...]`` (the
elements whose dotted key ``k`` has ``str(value) == v``; every condition must hold).  ``[*]`` and
``[k=v]`` make the result a list, and later segments apply to each element.  Any miss raises
``ValueError`` naming the path and the failing segment, so a renamed JSON field is a clear error.
"""
from __future__ import annotations

import re
from typing import Any

__all__ = ["resolve", "resolve_one"]

_SEG = re.compile(r"^([^\[\]]*)((?:\[[^\[\]]*\])*)$")
_SEL = re.compile(r"\[([^\[\]]*)\]")


def _split(path: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in path:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "." and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    if depth != 0 or any(s == "" for s in out):
        raise ValueError(f"json path {path!r}: malformed")
    return out


def _get_key(obj: Any, key: str, path: str) -> Any:
    if not isinstance(obj, dict):
        raise ValueError(f"json path {path!r}: {key!r} looked up in a {type(obj).__name__}, not an object")
    if key not in obj:
        raise ValueError(f"json path {path!r}: key {key!r} not found (keys: {', '.join(map(str, obj))[:200]})")
    return obj[key]


def _dotted(obj: Any, key: str) -> Any:
    for k in key.split("."):
        if not isinstance(obj, dict) or k not in obj:
            return _MISSING
        obj = obj[k]
    return obj


_MISSING = object()


def _select(obj: Any, sel: str, path: str) -> tuple[Any, bool]:
    """Apply one selector; returns (value, made_list)."""
    if not isinstance(obj, list):
        raise ValueError(f"json path {path!r}: selector [{sel}] applied to a {type(obj).__name__}, not a list")
    sel = sel.strip()
    if sel == "*":
        return list(obj), True
    if re.fullmatch(r"-?\d+", sel):
        i = int(sel)
        if not -len(obj) <= i < len(obj):
            raise ValueError(f"json path {path!r}: index {i} out of range (length {len(obj)})")
        return obj[i], False
    conds = []
    for part in sel.split(","):
        if "=" not in part:
            raise ValueError(f"json path {path!r}: selector [{sel}] is not an index, * or key=value list")
        k, v = part.split("=", 1)
        conds.append((k.strip(), v.strip()))
    hits = [el for el in obj if all((x := _dotted(el, k)) is not _MISSING and str(x) == v for k, v in conds)]
    if not hits:
        raise ValueError(f"json path {path!r}: no element matches [{sel}]")
    return hits, True


def resolve(data: Any, path: str) -> Any:
    """Value at ``path`` (a list where a ``[*]``/``[k=v]`` selector was used)."""
    cur: list[Any] = [data]
    listed = False
    for seg in _split(path):
        m = _SEG.match(seg)
        if not m:
            raise ValueError(f"json path {path!r}: malformed segment {seg!r}")
        key, sels = m.group(1), _SEL.findall(m.group(2))
        nxt = []
        for obj in cur:
            v = _get_key(obj, key, path) if key else obj
            vals, made = [v], False
            for s in sels:
                new = []
                for x in vals:
                    r, ml = _select(x, s, path)
                    new.extend(r if ml else [r])
                    made = made or ml
                vals = new
            nxt.extend(vals)
            listed = listed or made
        cur = nxt
    return cur if listed else cur[0]


def resolve_one(data: Any, path: str) -> Any:
    """Like :func:`resolve` but requires exactly one value (a one-element selection is unwrapped)."""
    v = resolve(data, path)
    if isinstance(v, list) and _has_selector(path):
        if len(v) != 1:
            raise ValueError(f"json path {path!r}: selects {len(v)} values, expected exactly one")
        return v[0]
    return v


def _has_selector(path: str) -> bool:
    return any(s == "*" or "=" in s for s in _SEL.findall(path))
