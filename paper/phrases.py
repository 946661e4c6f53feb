"""Generated sentences of the manuscript's text (``generated/*.tex``), each from the recorded
results: the ViT study's data, seeds, augmentation, departures, probe spread and mean difference,
and the phase study's eigenvalue sentence."""
from __future__ import annotations

from paper.numbers import format_value
from paper.tex import DATASET_NAMES, tex_escape
from vit.study_numbers import loss_mode_comparison

__all__ = ["vit_data_phrase", "vit_seed_phrase", "vit_augment_phrase", "vit_departures_phrase",
           "vit_probe_spread_phrase", "vit_mean_diff_phrase", "phase_eig_phrase", "PHRASES"]


def vit_data_phrase(results: dict) -> str:
    """The ViT study's data, as text (numbers through macros)."""
    b = results["vit_study"]["config"]["base"]
    name = tex_escape(DATASET_NAMES.get(b["dataset"], b["dataset"]))
    return f"a \\VitSubset-image {name} pool" if b.get("subset") else f"the full {name} training set"


_SEED_SOURCES = (("seed_init", "the initialisation"), ("seed_split", "the train/validation split"),
                 ("seed_order", "the data order"), ("seed_aug", "the augmentation"))


def vit_seed_phrase(results: dict) -> str:
    """What a seed of the ViT study varies and what the config holds fixed, as text (from the
    recorded base config: the ``seed_*`` fields that are set are fixed for every seed)."""
    b = results["vit_study"]["config"]["base"]
    varied = [what for f, what in _SEED_SOURCES if b.get(f) is None]
    fixed = [what for f, what in _SEED_SOURCES if b.get(f) is not None]
    if b.get("subset"):
        subset_fixed = b.get("seed_subset") is not None or b.get("seed_split") is not None
        (fixed if subset_fixed else varied).insert(0, "the image subset")
    join = lambda xs: xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]  # noqa: E731
    out = f"A seed fixes {join(varied)} of a run" if varied else "No part of a run varies with its seed"
    if fixed:
        out += f"; {join(fixed)} {'is' if len(fixed) == 1 else 'are'} the same for every seed"
        if "the image subset" in fixed:
            out += ", so the seed-to-seed variance contains no data-subset variance"
    return out + "."


def vit_augment_phrase(results: dict) -> str:
    """The ViT study's augmentation (kind and crop padding, from the recorded base config)."""
    from vit.augment import REFERENCE_PADDING, crop_padding
    from vit.data import image_side

    b = results["vit_study"]["config"]["base"]
    kind, ds = b.get("augment", "crop_flip"), b.get("dataset", "")
    if kind == "none":
        return "The two views are the clean image (no augmentation)."
    pad = b.get("crop_pad")
    pad = crop_padding(ds, image_side(ds, b.get("image_size"))) if pad is None else int(pad)
    ref = REFERENCE_PADDING.get(ds)
    whose = (f"the ContrastiveFF code pads {ref}" if ref is not None and ref != pad
             else "as in the ContrastiveFF code" if ref is not None
             else f"our choice: the ContrastiveFF code defines no padding for {tex_escape(DATASET_NAMES.get(ds, ds))}")
    ra = "RandAugment(3, 14), then " if kind == "randaug" else ""
    return f"Each view is {ra}a random crop with zero padding {pad} ({whose}) and a horizontal flip with probability 1/2."


def vit_departures_phrase(results: dict) -> str:
    """The protocol of the ViT study's runs and every departure from the ContrastiveFF code that
    their ``result.json`` names (:func:`vit.train.departures`), as text."""
    runs = results["vit_study"].get("runs") or []
    protos = sorted({r["protocol"] for r in runs if r.get("protocol")})
    if not protos:
        return "The runs' protocol was not recorded (a study written before protocols were recorded)."
    deps = sorted({d for r in runs for d in (r.get("departures") or [])})
    name = " and ".join(r"\texttt{" + tex_escape(p) + "}" for p in protos)
    if not deps:
        return f"The runs use protocol {name}, with no departure from the ContrastiveFF code."
    listed = ", ".join(r"\texttt{" + tex_escape(d).replace(r"\_", r"\_\allowbreak{}").replace(":", r":\allowbreak{}") + "}"
                       for d in deps)
    return (f"The runs use protocol {name}; their departures from the ContrastiveFF code, as each run's "
            f"\\texttt{{result.json}} names them, are {listed}.")


def vit_probe_spread_phrase(results: dict) -> str:
    """The probe's spread over its seeds, beside its mean."""
    pr = results["vit_study"].get("probe") or {}
    if pr.get("test_acc_sd") is not None:
        return r"(SD \VitProbeSd{} points over \VitProbeN{} seeds)"
    return r"(\VitProbeN{} seed, so no spread)"


def vit_mean_diff_phrase(results: dict, der: dict) -> str:
    """The difference of the loss modes' mean accuracies with its interval and the test that fits
    the design: the paired t-test when the seeds are matched, else Welch's."""
    lmc = loss_mode_comparison(results["vit_study"])
    if lmc is None:
        return "The study has no loss-mode comparison."
    rec = (der.get("vit_study") or {}).get("mean_diff_loss_mode") or {}
    ci = r" (95\% CI [\MeanDiffLoLossMode, \MeanDiffHiLossMode] over the matched seed pairs)" if rec.get("ci95") else ""
    if (lmc.get("paired") or {}).get("paired_t_p") is not None:
        return (r"The mean accuracies of the two loss modes differ by \MeanDiffLossMode\,points" + ci
                + r"; the paired t-test, the test that fits the matched design, gives p = \PPairedTLossMode{} "
                  r"(Welch's test, which ignores the pairing, gives p = \PWelchLossMode).")
    return r"The mean accuracies of the two loss modes differ by \MeanDiffLossMode\,points (Welch p = \PWelchLossMode)."


def phase_eig_phrase(results: dict) -> str:
    """The leading eigenvalue at Q = 0 across the kurtosis sweep: one value when both print alike."""
    sw = results["phase"].get("m4_sweep") or []
    lo, hi = (format_value(sw[i]["eigs_at_0"][-1], ".5f") for i in (0, -1))
    if lo == hi:
        return (r"the leading eigenvalue of the linearisation at $Q = 0$ is \PhaseEigKurtLo{} at both ends of the "
                r"sweep (the same to five decimals)")
    return (r"the leading eigenvalue of the linearisation at $Q = 0$ moves only from \PhaseEigKurtLo{} to "
            r"\PhaseEigKurtHi")


#: generated file name -> (studies needed, maker(results, derived))
PHRASES = {
    "phase_eig": (("phase",), lambda r, der: phase_eig_phrase(r)),
    "vit_probe_spread": (("vit_study",), lambda r, der: vit_probe_spread_phrase(r)),
    "vit_mean_diff": (("vit_study",), vit_mean_diff_phrase),
    "vit_data": (("vit_study",), lambda r, der: vit_data_phrase(r)),
    "vit_seeds": (("vit_study",), lambda r, der: vit_seed_phrase(r)),
    "vit_departures": (("vit_study",), lambda r, der: vit_departures_phrase(r)),
    "vit_augment": (("vit_study",), lambda r, der: vit_augment_phrase(r)),
}
