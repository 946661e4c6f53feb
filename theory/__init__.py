"""theory: sympy derivation of the CFF margin-loss gradients and checks against torch autograd.

Modules
-------
symbolic        per-anchor losses (none / clamp / subtract) with symbolic |P|, |N|; derived
                gradients for the four cases of CFF Appendix A.1; all identities and the
                mutation controls (wrong references that must stay non-zero), checked in the
                package's own indexed-sum normal form (``canonical_residual``, canonical ``Dummy`` indices,
                multiple sums handled).
notation        the derived gradients in the legend's notation (``latex``, ``layout``,
                ``gradient_cases_latex`` for the paper).
numeric         the derived gradients lambdified into per-pair coefficient functions.
autograd_check  random batches; lambdified formulas assembled into the full-batch gradient
                through the L2 normalisation, compared with autograd of vit.losses.supcon_loss
                (relative error with a floor of 1e-4 of one gradient term, and without it); the
                worst cases against an independent 100-digit mpmath reference.
verify          ``run_verify(cfg, out_dir) -> dict`` (VerifyConfig, QUICK, FULL): the study the
                paper build calls; reuses a recorded verify.json with the same config and schema.
show            the side-by-side table (paper formula, derived formula, residual) for every
                case, loss form and τ, with a notation legend; Markdown or LaTeX.
bench           timing of every phase of verify.
cli             ``cffdyn theory verify|show|bench`` (= ``python -m theory``).
"""
