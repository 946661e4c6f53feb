"""Adapters from the manuscript to the studies it draws on: one :class:`Study` entry each.

Every study of the package is a function ``run_<name>(cfg, out_dir) -> dict`` with a frozen
config and ``QUICK``/``FULL`` presets; it writes ``<out_dir>/<name>.json`` (+ ``.png``) and
reuses a recorded JSON whose config matches.  An entry here names where that function lives,
which preset attribute to use and where its JSON lands, so wiring a study is a few lines:

    Study("noise", ("sim.studies",), "run_noise", "sim/meanfield", "noise.json", "title",
          presets=(("quick", "NOISE_QUICK"), ("full", "NOISE_FULL")))

:func:`obtain` either *runs* the study (import lazily, call ``run_*`` with the preset for the
scale, which reuses a matching recorded result by itself) or, with ``reuse_only``, only *reads*
the recorded JSON and raises :class:`MissingResultError` with a clear message when it is not
there.  Results go to ``<results>/<subdir>/<scale>/`` so quick and full results never collide.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cffdyn.io import read_json, record_status

__all__ = ["Study", "STUDIES", "SCALES", "MissingResultError", "StudyUnavailable", "StudyResult",
           "obtain", "result_dir", "get_study"]

SCALES = ("quick", "full")


class MissingResultError(FileNotFoundError):
    """A result JSON the manuscript needs is not recorded (or is incomplete)."""


class StudyUnavailable(ImportError):
    """The code of a study is not importable in this tree."""


@dataclass(frozen=True)
class Study:
    """How to obtain one study's result.

    name: key used by the manuscript (sections' ``% requires:`` lines, number specs).
    modules: candidate modules, first importable one that has ``func`` wins.
    func: the ``run_<name>(cfg, out_dir)`` function.
    subdir: results sub-directory (the scale is appended).
    json_name: the JSON the function writes in ``out_dir``.
    presets: preset attribute per scale (default ``QUICK``/``FULL``).
    complete: predicate on the loaded JSON saying it is a finished result.
    cli_hint: the command that produces it by hand (for error messages).
    recorded: the study is too long to rerun in a build; ``func`` only reads its recorded result
        (``recorded/``, :mod:`cffdyn.recorded`) into ``out_dir``, under ``reuse_only`` too, and
        raises LookupError when nothing is recorded (the study is then unavailable).
    optional: an unavailable study leaves its section out (stated) without ``skip_unavailable``.
    """

    name: str
    modules: tuple[str, ...]
    func: str
    subdir: str
    json_name: str
    title: str
    presets: tuple[tuple[str, str], ...] = (("quick", "QUICK"), ("full", "FULL"))
    complete: Callable[[dict], bool] = field(default=lambda d: True, compare=False)
    cli_hint: str = ""
    recorded: bool = False
    optional: bool = False

    def preset_name(self, scale: str) -> str:
        return dict(self.presets)[scale]


def _vit_complete(d: dict) -> bool:
    # the shape the manuscript reads (analysis.cells / .comparisons, runs), not only the status
    a = d.get("analysis")
    return d.get("status") == "complete" and isinstance(a, dict) and isinstance(a.get("cells"), list) \
        and isinstance(a.get("comparisons"), list) and isinstance(d.get("runs"), list)


STUDIES: tuple[Study, ...] = (
    Study("verify", ("theory.verify",), "run_verify", "theory", "verify.json",
          "symbolic gradients vs autograd", cli_hint="cffdyn theory verify"),
    Study("vit_study", ("vit.study",), "run_study", "vit/study", "study.json",
          "ViT 2x2 factorial variance study", complete=_vit_complete, cli_hint="cffdyn vit study"),
    *(Study(n, ("sim.studies",), f"run_{n}", "sim/meanfield", f"{n}.json", t,
            presets=(("quick", f"{n.upper()}_QUICK"), ("full", f"{n.upper()}_FULL")), cli_hint=f"cffdyn sim {n}")
      for n, t in (("convergence", "mean-field ODE vs online SGD: fluctuation and bias"), ("hfunc", "h(Q) and learnability"),
                   ("phase", "two-feature phase portrait and attraction shares"),
                   ("noise", "stationary overlap vs augmentation noise"),
                   ("clamp", "clamp vs subtraction: linear-noise variance prediction vs SGD"))),
    Study("noise_dose", ("vit.noise_dose",), "paper_result", "vit/noise_dose", "noise_dose.json",
          "ViT noise-dose study: the prediction tested dose by dose",
          presets=(("quick", "NOISE_DOSE"), ("full", "NOISE_DOSE")), cli_hint="cffdyn vit noise-dose --record",
          recorded=True, optional=True),
    Study("eigen_settings", ("sim.eigen_studies",), "run_eigen_settings", "sim/eigen", "eigen_settings.json",
          "eigenvalue dynamics of the eight toy settings",
          presets=(("quick", "SETTINGS_QUICK"), ("full", "SETTINGS_FULL")), cli_hint="cffdyn sim eigen"),
    Study("eigen_spread", ("sim.eigen_studies",), "run_eigen_spread", "sim/eigen", "eigen_spread.json",
          "per-mode convergence-time spread and across-seed variance",
          presets=(("quick", "SPREAD_QUICK"), ("full", "SPREAD_FULL")), cli_hint="cffdyn sim eigen"),
)


def get_study(name: str) -> Study:
    for s in STUDIES:
        if s.name == name:
            return s
    raise ValueError(f"unknown study {name!r}; known: {', '.join(s.name for s in STUDIES)}")


def result_dir(study: Study, results: Path, scale: str) -> Path:
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r} must be one of {SCALES}")
    return Path(results) / study.subdir / scale


@dataclass
class StudyResult:
    study: Study
    data: dict[str, Any]
    json_path: Path
    png_path: Path | None
    seconds: float
    ran: bool            # True: computed in this build; False: the recorded JSON was reused


def _import(study: Study) -> Callable[..., dict]:
    errors = []
    for mod_name in study.modules:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as exc:
            errors.append(f"{mod_name}: {exc}")
            continue
        fn = getattr(mod, study.func, None)
        if fn is not None:
            return mod, fn
        errors.append(f"{mod_name} has no {study.func}")
    raise StudyUnavailable(f"study {study.name!r} ({study.title}) is not available in this tree: "
                           + "; ".join(errors))


def _load(study: Study, path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MissingResultError(
            f"paper build: no recorded result for study {study.name!r} ({study.title}) at {path}. "
            f"Run 'cffdyn paper build' without --reuse-only to compute it"
            + (f", or produce it with '{study.cli_hint} ... --out {path.parent}'" if study.cli_hint else "") + ".")
    try:
        data = read_json(path)
    except ValueError as exc:
        raise MissingResultError(f"paper build: result {path} of study {study.name!r} is not valid JSON: {exc}") from None
    if record_status(data) == "unhashed":
        # written by hand or by older code: nothing says it holds what the manuscript reads
        raise MissingResultError(f"paper build: result {path} of study {study.name!r} carries no content hash "
                                 f"(not written by this cffdyn, or by hand); rerun without --reuse-only to "
                                 f"recompute it.")
    if not isinstance(data, dict) or not study.complete(data):
        raise MissingResultError(f"paper build: result {path} of study {study.name!r} is incomplete "
                                 f"(an interrupted run?); rerun without --reuse-only to finish it.")
    return data


def obtain(study: Study, results: Path, scale: str, *, reuse_only: bool = False) -> StudyResult:
    """Run (or reuse) one study and return its result; see the module doc."""
    out = result_dir(study, results, scale)
    jpath = out / study.json_name
    t0 = time.perf_counter()
    if reuse_only and not study.recorded:
        data = _load(study, jpath)
        ran = False
    else:
        mod, fn = _import(study)
        cfg = getattr(mod, study.preset_name(scale), None)
        if cfg is None:
            raise StudyUnavailable(f"study {study.name!r}: {mod.__name__} has no preset {study.preset_name(scale)}")
        before = jpath.stat().st_mtime_ns if jpath.is_file() else None
        try:
            fn(cfg, out)
        except LookupError as exc:          # a recorded study with nothing recorded
            raise StudyUnavailable(str(exc)) from None
        data = _load(study, jpath)
        # run_* reuses a recorded JSON whose config matches: then the file is untouched
        ran = not study.recorded and (before is None or jpath.stat().st_mtime_ns != before)
    png = jpath.with_suffix(".png")
    return StudyResult(study, data, jpath, png if png.is_file() else None, time.perf_counter() - t0, ran)
