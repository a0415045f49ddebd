"""Molecular assembly configs (configs/molecules.py, configs/cod_cluster17.py):
every key with its default, read by kflow_jax/modes/assembly.py alone.

  task                "assembly": main.py hands the run to modes/assembly.py
  seed, batch_size    (global, divisible by the device count)
  data.*              clusters: source proxy (pyxtal's crystals, offline)
                      or cod_cluster17 (root, subset -1/5000/10000,
                      af_compat), the proxy's draws / expand / jitter and
                      database, the data seed of the starts, split_seed,
                      limit (first N crystals or clusters; -1 all)
  bands.starts        first graph-Fourier eigen-index of each band
                      (kamp/molecular.py); (0,) = one band = rigid flow
                      matching
  bands.rotations     "bands": rotations move band by band like the
                      centroids; "uniform": at one pace over the whole
                      band axis (flow/rigid.ROTATIONS)
  loss.rot_weight     weight of the squared rotation angle (rad^2) against
                      the squared centroid error (A^2)
  loss.project_centroids  the centroid error only in the active band
                      (flow/rigid.endpoint_errors)
  loss.kappa          "uniform": band time uniform on [0, K] (the flow);
                      "start": always 0 (a plain regression of the final
                      poses from the start: one band, one sampling step)
  model.*             models/cluster_gnn.ClusterNet: hidden, depth,
                      num_rbf, cutoff (A)
  optim.*, ema_decays, mesh.fsdp (1: the network is small; data parallel)

Run control (a relaunch may change them): total_steps, log_every_steps,
checkpoint_every_steps, keep_checkpoints, recipe_devices, and sample.*:
the split scored (valid / test / train), solver (euler / midpoint),
steps_per_band, clusters scored (-1 all), structure files written
(num_files), use_ema.
"""
import ml_collections

from kflow_jax.config_lib import sections


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "assembly"
  c.seed = 0
  c.batch_size = 16
  c.data = ml_collections.ConfigDict(dict(
      source="proxy", root="", subset=-1, af_compat=True, db="", draws=16,
      expand=1.5, jitter=1.5, seed=0, split_seed=0, limit=-1))
  c.bands = ml_collections.ConfigDict(dict(starts=(0, 1, 4, 9),
                                           rotations="bands"))
  c.loss = ml_collections.ConfigDict(dict(rot_weight=4.0, kappa="uniform",
                                          project_centroids=False))
  c.model = ml_collections.ConfigDict(dict(hidden=64, depth=3, num_rbf=32,
                                           cutoff=30.0))
  c.optim = sections.optim_defaults()
  c.ema_decays = (0.999,)
  c.mesh = ml_collections.ConfigDict(dict(fsdp=1))
  c.total_steps = 2000
  c.recipe_devices = 0
  c.log_every_steps = 50
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 3
  c.sample = ml_collections.ConfigDict(dict(
      split="test", solver="euler", steps_per_band=10, num_clusters=-1,
      num_files=4, use_ema=True))
  return c


METHODS = ("kflow", "fm", "regression")


def set_method(c, method: str, file: str) -> None:
  """The bands and loss of a method: kflow (base()'s four bands), fm (one
  band: plain rigid flow matching) or regression (one band, trained and
  sampled at band time 0: one network call from the start)."""
  if method not in METHODS:
    raise ValueError(f"{file}: method={method!r} is not one of {METHODS}.")
  if method != "kflow":
    c.bands.starts = (0,)
  if method == "regression":
    c.loss.kappa = "start"
    c.sample.steps_per_band = 1


def runlocal(c) -> None:
  """Seconds on a CPU: a tiny network, a few steps (tests, smoke runs)."""
  c.batch_size = 4
  c.total_steps = 6
  c.log_every_steps = 2
  c.checkpoint_every_steps = 3
  c.model.hidden = 16
  c.model.depth = 1
  c.sample.steps_per_band = 2
  c.sample.num_files = 1
