"""The ``cffdyn`` command: one entry point, four sub-commands.

``cffdyn theory|sim|vit|paper ...`` hands the remaining arguments to that part's own command
line (``theory.cli.main`` etc.), which is also what ``python -m theory`` runs.  Parts are
imported lazily, so ``cffdyn theory`` never loads the ViT code and vice versa.
"""
from __future__ import annotations

import importlib
import sys
from typing import Sequence

from cffdyn import __version__
from cffdyn.errors import guarded

PARTS: dict[str, str] = {
    "theory": "sympy derivation of the clamped / subtraction / no-margin gradients and checks "
              "against torch autograd (verify, show)",
    "sim": "numba simulators: online SGD of the one-layer contrastive model, mean-field ODEs, "
           "fixed points, phase portraits, noise and clamp studies, eigenmode dynamics",
    "vit": "PyTorch CFF training of ViTs and MLPs, diagnostics (CAR, grad norms, Fisher), "
           "multi-seed factorial variance studies, benchmarks",
    "paper": "rebuild the manuscript: run or reuse the studies, render figures, tables and text",
}


#: parts whose interrupted runs resume when the same command is rerun
RESUMABLE = frozenset({"vit", "sim", "paper"})


def usage() -> str:
    lines = [f"usage: cffdyn {{{','.join(PARTS)}}} ... [-h]", "",
             "Margin clamping and training variance in Contrastive Forward-Forward learning.", "",
             "sub-commands:"]
    lines += [f"  {name:<8} {desc}" for name, desc in PARTS.items()]
    lines += ["", "options:", "  -h, --help  show this message; 'cffdyn PART --help' explains a part",
              "  --version   print the version", "",
              "Each part is also reachable as 'python -m PART ...'."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    if args[0] == "--version":
        print(f"cffdyn {__version__}")
        return 0
    part = args[0]
    if part not in PARTS:
        print(f"cffdyn: unknown sub-command {part!r}; choose from {', '.join(PARTS)}\n", file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    module = importlib.import_module(f"{part}.cli")
    prog = f"cffdyn {part}"
    # Each part's main already runs under guarded(); this outer guard catches a Ctrl-C that
    # lands during the (slow) imports above or in a part that forgot.
    # the parts whose long runs resume (python -m vit/sim/paper say so too) get the same hint
    return guarded(lambda a: module.main(a, prog=prog), args[1:], prog, resumable=part in RESUMABLE)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
