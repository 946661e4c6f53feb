"""Text helpers of the manuscript: plain text to LaTeX, a printed range, the datasets' names."""
from __future__ import annotations

__all__ = ["tex_escape", "value_range", "DATASET_NAMES"]

DATASET_NAMES = {"fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "mnist": "MNIST",
                 "digits": "sklearn digits", "svhn": "SVHN"}


def tex_escape(s: str) -> str:
    """Plain text -> LaTeX text: specials escaped, and ``--`` kept as two hyphens (LaTeX and pandoc
    would print an en dash: ``(--only)`` must not read ``(–only)``)."""
    rep = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
           "{": r"\{", "}": r"\}", "~": r"\~{}", "^": r"\^{}", "<": r"\textless{}", ">": r"\textgreater{}"}
    text = str(s)
    return "".join("-{}" if c == "-" and text[k + 1:k + 2] == "-" else rep.get(c, c) for k, c in enumerate(text))


def value_range(lo: float, hi: float, fmt: str = ".1f") -> str:
    """``between a and b``, or ``a`` when both print the same (never "between 8.77 and 8.77")."""
    a, b = format(lo, fmt), format(hi, fmt)
    return a if a == b else f"{a}--{b}"
