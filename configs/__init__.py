"""Experiment configs, one file per experiment family (`get_config(arg)`).

Run one with `python -m kflow_jax.main --config=configs/<file>.py[:args]
--workdir=DIR`; shared defaults live in `kflow_jax/config_lib/`.
"""
