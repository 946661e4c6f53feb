"""What the HTML needs beyond pandoc: the PDF's figure and table numbers, and tidy MathML.

pandoc numbers figures and tables its own way (a ``table`` environment with two ``tabular`` s
counted twice, captions without "Table n"), so the HTML's numbers drifted from the PDF's.
:func:`number_floats` numbers the floats of the flattened LaTeX as LaTeX does (figures and
tables separately, each in source order, one number per ``\\caption``), writes "Figure n:" /
"Table n:" into each caption and replaces every ``\\ref`` to a float by a link with that number.
:func:`tidy_mathml` removes the spacing browsers put around fences (``P ( i )``): pandoc 2.17
marks every parenthesis ``stretchy``, and a browser draws a stretched fence with the space of a tall
glyph even around ``P(i)``; only fences around tall content (a fraction, a sum with limits) stay
stretchy.  Function names (``\\min``, ``\\log``) become identifiers, which take no operator space.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

__all__ = ["float_numbers", "number_floats", "tidy_mathml"]

_MATHML = "http://www.w3.org/1998/Math/MathML"
#: elements taller than a line: a fence around one of them must stretch
_TALL = {"mfrac", "munder", "munderover", "mover", "mtable", "msqrt", "mroot"}

_FLOAT = re.compile(r"\\begin\{(figure|table)\*?\}(.*?)\\end\{\1\*?\}", re.S)
_KIND = {"figure": "Figure", "table": "Table"}


def float_numbers(tex: str) -> dict[str, tuple[str, int]]:
    """label -> ("Figure" | "Table", number), in LaTeX's order (source order per kind)."""
    count = {"figure": 0, "table": 0}
    out: dict[str, tuple[str, int]] = {}
    for m in _FLOAT.finditer(tex):
        kind, body = m.group(1), m.group(2)
        if "\\caption" not in body:
            continue
        count[kind] += 1
        for lab in re.findall(r"\\label\{([^}]*)\}", body):
            out[lab] = (_KIND[kind], count[kind])
    return out


def number_floats(tex: str) -> str:
    """Captions prefixed "Figure n: " / "Table n: " and ``\\ref{label}`` of a float replaced by
    ``\\hyperref[label]{n}``, with the numbers of :func:`float_numbers`."""
    nums = float_numbers(tex)
    count = {"figure": 0, "table": 0}

    def caption(m: re.Match) -> str:
        kind = m.group(1)
        if "\\caption" not in m.group(2):
            return m.group(0)
        count[kind] += 1
        body = m.group(2).replace("\\caption{", f"\\caption{{{_KIND[kind]} {count[kind]}: ", 1)
        return f"\\begin{{{kind}}}{body}\\end{{{kind}}}"
    tex = _FLOAT.sub(caption, tex)

    def ref(m: re.Match) -> str:
        lab = m.group(1)
        return f"\\hyperref[{lab}]{{{nums[lab][1]}}}" if lab in nums else m.group(0)
    return re.sub(r"\\ref\{([^}]*)\}", ref, tex)


def _unstretch(block: str) -> str:
    """One ``<math>`` element with every pair of stretchy fences that encloses no tall element
    (:data:`_TALL`) made non-stretchy; unchanged if it does not parse as XML."""
    try:
        root = ET.fromstring(block)
    except ET.ParseError:
        return block
    tag = lambda e: e.tag.rsplit("}", 1)[-1]  # noqa: E731
    for row in root.iter(f"{{{_MATHML}}}mrow"):
        kids = list(row)
        if len(kids) < 2 or not all(tag(k) == "mo" and k.get("stretchy") == "true" for k in (kids[0], kids[-1])):
            continue
        if (kids[0].get("form"), kids[-1].get("form")) != ("prefix", "postfix"):
            continue
        if not any(tag(d) in _TALL for k in kids[1:-1] for d in k.iter()):
            kids[0].set("stretchy", "false")
            kids[-1].set("stretchy", "false")
    return ET.tostring(root, encoding="unicode")


def tidy_mathml(html: str) -> str:
    """Fences and bars as ``<mo>`` without the operator spacing browsers add around them, stretchy
    only around tall content (:func:`_unstretch`); function names as ``<mi>``; in inline math (where
    no fence needs to grow) fences drawn at text size, and a lone operator (``5.90$\\times$``)
    without spacing."""
    ET.register_namespace("", _MATHML)

    def fix(m: re.Match) -> str:
        attrs = re.sub(r'\s(?:lspace|rspace)="[^"]*"', "", m.group(1))
        return f'<mo{attrs} lspace="0em" rspace="0em">{m.group(2)}</mo>'
    html = re.sub(r"<mo([^>]*)>([()\[\]|{}\u2016\u27e8\u27e9])</mo>", fix, html)
    html = re.sub(r"<mo>(min|max|log|exp|tanh|sinh|cosh|sin|cos|tan|Pr|det|sup|inf|lim|arg)</mo>", r"<mi>\1</mi>",
                  html)
    html = re.sub(r'<math display="block".*?</math>', lambda m: _unstretch(m.group(0)), html, flags=re.S)

    def inline(m: re.Match) -> str:
        t = m.group(0).replace('stretchy="true"', 'stretchy="false"')
        return re.sub(r"(<semantics>)<mo>([^<]{1,2})</mo>(<annotation)", r'\1<mo lspace="0em" rspace="0em">\2</mo>\3', t)
    return re.sub(r'<math display="inline".*?</math>', inline, html, flags=re.S)
