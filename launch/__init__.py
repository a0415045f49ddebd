"""Launchers: TPU pods, GPU clusters, sweeps (python -m launch.sweep)."""
