"""Infrastructure below every layer: registries, sharding, checkpoints, logs, FLOPs, torch layouts."""
