"""The machine-readable prediction record of ``cffdyn sim predict``, its reader and validator.

A ViT noise-dose analysis imports this module (it needs numpy only, nothing that compiles):

    from sim.prediction_record import load_prediction, predicted_at, sigma_n_from_preacts
    rec = load_prediction("results/sim/prediction.json")     # UserError, one line, if unusable
    sn = sigma_n_from_preacts(h1, h2)                          # a layer's pre-activations, two views
    p = predicted_at(rec, "relu", sn)                          # sign, log VR, interval, validity

What is predicted: the clamp / subtract ratio VR of the stationary seed-to-seed variance of the
one-unit model's overlap, as a function of the within-pair noise sigma_n, per activation and
margin (curves), with the sigma_n where VR crosses 1.  The noise measurable: in the model,
on positive pairs,

    r = Var(h1 - h2) / (2 Var h) = sn^2 (1 - rho) / (1 + (m2 - 1) Q^2 + sn^2),

which is ``sn^2 / (1 + sn^2)`` for independent views (rho = 0) of a unit whose signal variance
equals the background's (m2 = 1, or Q = 0), independent of Q there; the effective sigma_n of a
layer is ``sqrt(r / (1 - r))`` (:func:`sigma_n_from_ratio`).

Schema (``schema`` == :data:`SCHEMA`, ``schema_version`` == :data:`SCHEMA_VERSION`): the keys
of :data:`REQUIRED`; each entry of ``predictions`` holds the keys of :data:`PREDICTION_KEYS`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cffdyn.errors import CorruptFileError, UserError
from cffdyn.io import record_status

__all__ = ["SCHEMA", "SCHEMA_VERSION", "REQUIRED", "PREDICTION_KEYS", "validate_prediction", "load_prediction",
           "predicted_at", "noise_ratio", "sigma_n_from_ratio", "sigma_n_from_preacts"]

SCHEMA = "cffdyn.sim.prediction"
SCHEMA_VERSION = 1
#: top-level keys every record holds
REQUIRED = ("schema", "schema_version", "what", "model", "N", "sigma_n_measure", "curves", "crossings",
            "predictions", "refuted_if", "validity_range", "power", "one_unit_limits", "provenance")
#: keys of one entry of ``predictions`` (one activation at one sigma_n)
PREDICTION_KEYS = ("activation", "sigma_n", "margin", "valid", "outcome", "sign", "log_vr", "log_vr_interval",
                   "vr", "seeds_per_arm")


def validate_prediction(rec: Any, where: str = "prediction record") -> dict:
    """``rec`` if it is a record of this schema and version with every required key and finite
    numbers where a prediction is valid; otherwise UserError naming the first problem."""
    if not isinstance(rec, Mapping):
        raise UserError(f"{where}: not a JSON object", "give the prediction.json written by `cffdyn sim predict`")
    if rec.get("schema") != SCHEMA or rec.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"{where}: schema {rec.get('schema')!r} version {rec.get('schema_version')!r}, expected "
                        f"{SCHEMA!r} version {SCHEMA_VERSION}",
                        "regenerate it with this checkout's `cffdyn sim predict`")
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise UserError(f"{where}: missing keys {missing}", "regenerate it with `cffdyn sim predict`")
    preds = rec["predictions"]
    if not isinstance(preds, list) or not preds:
        raise UserError(f"{where}: 'predictions' is empty", "regenerate it with `cffdyn sim predict`")
    for i, p in enumerate(preds):
        gone = [k for k in PREDICTION_KEYS if k not in p]
        if gone:
            raise UserError(f"{where}: predictions[{i}] lacks {gone}", "regenerate it with `cffdyn sim predict`")
        if p["valid"]:
            vals = [p["sigma_n"], p["log_vr"], *p["log_vr_interval"]]
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals):
                raise UserError(f"{where}: predictions[{i}] is marked valid with a non-finite number",
                                "regenerate it with `cffdyn sim predict`")
    return dict(rec)


def load_prediction(path: str | Path) -> dict:
    """Read and validate a prediction record (one read); UserError (one line) on a missing or
    unreadable file, one edited after it was written (its content hash), or another schema."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise UserError(f"prediction record {p} does not exist", "run `cffdyn sim predict --out DIR` first") from None
    except OSError as exc:
        raise UserError(f"prediction record {p} cannot be read ({exc.strerror})", "check the path") from None
    try:
        rec = json.loads(text)
    except ValueError as exc:
        raise UserError(f"prediction record {p} is not JSON ({exc})", "regenerate it with `cffdyn sim predict`") \
            from None
    if record_status(rec) == "edited":
        raise CorruptFileError(f"prediction record {p} was changed after it was written (its content hash does not "
                               f"match)", "restore the original, or regenerate it with `cffdyn sim predict`")
    return validate_prediction(rec, str(p))


def predicted_at(rec: Mapping, activation: str, sigma_n: float) -> dict:
    """The record's prediction for ``activation`` at ``sigma_n``: log VR and its interval
    interpolated linearly between the two neighbouring grid points when both are valid; outside
    the valid range, ``valid`` is False with the reason (never an extrapolated number)."""
    rows = sorted((p for p in rec["predictions"] if p["activation"] == activation), key=lambda p: p["sigma_n"])
    if not rows:
        raise UserError(f"no prediction for activation {activation!r} in the record",
                        f"choose one of {sorted({p['activation'] for p in rec['predictions']})}")
    if not (math.isfinite(sigma_n) and sigma_n >= 0):
        raise UserError(f"sigma_n={sigma_n!r} must be finite and >= 0", "estimate it with sigma_n_from_preacts")
    xs = [p["sigma_n"] for p in rows]
    j = int(np.searchsorted(xs, sigma_n))
    pair = [rows[j]] if j < len(rows) and xs[j] == sigma_n else rows[max(j - 1, 0):j + 1]
    if len(pair) == 1 and (xs[0] <= sigma_n <= xs[-1]):
        a = b = pair[0]
    elif len(pair) == 2:
        a, b = pair
    else:
        return {"activation": activation, "sigma_n": sigma_n, "valid": False,
                "reason": f"sigma_n={sigma_n:.3g} outside the predicted range [{xs[0]:g}, {xs[-1]:g}]"}
    if not (a["valid"] and b["valid"]):
        bad = a if not a["valid"] else b
        return {"activation": activation, "sigma_n": sigma_n, "valid": False,
                "reason": f"grid point sigma_n={bad['sigma_n']:g} is outside validity ({bad['outcome']})"}
    u = 0.0 if b["sigma_n"] == a["sigma_n"] else (sigma_n - a["sigma_n"]) / (b["sigma_n"] - a["sigma_n"])
    lv = (1 - u) * a["log_vr"] + u * b["log_vr"]
    lo = (1 - u) * a["log_vr_interval"][0] + u * b["log_vr_interval"][0]
    hi = (1 - u) * a["log_vr_interval"][1] + u * b["log_vr_interval"][1]
    sign = 1 if lo > 0 else (-1 if hi < 0 else 0)
    return {"activation": activation, "sigma_n": sigma_n, "valid": True, "log_vr": lv, "log_vr_interval": [lo, hi],
            "vr": math.exp(lv), "sign": sign, "margin": a["margin"]}


def noise_ratio(sn: float, rho: float = 0.0, Q: float = 0.0, m2: float = 1.0) -> float:
    """The model's ``Var(h1 - h2) / (2 Var h)`` on positive pairs (module docstring)."""
    return sn * sn * (1.0 - rho) / (1.0 + (m2 - 1.0) * Q * Q + sn * sn)


def sigma_n_from_ratio(r: float) -> float:
    """Effective sigma_n from ``r = Var(h1 - h2) / (2 Var h)``: ``sqrt(r / (1 - r))``."""
    if not (math.isfinite(r) and 0.0 <= r < 1.0):
        raise UserError(f"noise ratio r={r!r} must lie in [0, 1) for an effective sigma_n",
                        "r = Var(h1 - h2) / (2 Var h) over positive pairs; r >= 1 means views less alike than "
                        "unrelated inputs")
    return math.sqrt(r / (1.0 - r))


def sigma_n_from_preacts(h1, h2) -> float:
    """Effective sigma_n of a layer from its pre-activations on the two views of the same
    images (arrays of equal shape (pairs,) or (pairs, units); units are pooled: the ratio of
    summed variances).  Var h pools both views."""
    a, b = np.asarray(h1), np.asarray(h2)
    if a.shape != b.shape or a.shape[0] < 2:
        raise UserError(f"pre-activations of shapes {a.shape} and {b.shape}: need equal shapes with >= 2 pairs",
                        "pass the same units on both views")
    if not (np.issubdtype(a.dtype, np.floating) and np.issubdtype(b.dtype, np.floating)):
        raise UserError(f"pre-activations of dtype {a.dtype}/{b.dtype}: need floating point", "pass float arrays")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise UserError("pre-activations contain NaN or inf", "check the layer's output")
    a = a.reshape(a.shape[0], -1).astype(float)
    b = b.reshape(b.shape[0], -1).astype(float)
    vd = float(np.sum(np.var(a - b, axis=0, ddof=1)))
    vh = float(np.sum(np.var(np.concatenate([a, b]), axis=0, ddof=1)))
    if vh <= 0:
        raise UserError("pre-activations have zero variance", "use a layer whose outputs vary over the images")
    return sigma_n_from_ratio(vd / (2.0 * vh))
