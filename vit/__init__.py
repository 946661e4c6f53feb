"""vit: PyTorch CFF training of ViTs and MLPs, diagnostics and multi-seed studies.

The margin losses live in :mod:`vit.losses` and are the single definition used package-wide.
"""
