"""theory: sympy derivation of the CFF margin-loss gradients and checks against torch autograd."""
