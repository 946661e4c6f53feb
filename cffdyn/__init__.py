"""cffdyn: margin clamping and training variance in Contrastive Forward-Forward learning.

The package is split into four importable parts (see README): ``theory`` (sympy gradient
derivations and checks), ``sim`` (numba simulators and mean-field ODEs), ``vit`` (PyTorch CFF
training, diagnostics and multi-seed studies) and ``paper`` (the regenerated manuscript).
This small package holds what they share: the command-line dispatcher and result I/O.
"""
__version__ = "0.1.0"
