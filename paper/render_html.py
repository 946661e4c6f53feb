"""Render the manuscript's restricted LaTeX to one self-contained HTML file.

The manuscript is written once, in LaTeX (``paper/manuscript.tex`` + ``paper/sections/``); the
PDF comes from pdflatex where it is installed, and this module turns the same flattened source
into HTML so the two renderings share every word, table and figure.  Supported subset:

* preamble: ``\\title``, ``\\author``, ``\\date``; argument-free ``\\newcommand`` macros (the
  generated numbers) are expanded; ``\\maketitle``; ``abstract``;
* ``\\section``, ``\\subsection``, ``\\paragraph``, ``\\label``/``\\ref`` (sections, figures,
  tables, equations get numbers in order of appearance);
* text commands ``\\emph \\textbf \\textit \\texttt \\url \\href \\footnote \\cite``, the usual
  escapes, ``~``, dashes and quotes;
* inline math ``$..$``: converted to Unicode/HTML (Greek, sub/superscripts, fractions, common
  operators); display math (``\\[..\\]``, ``equation``, ``align*``): rendered to PNG with
  matplotlib's mathtext and embedded (falls back to the Unicode conversion);
* ``itemize``/``enumerate``; ``table`` with ``tabular`` (booktabs rules, ``\\multicolumn``) and
  ``\\caption``; ``figure`` with ``\\includegraphics`` (the PNG next to the named file is
  embedded as base64) and ``\\caption``.

Anything outside the subset raises ``ValueError`` naming the command, so the two renderings
cannot silently drift apart.
"""
from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

__all__ = ["render_html", "latex_macros", "math_to_html", "display_math_png"]

GREEK = {n: c for n, c in zip(
    "alpha beta gamma delta epsilon varepsilon zeta eta theta kappa lambda mu nu xi pi rho sigma tau "
    "phi varphi chi psi omega Gamma Delta Theta Lambda Xi Pi Sigma Phi Psi Omega".split(),
    "αβγδεεζηθκλμνξπρστφφχψωΓΔΘΛΞΠΣΦΨΩ")}
MATH_SYMBOLS = {
    "le": "≤", "leq": "≤", "ge": "≥", "geq": "≥", "ne": "≠", "neq": "≠", "times": "×", "cdot": "·",
    "pm": "±", "approx": "≈", "sim": "∼", "in": "∈", "notin": "∉", "subseteq": "⊆", "cup": "∪", "cap": "∩",
    "sum": "∑", "prod": "∏", "infty": "∞", "to": "→", "rightarrow": "→", "leftarrow": "←", "mid": "|",
    "partial": "∂", "nabla": "∇", "propto": "∝", "ldots": "…", "cdots": "⋯", "dots": "…", "lVert": "‖",
    "rVert": "‖", "|": "‖", "{": "{", "}": "}", "langle": "⟨", "rangle": "⟩", "quad": "\u2003",
    "qquad": "\u2003\u2003", ",": "\u2009", ";": "\u2005", "!": "", " ": " ", "min": "min", "max": "max",
    "log": "log", "exp": "exp", "ln": "ln", "sqrt": "√", "top": "ᵀ", "prime": "′", "ell": "ℓ",
    "forall": "∀", "exists": "∃", "emptyset": "∅", "perp": "⊥", "circ": "∘", "star": "⋆", "%": "%",
    "Leftrightarrow": "⇔", "Rightarrow": "⇒", "equiv": "≡", "lfloor": "⌊", "rfloor": "⌋", "_": "_",
    "#": "#", "&": "&amp;", "lim": "lim", "det": "det", "tanh": "tanh", "sin": "sin", "cos": "cos", "arg": "arg", "tr": "tr", "Pr": "Pr", "ll": "≪", "gg": "≫",
}
MATH_FONTS = {"mathbb": {"E": "𝔼", "R": "ℝ", "N": "ℕ", "1": "𝟙", "P": "ℙ"}}
TEXT_ESCAPES = {"%": "%", "&": "&amp;", "_": "_", "#": "#", "$": "$", "{": "{", "}": "}", ",": "\u2009",
                " ": " ", "\\": "<br>", "ldots": "…", "dots": "…", "quad": "\u2003", "qquad": "\u2003\u2003",
                "noindent": "", "centering": "", "small": "", "footnotesize": "", "par": "", "medskip": "",
                "smallskip": "", "bigskip": "", "newline": "<br>", "LaTeX": "LaTeX", "TeX": "TeX", "-": "",
                "textbackslash": "\\", "S": "§", "times": "×", "checkmark": "✓", "hfill": "", "relax": "",
                "protect": "", "clearpage": "", "newpage": "", "^": "^", "~": "~"}


# --------------------------------------------------------------------------- scanning helpers
def _group(s: str, i: int) -> tuple[str, int]:
    """The brace group starting at s[i] == '{' (returns content, index after it)."""
    if i >= len(s) or s[i] != "{":
        raise ValueError(f"expected '{{' at: {s[i:i + 40]!r}")
    depth, j = 0, i
    while j < len(s):
        c = s[j]
        if c == "\\":
            j += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return s[i + 1:j], j + 1
        j += 1
    raise ValueError(f"unbalanced braces at: {s[i:i + 60]!r}")


def _arg(s: str, i: int) -> tuple[str, int]:
    """A macro argument: a brace group, a command (``\\mu``) or one character."""
    if i < len(s) and s[i] == "{":
        return _group(s, i)
    if i < len(s) and s[i] == "\\":
        _, k = _cmd(s, i)
        return s[i:k], k
    return s[i:i + 1], i + 1


def _opt(s: str, i: int) -> tuple[str | None, int]:
    """Optional [..] argument at s[i] (skipping spaces)."""
    j = i
    while j < len(s) and s[j] in " \t":
        j += 1
    if j < len(s) and s[j] == "[":
        k = s.index("]", j)
        return s[j + 1:k], k + 1
    return None, i


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t\n":
        i += 1
    return i


def _cmd(s: str, i: int) -> tuple[str, int]:
    """Command name after the backslash at s[i]."""
    m = re.match(r"\\([A-Za-z]+|.)", s[i:])
    if not m:
        raise ValueError(f"dangling backslash at: {s[i:i + 20]!r}")
    return m.group(1), i + m.end()


def strip_comments(tex: str) -> str:
    return "\n".join(re.sub(r"(?<!\\)%.*", "", line) for line in tex.split("\n"))


def latex_macros(tex: str) -> dict[str, str]:
    r"""Every argument-free ``\newcommand{\X}{body}`` (and ``\renewcommand``) in ``tex``."""
    out: dict[str, str] = {}
    for m in re.finditer(r"\\(?:re)?newcommand\{\\([A-Za-z]+)\}", tex):
        body, _ = _group(tex, m.end())
        out[m.group(1)] = body
    return out


def _remove_newcommands(tex: str) -> str:
    while True:
        m = re.search(r"\\(?:re)?newcommand\{\\([A-Za-z]+)\}", tex)
        if not m:
            return tex
        _, end = _group(tex, m.end())
        tex = tex[:m.start()] + tex[end:]


def expand_macros(tex: str, macros: dict[str, str]) -> str:
    pat = re.compile(r"\\([A-Za-z]+)(?![A-Za-z])\s?")
    for _ in range(6):
        new = pat.sub(lambda m: macros[m.group(1)] if m.group(1) in macros else m.group(0), tex)
        if new == tex:
            return new
        tex = new
    raise ValueError("macro expansion does not terminate (recursive \\newcommand?)")


# --------------------------------------------------------------------------- math
def math_to_html(s: str) -> str:
    """Inline LaTeX math -> HTML (Unicode symbols, <sub>/<sup>, a/b fractions)."""
    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            name, j = _cmd(s, i)
            if name in GREEK:
                out.append(GREEK[name])
            elif name in MATH_SYMBOLS and name != "sqrt":
                sym = MATH_SYMBOLS[name]
                out.append(f" {sym} " if name in ("le", "leq", "ge", "geq", "ne", "neq", "approx", "in", "to",
                                                 "equiv", "propto", "subseteq", "notin") else sym)
            elif name in ("frac", "dfrac", "tfrac"):
                a, j = _group(s, _skip_ws(s, j))
                b, j = _group(s, _skip_ws(s, j))
                fa, fb = math_to_html(a), math_to_html(b)
                wrap = lambda t, raw: f"({t})" if re.search(r"[+\-−\s]", raw.strip()) else t
                out.append(f"{wrap(fa, a)}/{wrap(fb, b)}")
            elif name == "sqrt":
                a, j = _group(s, _skip_ws(s, j))
                out.append(f"√({math_to_html(a)})")
            elif name in ("mathrm", "text", "mathbf", "operatorname", "mathit", "textrm", "mathsf", "boldsymbol",
                          "mathcal", "textnormal", "bm"):
                a, j = _group(s, _skip_ws(s, j))
                out.append(html.escape(a) if name in ("text", "textrm", "textnormal") else math_to_html(a))
            elif name in MATH_FONTS:
                a, j = _group(s, _skip_ws(s, j))
                out.append(MATH_FONTS[name].get(a, a))
            elif name in ("left", "right", "bigl", "bigr", "Bigl", "Bigr", "big", "Big", "displaystyle",
                          "limits", "nolimits"):
                pass
            elif name in ("hat", "tilde", "bar", "vec", "overline", "dot", "ddot"):
                a, j = _arg(s, _skip_ws(s, j))
                mark = {"hat": "\u0302", "tilde": "\u0303", "bar": "\u0304", "vec": "\u20d7", "overline": "\u0305",
                        "dot": "\u0307", "ddot": "\u0308"}[name]
                out.append(math_to_html(a) + mark)
            else:
                raise ValueError(f"math command \\{name} is outside the supported subset (in ${s}$)")
            i = j
        elif c in "^_":
            j = _skip_ws(s, i + 1)
            if j < len(s) and s[j] == "{":
                a, j = _group(s, j)
            elif j < len(s) and s[j] == "\\":
                name, k = _cmd(s, j)
                a, j = s[j:k], k
            else:
                a, j = s[j:j + 1], j + 1
            tag = "sup" if c == "^" else "sub"
            out.append(f"<{tag}>{math_to_html(a)}</{tag}>")
            i = j
        elif c in "{}":
            i += 1
        elif c == "~":
            out.append("\u00a0")
            i += 1
        elif c == "-":
            out.append("−")
            i += 1
        else:
            out.append(html.escape(c))
            i += 1
    return "".join(out)


def display_math_png(s: str, fontsize: int = 13) -> bytes:
    """Render display math with matplotlib mathtext (PNG bytes); raises ValueError if unsupported."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import mathtext
    from matplotlib.font_manager import FontProperties

    buf = io.BytesIO()
    try:
        mathtext.math_to_image(f"${s}$", buf, prop=FontProperties(size=fontsize), dpi=130, format="png")
    except Exception as exc:  # mathtext raises ValueError/ParseException for unsupported input
        raise ValueError(f"mathtext cannot render {s[:60]!r}: {exc}") from None
    return buf.getvalue()


def _display(s: str) -> str:
    lines = [ln.replace("&", "") for ln in re.split(r"\\\\", s) if ln.strip()]
    parts = []
    for ln in lines:
        ln = re.sub(r"\\(label|tag|nonumber|notag)(\{[^}]*\})?", "", ln).strip()
        try:
            png = display_math_png(ln)
            parts.append(f'<img class="eq" alt="{html.escape(ln)}" src="data:image/png;base64,'
                         f'{base64.b64encode(png).decode()}">')
        except ValueError:
            parts.append(f'<span class="math">{math_to_html(ln)}</span>')
    return '<div class="display">' + "<br>".join(parts) + "</div>"


# --------------------------------------------------------------------------- text
class _Ctx:
    def __init__(self, base: Path, labels: dict[str, str]) -> None:
        self.base = base
        self.labels = labels
        self.footnotes: list[str] = []


def inline(s: str, ctx: _Ctx) -> str:
    """Text-mode LaTeX -> HTML (no block structure)."""
    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "$":
            j = s.index("$", i + 1) if "$" in s[i + 1:] else -1
            while j > 0 and s[j - 1] == "\\":
                j = s.index("$", j + 1)
            if j < 0:
                raise ValueError(f"unclosed $ at: {s[i:i + 40]!r}")
            out.append(f'<span class="math">{math_to_html(s[i + 1:j])}</span>')
            i = j + 1
        elif c == "\\":
            name, j = _cmd(s, i)
            if name in TEXT_ESCAPES:
                out.append(TEXT_ESCAPES[name])
                if name.isalpha():
                    j = j + 1 if j < len(s) and s[j] == " " and name in ("ldots", "dots", "noindent") else j
            elif name in ("emph", "textit", "textbf", "texttt", "textsc", "mbox", "textrm", "textsf", "underline"):
                a, j = _group(s, _skip_ws(s, j))
                tag = {"emph": "em", "textit": "em", "textbf": "strong", "texttt": "code", "underline": "u"}.get(name)
                body = inline(a, ctx)
                out.append(f"<{tag}>{body}</{tag}>" if tag else body)
            elif name == "url":
                a, j = _group(s, j)
                out.append(f'<a href="{html.escape(a)}">{html.escape(a)}</a>')
            elif name == "href":
                a, j = _group(s, j)
                b, j = _group(s, j)
                out.append(f'<a href="{html.escape(a)}">{inline(b, ctx)}</a>')
            elif name in ("ref", "eqref", "autoref"):
                a, j = _group(s, j)
                if a not in ctx.labels:
                    raise ValueError(f"\\{name}{{{a}}}: undefined label")
                out.append(ctx.labels[a] if name != "eqref" else f"({ctx.labels[a]})")
            elif name == "label":
                _, j = _group(s, j)
            elif name == "footnote":
                a, j = _group(s, j)
                ctx.footnotes.append(inline(a, ctx))
                k = len(ctx.footnotes)
                out.append(f'<sup><a href="#fn{k}" id="fr{k}">{k}</a></sup>')
            elif name == "cite":
                a, j = _group(s, j)
                out.append(f"[{html.escape(a)}]")
            elif name in ("hspace", "vspace", "vspace*"):
                _, j = _group(s, _skip_ws(s, j))
            else:
                raise ValueError(f"text command \\{name} is outside the supported subset: {s[i:i + 50]!r}")
            i = j
        elif s.startswith("---", i):
            out.append("—")
            i += 3
        elif s.startswith("--", i):
            out.append("–")
            i += 2
        elif s.startswith("``", i):
            out.append("“")
            i += 2
        elif s.startswith("''", i):
            out.append("”")
            i += 2
        elif c == "~":
            out.append("&nbsp;")
            i += 1
        elif c in "{}":
            i += 1
        else:
            out.append(html.escape(c, quote=False))
            i += 1
    return "".join(out)


def _paragraphs(s: str, ctx: _Ctx) -> str:
    out = []
    for para in re.split(r"\n\s*\n", s):
        para = " ".join(para.split())
        if para:
            out.append(f"<p>{inline(para, ctx)}</p>")
    return "\n".join(out)


def _split_unescaped(s: str, sep: str) -> list[str]:
    parts, cur, i, depth = [], "", 0, 0
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s):
            if s.startswith(sep, i) and depth == 0:
                parts.append(cur)
                cur = ""
                i += len(sep)
                continue
            cur += s[i:i + 2]
            i += 2
            continue
        if s[i] == "{":
            depth += 1
        elif s[i] == "}":
            depth -= 1
        if depth == 0 and s.startswith(sep, i):
            parts.append(cur)
            cur = ""
            i += len(sep)
            continue
        cur += s[i]
        i += 1
    parts.append(cur)
    return parts


def _tabular(body: str, ctx: _Ctx) -> str:
    _, k = _group(body, _skip_ws(body, 0))  # column spec
    body = body[k:]
    header_done = "\\midrule" not in body
    rows_html = []
    for raw in _split_unescaped(body, "\\\\"):
        text = raw
        for rule in ("\\toprule", "\\bottomrule", "\\hline"):
            text = text.replace(rule, "")
        if "\\midrule" in text:
            text = text.replace("\\midrule", "")
            header_done = True
        text = re.sub(r"\\cmidrule(\([^)]*\))?\{[^}]*\}", "", text).strip()
        if not text:
            continue
        cells = []
        tag = "td" if header_done else "th"
        for cell in _split_unescaped(text, "&"):
            cell = cell.strip()
            span = 1
            m = re.match(r"\\multicolumn\{(\d+)\}\{[^}]*\}", cell)
            if m:
                span = int(m.group(1))
                cell, _ = _group(cell, m.end())
            attr = f' colspan="{span}"' if span > 1 else ""
            cells.append(f"<{tag}{attr}>{inline(cell, ctx)}</{tag}>")
        rows_html.append("<tr>" + "".join(cells) + "</tr>")
    return '<table class="tab">' + "\n".join(rows_html) + "</table>"


def _img(path: str, ctx: _Ctx) -> str:
    p = (ctx.base / path)
    png = p.with_suffix(".png")
    if not png.is_file():
        raise ValueError(f"\\includegraphics{{{path}}}: no PNG at {png}")
    data = base64.b64encode(png.read_bytes()).decode()
    return f'<img class="fig" alt="{html.escape(path)}" src="data:image/png;base64,{data}">'


def _caption(s: str, ctx: _Ctx, kind: str, labels: dict[str, str], label: str | None) -> str:
    m = re.search(r"\\caption\{", s)
    if not m:
        return ""
    cap, _ = _group(s, m.end() - 1)
    num = labels.get(label, "") if label else ""
    return f"<figcaption><strong>{kind} {num}.</strong> {inline(cap, ctx)}</figcaption>"


_BLOCK = re.compile(r"\\(section|subsection|paragraph)\*?\{|\\begin\{([a-z*]+)\}|\\\[|\\maketitle")


def blocks(s: str, ctx: _Ctx, meta: dict[str, str]) -> str:
    out: list[str] = []
    i = 0
    counters = {"section": 0, "subsection": 0}
    while True:
        m = _BLOCK.search(s, i)
        if not m:
            out.append(_paragraphs(s[i:], ctx))
            break
        out.append(_paragraphs(s[i:m.start()], ctx))
        if m.group(0) == "\\maketitle":
            out.append(f"<h1>{inline(meta.get('title', ''), ctx)}</h1>")
            if meta.get("author"):
                out.append(f'<p class="author">{inline(meta["author"], ctx)}</p>')
            if meta.get("date"):
                out.append(f'<p class="author">{inline(meta["date"], ctx)}</p>')
            i = m.end()
        elif m.group(0) == "\\[":
            j = s.index("\\]", m.end())
            out.append(_display(s[m.end():j]))
            i = j + 2
        elif m.group(1):
            kind = m.group(1)
            title, j = _group(s, m.end() - 1)
            star = s[m.start():m.end()].endswith("*{")
            lab = re.match(r"\s*\\label\{([^}]*)\}", s[j:])
            if lab:
                j += lab.end()
            if kind == "section":
                if not star:
                    counters["section"] += 1
                    counters["subsection"] = 0
                num = "" if star else f"{counters['section']} "
                out.append(f"<h2>{num}{inline(title, ctx)}</h2>")
            elif kind == "subsection":
                if not star:
                    counters["subsection"] += 1
                num = "" if star else f"{counters['section']}.{counters['subsection']} "
                out.append(f"<h3>{num}{inline(title, ctx)}</h3>")
            else:
                out.append(f"<p><strong>{inline(title, ctx)}</strong></p>")
            i = j
        else:
            env = m.group(2)
            end_tag = f"\\end{{{env}}}"
            # find the matching end (same-name environments may nest: itemize)
            depth, k = 1, m.end()
            while depth:
                nb = s.find(f"\\begin{{{env}}}", k)
                ne = s.find(end_tag, k)
                if ne < 0:
                    raise ValueError(f"\\begin{{{env}}} without \\end")
                if 0 <= nb < ne:
                    depth, k = depth + 1, nb + 1
                else:
                    depth, k = depth - 1, ne + len(end_tag)
            body = s[m.end():k - len(end_tag)]
            i = k
            _, bpos = _opt(body, 0)
            body = body[bpos:]
            lab_m = re.search(r"\\label\{([^}]*)\}", body)
            label = lab_m.group(1) if lab_m else None
            if env in ("itemize", "enumerate"):
                tag = "ul" if env == "itemize" else "ol"
                items = [it for it in re.split(r"\\item\b", body)[1:]]
                out.append(f"<{tag}>" + "".join(f"<li>{blocks(it, ctx, meta)}</li>" for it in items) + f"</{tag}>")
            elif env == "abstract":
                out.append(f'<div class="abstract"><p><strong>Abstract.</strong></p>{blocks(body, ctx, meta)}</div>')
            elif env in ("equation", "equation*", "align", "align*", "displaymath"):
                out.append(_display(body))
            elif env == "figure":
                imgs = [_img(g.group(1), ctx) for g in re.finditer(r"\\includegraphics(?:\[[^\]]*\])?\{([^}]*)\}", body)]
                out.append(f'<figure id="{html.escape(label or "")}">' + "".join(imgs)
                           + _caption(body, ctx, "Figure", ctx.labels, label) + "</figure>")
            elif env == "table":
                cap = _caption(body, ctx, "Table", ctx.labels, label)
                rest = _strip_caption(re.sub(r"\\label\{[^}]*\}", "", body))
                parts = re.split(r"\\begin\{tabular\}(.*?)\\end\{tabular\}", rest, flags=re.S)
                if len(parts) < 2:
                    raise ValueError("table without tabular")
                inner = "".join(_tabular(p, ctx) if k % 2 else _paragraphs(p, ctx) for k, p in enumerate(parts))
                out.append(f'<div class="table" id="{html.escape(label or "")}">{cap}{inner}</div>')
            elif env in ("center", "minipage", "small", "footnotesize"):
                out.append(blocks(body, ctx, meta))
            else:
                raise ValueError(f"environment {env!r} is outside the supported subset")
    return "\n".join(x for x in out if x)


def _strip_caption(s: str) -> str:
    while True:
        m = re.search(r"\\caption\{", s)
        if not m:
            return s
        _, e = _group(s, m.end() - 1)
        s = s[:m.start()] + s[e:]


def _labels(body: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    sec = sub = fig = tab = eq = 0
    ctx_kind = "section"
    pat = re.compile(r"\\(section|subsection)(\*?)\{|\\begin\{(figure|table|equation|align)\}|\\label\{([^}]*)\}")
    for m in pat.finditer(body):
        if m.group(1) == "section":
            if not m.group(2):
                sec += 1
                sub = 0
            ctx_kind = "section"
        elif m.group(1) == "subsection":
            if not m.group(2):
                sub += 1
            ctx_kind = "subsection"
        elif m.group(3):
            ctx_kind = m.group(3)
            if ctx_kind == "figure":
                fig += 1
            elif ctx_kind == "table":
                tab += 1
            else:
                eq += 1
        elif m.group(4):
            num = {"section": str(sec), "subsection": f"{sec}.{sub}", "figure": str(fig), "table": str(tab),
                   "equation": str(eq), "align": str(eq)}[ctx_kind]
            labels[m.group(4)] = num
    return labels


CSS = """body{font-family:Georgia,serif;max-width:52em;margin:2em auto;padding:0 1em;line-height:1.45;color:#111}
h1{font-size:1.6em;text-align:center}.author{text-align:center;color:#444}
.abstract{margin:1.5em 2em;font-size:.95em}.math{font-family:'Times New Roman',serif;font-style:italic}
.display{text-align:center;margin:1em 0;overflow-x:auto}img.eq{max-width:100%}
figure{margin:1.5em 0;text-align:center}img.fig{max-width:100%}figcaption{text-align:left;font-size:.92em}
.table{margin:1.5em 0;overflow-x:auto}table.tab{border-collapse:collapse;margin:.5em auto;font-size:.88em}
table.tab th{border-bottom:1px solid #000;padding:2px 8px}table.tab td{padding:2px 8px;text-align:center}
table.tab tr:last-child td{border-bottom:1px solid #000}.table p{font-size:.88em}
.footnotes{font-size:.9em;border-top:1px solid #aaa;margin-top:2em}"""


def render_html(tex: str, base: Path) -> str:
    """Flattened manuscript LaTeX -> one self-contained HTML page (figures under ``base``)."""
    tex = strip_comments(tex)
    macros = latex_macros(tex)
    tex = _remove_newcommands(tex)
    meta = {}
    for key in ("title", "author", "date"):
        m = re.search(rf"\\{key}\{{", tex)
        if m:
            meta[key], _ = _group(tex, m.end() - 1)
    if "\\begin{document}" not in tex or "\\end{document}" not in tex:
        raise ValueError("manuscript has no \\begin{document} ... \\end{document}")
    body = tex.split("\\begin{document}", 1)[1].split("\\end{document}", 1)[0]
    body = expand_macros(body, macros)
    meta = {k: expand_macros(v, macros) for k, v in meta.items()}
    meta["date"] = meta.get("date", "").replace("\\today", "")
    ctx = _Ctx(Path(base), _labels(body))
    main = blocks(body, ctx, meta)
    notes = ""
    if ctx.footnotes:
        notes = '<div class="footnotes"><ol>' + "".join(
            f'<li id="fn{k}">{t} <a href="#fr{k}">↩</a></li>' for k, t in enumerate(ctx.footnotes, 1)) + "</ol></div>"
    title = re.sub(r"<[^>]+>", "", inline(meta.get("title", "manuscript"), ctx))
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{CSS}</style></head><body>\n{main}\n{notes}\n</body></html>\n")
