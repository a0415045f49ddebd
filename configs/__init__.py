"""Experiment configs: one per file, `get_config(arg)`; shared parts in
`common.py`. Load with --config=configs/<name>.py[:runlocal]."""
