"""theory: sympy derivation of the CFF margin-loss gradients and checks against torch autograd.

Modules
-------
symbolic        per-anchor losses (none / clamp / subtract) with symbolic |P|, |N|; derived
                gradients for the four cases of CFF Appendix A.1; all identities; LaTeX.
autograd_check  random batches; lambdified formulas assembled into the full-batch gradient
                through the L2 normalisation, compared with autograd of vit.losses.supcon_loss.
verify          ``run_verify(cfg, out_dir) -> dict`` (VerifyConfig, QUICK, FULL): the study the
                paper build calls; reuses a recorded verify.json with the same config.
bench           timing of every phase of verify.
cli             ``cffdyn theory verify|show|bench`` (= ``python -m theory``).
"""
