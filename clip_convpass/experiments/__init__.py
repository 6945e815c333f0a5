"""Multi-run experiments: grids, sweeps, the head-init study, WiSE-FT and the demo."""
