"""Figures drawn at their printed size, shared by the studies (their own PNGs) and the paper.

A study's figure function takes the study's result (the dict its JSON holds) and returns a
matplotlib figure drawn at the size the manuscript prints it (:data:`TEXT_WIDTH_IN`, or the
fraction of it the manuscript includes it at), with the style of :data:`RC`; the study saves it
as its PNG and the paper build as PNG + vector PDF through :func:`save_figure`, which refuses a
figure whose text would print below :data:`MIN_FONT_PT`.  Nothing here imports a study or the
paper, so both can import it.

The style is applied with :func:`styled` (an ``rc_context`` around the drawing, not a change of
the process's rcParams): a study run in the same process as other figure code leaves their
defaults alone.
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any, Callable, Iterator

from cffdyn.io import atomic_savefig

__all__ = ["TEXT_WIDTH_IN", "MIN_FONT_PT", "RC", "pyplot", "style", "styled", "figure", "small_fonts",
           "save_figure"]

#: the printed text width (paper/manuscript.tex: letter paper, 2.5 cm margins, inches)
TEXT_WIDTH_IN = 8.5 - 2 * 2.5 / 2.54
#: smallest font a printed figure may carry (pt)
MIN_FONT_PT = 7.0
#: the figures' style: fonts of 7-8 pt at the printed size, mathtext in Computer Modern, true
#: minus signs, TrueType fonts in the PDF (selectable text)
RC: dict[str, Any] = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 7, "figure.titlesize": 8, "legend.framealpha": 0.85, "mathtext.fontset": "cm",
    "axes.unicode_minus": True, "pdf.fonttype": 42, "lines.markersize": 4}


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


@contextlib.contextmanager
def style() -> Iterator[None]:
    """:data:`RC` for the duration of the block."""
    with pyplot().rc_context(RC):
        yield


def styled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a figure function under :func:`style`.  Matplotlib creates an axis's tick labels when
    they are first asked for, often only when the figure is saved: the returned figure's ticks are
    created here, under the style, and the ones a save adds later copy their properties, so a
    figure saved outside the style keeps the style's fonts.  (Not a draw: a second layout pass
    would move the axes by a pixel.)  A function that saves its figure itself (and returns, say,
    a path) runs under the style the same way."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any):
        from matplotlib.figure import Figure
        with style():
            out = fn(*args, **kw)
            if isinstance(out, Figure):
                for ax in out.axes:
                    for axis in (ax.xaxis, ax.yaxis):
                        axis.get_major_ticks()
                        axis.get_minor_ticks()
        return out
    return wrapper


def figure(width_in: float, height_in: float, **kw: Any):
    """``(fig, axes)`` of ``width_in`` x ``height_in`` inches, constrained layout (no crop at save,
    which would rescale the fonts when the PDF is included at the text width); ``kw`` go to
    ``plt.subplots``."""
    return pyplot().subplots(figsize=(width_in, height_in), layout="constrained", **kw)


def small_fonts(fig, printed_width_in: float) -> list[str]:
    """Texts of ``fig`` that would print below :data:`MIN_FONT_PT` at ``printed_width_in``."""
    from matplotlib.text import Text
    scale = printed_width_in / fig.get_figwidth()
    return [f"{t.get_text()!r} at {t.get_fontsize() * scale:.1f} pt" for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip() and t.get_fontsize() * scale < MIN_FONT_PT - 1e-9]


def save_figure(fig, out: Path, name: str, *, printed_width_in: float | None = None,
                formats: tuple[str, ...] = ("png", "pdf"), dpi: int = 200) -> Path:
    """Write ``out/name.<fmt>`` for each of ``formats`` (atomically: PNG for the HTML, PDF vector
    for the PDF) at the figure's own size and close it; returns the last file written.  A text
    that would print below :data:`MIN_FONT_PT` at ``printed_width_in`` (default: the figure's own
    width, the printed size it was drawn at) is refused (ValueError, nothing written)."""
    bad = small_fonts(fig, fig.get_figwidth() if printed_width_in is None else printed_width_in)
    if bad:
        pyplot().close(fig)
        raise ValueError(f"figure {name}: fonts below {MIN_FONT_PT:g} pt when printed: " + "; ".join(bad[:5]))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out
    with style():
        for ext in formats:
            path = atomic_savefig(fig, out / f"{name}.{ext}", dpi=dpi if ext == "png" else None)
    pyplot().close(fig)
    return path
