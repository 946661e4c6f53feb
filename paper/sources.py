"""Adapters from the manuscript to the studies it draws on: one :class:`Study` entry each.

Every study of the package is a function ``run_<name>(cfg, out_dir) -> dict`` with a frozen
config and ``QUICK``/``FULL`` presets; it writes ``<out_dir>/<name>.json`` (+ ``.png``) and
reuses a recorded JSON whose config matches.  An entry here holds a function that imports the
study and returns its runner and its preset per scale, and says where its JSON lands, so wiring
a study is a few lines:

    def _noise():
        from sim.studies import NOISE_FULL, NOISE_QUICK, run_noise
        return run_noise, {"quick": NOISE_QUICK, "full": NOISE_FULL}

    Study("noise", _noise, "sim/meanfield", "noise.json", "title")

The import happens when the study is needed, so a tree without a part (or without its
dependencies) builds the rest: the entry raises :class:`StudyUnavailable`, which
``--skip-unavailable`` states in the manuscript.  :func:`obtain` either *runs* the study (call
the runner with the preset for the scale, which reuses a matching recorded result by itself) or, with ``reuse_only``, only *reads*
the recorded JSON and raises :class:`MissingResultError` with a clear message when it is not
there.  Results go to ``<results>/<subdir>/<scale>/`` so quick and full results never collide.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from cffdyn.io import read_json, record_status

__all__ = ["Study", "STUDIES", "SCALES", "MissingResultError", "StudyUnavailable", "StudyResult",
           "obtain", "result_dir", "get_study", "load_study"]

SCALES = ("quick", "full")


class MissingResultError(FileNotFoundError):
    """A result JSON the manuscript needs is not recorded (or is incomplete)."""


class StudyUnavailable(ImportError):
    """The code of a study is not importable in this tree."""


@dataclass(frozen=True)
class Study:
    """How to obtain one study's result.

    name: key used by the manuscript (sections' ``% requires:`` lines, number specs).
    load: imports the study; returns its ``run_<name>(cfg, out_dir)`` function and its preset
        config per scale (an ImportError: the study is unavailable in this tree).
    subdir: results sub-directory (the scale is appended).
    json_name: the JSON the function writes in ``out_dir``.
    complete: predicate on the loaded JSON saying it is a finished result.
    cli_hint: the command that produces it by hand (for error messages).
    recorded: the study is too long to rerun in a build; ``func`` only reads its recorded result
        (``recorded/``, :mod:`cffdyn.recorded`) into ``out_dir``, under ``reuse_only`` too, and
        raises LookupError when nothing is recorded (the study is then unavailable).
    optional: an unavailable study leaves its section out (stated) without ``skip_unavailable``.
    """

    name: str
    load: Callable[[], tuple[Callable[..., dict], Mapping[str, Any]]] = field(compare=False)
    subdir: str
    json_name: str
    title: str
    complete: Callable[[dict], bool] = field(default=lambda d: True, compare=False)
    cli_hint: str = ""
    recorded: bool = False
    optional: bool = False



def _vit_complete(d: dict) -> bool:
    # the shape the manuscript reads (analysis.cells / .comparisons, runs), not only the status
    a = d.get("analysis")
    return d.get("status") == "complete" and isinstance(a, dict) and isinstance(a.get("cells"), list) \
        and isinstance(a.get("comparisons"), list) and isinstance(d.get("runs"), list)


def _verify():
    from theory.verify import FULL, QUICK, run_verify
    return run_verify, {"quick": QUICK, "full": FULL}


def _vit_study():
    from vit.study import FULL, QUICK, run_study
    return run_study, {"quick": QUICK, "full": FULL}


def _convergence():
    from sim.studies import CONVERGENCE_FULL, CONVERGENCE_QUICK, run_convergence
    return run_convergence, {"quick": CONVERGENCE_QUICK, "full": CONVERGENCE_FULL}


def _hfunc():
    from sim.studies import HFUNC_FULL, HFUNC_QUICK, run_hfunc
    return run_hfunc, {"quick": HFUNC_QUICK, "full": HFUNC_FULL}


def _phase():
    from sim.studies import PHASE_FULL, PHASE_QUICK, run_phase
    return run_phase, {"quick": PHASE_QUICK, "full": PHASE_FULL}


def _noise():
    from sim.studies import NOISE_FULL, NOISE_QUICK, run_noise
    return run_noise, {"quick": NOISE_QUICK, "full": NOISE_FULL}


def _clamp():
    from sim.clamp_study import CLAMP_FULL, CLAMP_QUICK, run_clamp
    return run_clamp, {"quick": CLAMP_QUICK, "full": CLAMP_FULL}


def _noise_dose():
    from vit.noise_dose import NOISE_DOSE, paper_result
    return paper_result, {"quick": NOISE_DOSE, "full": NOISE_DOSE}


def _eigen_settings():
    from sim.eigen_studies import SETTINGS_FULL, SETTINGS_QUICK, run_eigen_settings
    return run_eigen_settings, {"quick": SETTINGS_QUICK, "full": SETTINGS_FULL}


def _eigen_spread():
    from sim.eigen_studies import SPREAD_FULL, SPREAD_QUICK, run_eigen_spread
    return run_eigen_spread, {"quick": SPREAD_QUICK, "full": SPREAD_FULL}


STUDIES: tuple[Study, ...] = (
    Study("verify", _verify, "theory", "verify.json", "symbolic gradients vs autograd", cli_hint="cffdyn theory verify"),
    Study("vit_study", _vit_study, "vit/study", "study.json", "ViT 2x2 factorial variance study",
          complete=_vit_complete, cli_hint="cffdyn vit study"),
    *(Study(n, load, "sim/meanfield", f"{n}.json", t, cli_hint=f"cffdyn sim {n}")
      for n, load, t in (("convergence", _convergence, "mean-field ODE vs online SGD: fluctuation and bias"),
                         ("hfunc", _hfunc, "h(Q) and learnability"),
                         ("phase", _phase, "two-feature phase portrait and attraction shares"),
                         ("noise", _noise, "stationary overlap vs augmentation noise"),
                         ("clamp", _clamp, "clamp vs subtraction: linear-noise variance prediction vs SGD"))),
    Study("noise_dose", _noise_dose, "vit/noise_dose", "noise_dose.json",
          "ViT noise-dose study: the prediction tested dose by dose", cli_hint="cffdyn vit noise-dose --record",
          recorded=True, optional=True),
    Study("eigen_settings", _eigen_settings, "sim/eigen", "eigen_settings.json",
          "eigenvalue dynamics of the eight toy settings", cli_hint="cffdyn sim eigen"),
    Study("eigen_spread", _eigen_spread, "sim/eigen", "eigen_spread.json",
          "per-mode convergence-time spread and across-seed variance", cli_hint="cffdyn sim eigen"),
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


def load_study(study: Study) -> tuple[Callable[..., dict], Mapping[str, Any]]:
    """The study's runner and its preset per scale; :class:`StudyUnavailable` where its code (or a
    dependency of it) cannot be imported in this tree."""
    try:
        return study.load()
    except ImportError as exc:
        raise StudyUnavailable(f"study {study.name!r} ({study.title}) is not available in this tree: {exc}") from None


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
        fn, presets = load_study(study)
        cfg = presets[scale]
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
