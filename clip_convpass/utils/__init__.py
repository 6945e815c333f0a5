"""Helpers every layer may use: errors, io (atomic writes), locks, logging and progress, runtime
(seed, device, environment), distributed (rank and world size)."""
