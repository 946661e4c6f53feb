"""sim: numba simulators of the one-layer contrastive model, its mean-field ODEs, and eigenmode dynamics."""
