"""What the manuscript takes from each study, assembled: the numbers every study declares (its
numbers module), the numbers computed at build time from recorded runs (``derived.json``), the
figures each study draws (saved here at their printed size), the tables, the generated sentences
and the findings.  Everything is a pure function of the loaded result JSONs (plus, for the ViT
per-layer figure, the per-run ``result.json`` files that ``study.json`` points to), so a test can
build the manuscript from small results.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from cffdyn.exports import NumberSpec, macro_name
from cffdyn.figures import TEXT_WIDTH_IN, save_figure
from cffdyn.io import atomic_write_text
from paper import findings, noise_dose
from paper.phrases import PHRASES
from paper.replication import tab_replication
from paper.tables import TABLES
from paper.verdicts import VERDICT_RULE
from sim import clamp_numbers, eigen_numbers, meanfield_numbers
from theory import verify_numbers
from vit import noise_dose_numbers, study_numbers

__all__ = ["NUMBER_SPECS", "number_specs", "source_specs", "derived", "FIGURES", "FINDINGS", "write_tables"]

#: study -> the specs of the numbers it exports (its numbers module), in the order numbers.json lists them
NUMBER_SPECS: dict[str, Callable[[dict], list[NumberSpec]]] = {
    "verify": verify_numbers.number_specs, "vit_study": study_numbers.number_specs,
    "eigen_spread": eigen_numbers.spread_specs, "eigen_settings": eigen_numbers.settings_specs,
    "convergence": meanfield_numbers.convergence_specs, "hfunc": meanfield_numbers.hfunc_specs,
    "phase": meanfield_numbers.phase_specs, "noise": meanfield_numbers.noise_specs,
    "clamp": clamp_numbers.number_specs, "noise_dose": noise_dose_numbers.number_specs,
}

#: study -> (numbers computed from its record at build time, their specs)
DERIVED: dict[str, tuple[Callable[[dict], dict | None], Callable[[dict], list[NumberSpec]]]] = {
    "vit_study": (study_numbers.derived, study_numbers.derived_specs),
    "clamp": (clamp_numbers.derived, clamp_numbers.derived_specs),
}


def source_specs(src: dict) -> list[NumberSpec]:
    """Macros ``\\Src...`` for the literature values (formatted with the decimals they were reported with)."""
    out = []
    for key, entry in src.items():
        if key.startswith("_"):
            continue
        v = entry["value"]
        fmt = entry.get("fmt") or ("d" if isinstance(v, int) else
                                   f".{max(len(repr(float(v)).split('.')[1].rstrip('0')), 1)}f")
        out.append(NumberSpec(macro_name("src", key), "source", f"{key}.value", fmt, desc=entry["where"]))
    return out


def derived(results: dict) -> dict[str, Any]:
    """``derived.json``: per study of :data:`DERIVED` in the build, what it computes from its record."""
    out: dict[str, Any] = {}
    for name, (fn, _) in DERIVED.items():
        if results.get(name):
            rec = fn(results[name])
            if rec is not None:
                out[name] = rec
    return out


def number_specs(results: dict[str, dict], src: dict, der: dict | None = None) -> list[NumberSpec]:
    specs = source_specs(src)
    for name, (_, spec_fn) in DERIVED.items():
        if (der or {}).get(name):
            specs += spec_fn(der[name])
    for name, fn in NUMBER_SPECS.items():
        if name in results:
            specs += fn(results[name])
    return specs


# --------------------------------------------------------------------------- figures
# Each figure is drawn by its study's own function (the one the study's CLI saves as its PNG) at
# its printed size; here it is saved as PNG (HTML) + PDF (vector), ``width`` of the text width.
def _saved(name: str, draw: Callable[[dict, dict], Any], width: float = 1.0) -> Callable[[dict, dict, Path], Path | None]:
    def make(results: dict, paths: dict, out: Path) -> Path | None:
        try:
            fig = draw(results, paths)
        except ValueError as exc:      # a record without what the figure needs (an older layout)
            raise ValueError(f"figure {name}: {exc}") from None
        return None if fig is None else save_figure(fig, out, name, printed_width_in=TEXT_WIDTH_IN * width)
    return make


def _vit_cells(results: dict, paths: dict):
    from vit.study import fig_study
    return fig_study(results["vit_study"])


def _vit_layers(results: dict, paths: dict):
    from vit.study import fig_layers
    return fig_layers(results["vit_study"], paths["vit_study"])


def _eigen_spread(results: dict, paths: dict):
    from sim.eigen_studies import fig_spread
    return fig_spread(results["eigen_spread"])


def _eigen_settings(results: dict, paths: dict):
    from sim.eigen_studies import fig_settings
    return fig_settings(results["eigen_settings"])


def _mf(study: str, fn_name: str) -> Callable[[dict, dict], Any]:
    def draw(results: dict, paths: dict):
        import sim.studies
        return getattr(sim.studies, fn_name)(results[study])
    return draw


def _mf_clamp(results: dict, paths: dict):
    """The clamp study's figure, with the ViT study's reported ratio against layer-0 CAR in panel (c)
    when that study is in the build."""
    from sim.clamp_study import fig_clamp, vit_points
    vit_pts = vit_points([paths["vit_study"]], warn=lambda m: None) if results.get("vit_study") else []
    return fig_clamp(results["clamp"], vit_pts)


#: figure name -> (studies needed, maker(results, paths, out dir) -> the file written)
FIGURES: dict[str, tuple[tuple[str, ...], Callable[[dict, dict, Path], Path | None]]] = {
    "vit_cells": (("vit_study",), _saved("vit_cells", _vit_cells)),
    "vit_layers": (("vit_study",), _saved("vit_layers", _vit_layers)),
    "eigen_spread": (("eigen_spread",), _saved("eigen_spread", _eigen_spread)),
    "eigen_settings": (("eigen_settings",), _saved("eigen_settings", _eigen_settings)),
    "mf_convergence": (("convergence",), _saved("mf_convergence", _mf("convergence", "fig_convergence"))),
    "mf_hfunc": (("hfunc",), _saved("mf_hfunc", _mf("hfunc", "fig_hfunc"))),
    "mf_phase": (("phase",), _saved("mf_phase", _mf("phase", "fig_phase"))),
    "mf_noise": (("noise",), _saved("mf_noise", _mf("noise", "fig_noise"), width=0.75)),
    "mf_clamp": (("clamp",), _saved("mf_clamp", _mf_clamp)),
    "noise_dose": (("noise_dose",), noise_dose.fig_noise_dose),
}

#: the findings' makers, in the order the abstract and the Conclusion state them
FINDINGS = findings.FINDINGS + [(("noise_dose",), noise_dose.noise_dose_findings)]


def write_tables(results: dict, gen_dir: Path, der: dict | None = None) -> list[Path]:
    """The generated sentences, the tables, the replication table and the verdict rule."""
    der = derived(results) if der is None else der
    out = [atomic_write_text(gen_dir / f"{name}.tex", fn(results, der) + "%\n")
           for name, (needs, fn) in PHRASES.items() if all(n in results for n in needs)]
    for name, (needs, fn) in TABLES.items():
        if all(n in results for n in needs):
            out.append(atomic_write_text(gen_dir / f"tab_{name}.tex", fn(results) + "\n"))
    out.append(atomic_write_text(gen_dir / "tab_replication.tex", tab_replication(results) + "\n"))
    out.append(atomic_write_text(gen_dir / "verdict_rule.tex", VERDICT_RULE + "%\n"))
    return out
