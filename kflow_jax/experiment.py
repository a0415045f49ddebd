"""From a config to the pieces of a run: data info, transform, path, model,
loss and sampler.

Run artifacts that are measured on data once (the PCA basis, the band
energies behind energy-aware band times) are written into the workdir at
the first start and read back on resume and at sampling, so a resumed run
and `--mode=sample` use exactly the path the model was trained on.
"""
import json
import os
from typing import Any, Callable, NamedTuple, Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax import input_pipeline
from kflow_jax import kamp
from kflow_jax import losses
from kflow_jax import models
from kflow_jax import paths
from kflow_jax import sampling
from kflow_jax import steering

ENERGY_FILE = "band_energy.json"
PCA_FILE = "pca_basis.npz"


class Experiment(NamedTuple):
  info: Any             # input_pipeline.DatasetInfo of the train split
  transform: kamp.KTransform
  path: paths.Path
  model: Any            # flax.linen.Module
  num_classes: int      # 0: unconditional


def _kwargs(cfg, drop=("name",)) -> dict:
  return {k: v for k, v in cfg.to_dict().items() if k not in drop}


def _data_batches(config, num_examples: int):
  """Deterministic training batches for measuring statistics, identical on
  every process (process_index=0 of 1), so no cross-host sync is needed."""
  bs = min(int(config.batch_size), max(int(num_examples), 1))
  it = input_pipeline.create(config.input, global_batch_size=bs,
                             seed=int(config.seed), process_index=0,
                             process_count=1, split="train")
  for _ in range(max(1, -(-int(num_examples) // bs))):
    yield next(it)


def _write_json(path: str, obj) -> None:
  if jax.process_index() != 0:
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def build_transform(config, shape, workdir: Optional[str]) -> kamp.KTransform:
  """kamp.get(config.transform.name, shape, **rest); fits the PCA basis into
  the workdir first when the transform needs one."""
  name = config.transform.name
  kwargs = _kwargs(config.transform)
  if name == "pca" and not kwargs.get("basis"):
    if workdir is None:
      raise ValueError("the pca transform needs a workdir to hold its basis, "
                       "or config.transform.basis=<path to .npz>.")
    basis = os.path.join(workdir, PCA_FILE)
    if not os.path.exists(basis):
      from kflow_jax.tools import fit_pca  # pylint: disable=g-import-not-at-top
      n = int(config.get("pca_examples", 2048))
      if jax.process_index() != 0:
        # The fit is deterministic: other processes fit their own copy
        # rather than wait for process 0's file.
        basis = basis + f".p{jax.process_index()}"
      logging.info("Fitting the PCA basis on up to %d training examples -> "
                   "%s", n, basis)
      fit_pca.fit_and_save(
          fit_pca.config_batches(config, seed=int(config.seed)), basis,
          patch=kwargs.get("patch"), max_examples=n)
    kwargs["basis"] = basis
  return kamp.get(name, shape=shape, **kwargs)


def _band_energies(config, transform, cutoffs, workdir):
  """Band energies for energy-aware band times: read from the workdir, or
  measured on training data once and saved there."""
  f = None if workdir is None else os.path.join(workdir, ENERGY_FILE)
  if f is not None and os.path.exists(f):
    with open(f) as fh:
      saved = json.load(fh)
    if [round(c, 6) for c in saved["cutoffs"]] != [round(c, 6)
                                                    for c in cutoffs]:
      raise ValueError(
          f"{f} was measured for cutoffs {saved['cutoffs']}, but the config "
          f"gives {list(cutoffs)}; use a new workdir for other bands.")
    return np.asarray(saved["energies"], np.float32)
  n = int(config.path.energy_examples)
  energies = paths.measure_band_energy(
      transform, _data_batches(config, n), cutoffs)
  logging.info("Measured band energies on %d examples: %s", n,
               np.round(energies, 5).tolist())
  if f is not None:
    _write_json(f, {"cutoffs": list(cutoffs), "energies": energies.tolist(),
                    "transform": transform.name, "num_examples": n})
  return energies


def build_path(config, transform, workdir: Optional[str]) -> paths.Path:
  p = config.path
  cutoffs = p.cutoffs
  if cutoffs is None:
    cutoffs = kamp.even_cutoffs(int(p.num_scales))
  cutoffs = kamp.validate_cutoffs(cutoffs)
  energies = None
  if float(p.gamma) != 0.0:
    energies = _band_energies(config, transform, cutoffs, workdir)
  return paths.make_path(transform, cutoffs=cutoffs, energies=energies,
                         gamma=float(p.gamma), blend=p.blend,
                         overlap=float(p.overlap))


def build_model(config, num_classes: int):
  kwargs = _kwargs(config.model)
  if num_classes and "num_classes" not in kwargs:
    kwargs["num_classes"] = num_classes
  return models.get(config.model.name, **kwargs)


def num_classes_of(config, info) -> int:
  return int(info.num_classes) if config.get("conditional", False) else 0


def build(config, workdir: Optional[str]) -> Experiment:
  info = input_pipeline.get_info(config.input, "train")
  transform = build_transform(config, tuple(info.shape), workdir)
  path = build_path(config, transform, workdir)
  ncls = num_classes_of(config, info)
  return Experiment(info, transform, path, build_model(config, ncls), ncls)


def init_variables(exp: Experiment, rng):
  """Model variables (boxed with logical axis names) for one dummy batch."""
  x = jnp.zeros((1,) + tuple(exp.info.shape), jnp.float32)
  t = jnp.zeros((1,), jnp.float32)
  y = jnp.zeros((1,), jnp.int32) if exp.num_classes else None
  return exp.model.init(rng, x, t, y, train=False)


_T_SAMPLING_KEYS = ("band_weights", "logit_mean", "logit_std")


def make_loss(exp: Experiment, config) -> Callable:
  """(params, batch, keys) -> (loss, aux) on a local batch (see sharding).

  Each example's noise x0, time t and label drop come from its own key, so
  the loss does not depend on how the batch is split over devices; the
  model then runs once on the whole local batch.
  """
  opts = _kwargs(config.loss, drop=())
  method = opts.pop("t_sampling", "uniform")
  t_opts = {k: opts.pop(k) for k in _T_SAMPLING_KEYS if k in opts}
  p_drop = float(config.get("label_dropout", 0.0))
  model, ncls, path = exp.model, exp.num_classes, exp.path

  def loss_fn(params, batch, keys):
    x1 = batch["image"]

    def draw(key):
      k_loss, k_drop = jax.random.split(key)
      # The same split as losses.kflow_loss makes for its own draws.
      r_noise, r_t = jax.random.split(k_loss)
      x0 = jax.random.normal(r_noise, x1.shape[1:], jnp.float32)
      t = paths.sample_t(r_t, 1, path, method, **t_opts)[0]
      return x0, t, k_drop
    x0, t, k_drop = jax.vmap(draw)(keys)
    y = None
    if ncls:
      y = batch["label"].astype(jnp.int32)
      if p_drop > 0:
        y = jax.vmap(lambda k, yy: models.drop_labels(
            k, yy[None], p_drop, ncls)[0])(k_drop, y)

    def velocity_fn(x, tt, yy):
      return model.apply({"params": params}, x, tt, yy, train=True)
    return losses.kflow_loss(velocity_fn, path, x1, keys[0], y=y, x0=x0,
                             t=t, **opts)
  return loss_fn


def make_per_example_loss(exp: Experiment, config) -> Callable:
  """(params, example, key) -> (loss, aux): `make_loss` on one example."""
  local = make_loss(exp, config)

  def loss_fn(params, example, key):
    batch = jax.tree.map(lambda v: v[None], example)
    return local(params, batch, key[None])
  return loss_fn


def _steering(exp: Experiment, scfg):
  """(guidance, t_drop, extra_times) from config.sample, validated."""
  ncls, path = exp.num_classes, exp.path
  guidance = float(scfg.guidance)
  bands = tuple(scfg.get("guidance_bands", ()) or ())
  t_drop = float(scfg.get("class_drop_t", -1.0))
  if not ncls:
    # Without labels these options would be silently ignored.
    used = [k for k, on in (("guidance", guidance != 1.0),
                            ("guidance_bands", bool(bands)),
                            ("class_drop_t", t_drop >= 0)) if on]
    if used:
      raise ValueError(
          f"config.sample.{', '.join(used)} need a class-conditional model "
          "(config.conditional=True, trained with config.label_dropout > 0 "
          "for guidance); reset them (guidance=1.0, guidance_bands=(), "
          "class_drop_t=-1) for an unconditional config.")
  if t_drop > 1.0:
    raise ValueError(f"config.sample.class_drop_t={t_drop} must lie in "
                     "[0, 1], or be negative (-1) for no class drop.")
  if bands:
    # Guidance only in the chosen bands, plain conditional elsewhere.
    guidance = steering.band_guidance(path, guidance, bands)
  extra = (t_drop,) if t_drop >= 0 else ()
  return guidance, (t_drop if t_drop >= 0 else None), extra


def sampler_extra_times(exp: Experiment, scfg) -> tuple:
  """Times where the configured sampling field switches besides the band
  edges (the class-drop time), for sampling.time_grid(extra_times=...)."""
  return _steering(exp, scfg)[2]


def make_sampler(exp: Experiment, scfg) -> Callable:
  """fn(params, x0, y) -> samples, with the config's solver, guidance and
  steering (config.sample: guidance, guidance_bands, class_drop_t).

  The velocity is v_u + w(t) (v_c - v_u): w = guidance (1: plain
  conditional), per band with guidance_bands, and 0 from class_drop_t on
  (the null label only). y is ignored by unconditional models.
  """
  model, ncls, path = exp.model, exp.num_classes, exp.path
  guidance, t_drop, extra = _steering(exp, scfg)

  def apply_fn(params):
    return lambda x, t, y: model.apply({"params": params}, x, t, y,
                                       train=False)

  def run(params, x0, y, t_start=0.0, t_end=1.0, num_steps=None):
    if ncls and t_drop is not None and np.ndim(guidance) == 0:
      vfn = steering.class_drop_velocity(
          apply_fn(params), path, y, num_classes=ncls, t_drop=t_drop,
          guidance=guidance)
    elif ncls and t_drop is not None:
      # Per-band guidance while the label is kept, the null label after.
      def w(t):
        return jnp.where(t < t_drop,
                         sampling.guidance_weights(path, guidance, t), 0.0)
      vfn = sampling.cfg_velocity(apply_fn(params), path, y,
                                  num_classes=ncls, guidance=w)
    elif ncls:
      vfn = sampling.cfg_velocity(apply_fn(params), path, y,
                                  num_classes=ncls, guidance=guidance)
    else:
      vfn = lambda x, t: apply_fn(params)(x, t, None)
    out = sampling.sample(vfn, path, x0, solver=scfg.solver,
                          num_steps=int(num_steps or scfg.num_steps),
                          project=bool(scfg.project), t_start=t_start,
                          t_end=t_end, extra_times=extra)
    return out[0] if isinstance(out, tuple) else out
  return run


def sample_labels(exp: Experiment, start: int, count: int) -> jax.Array:
  """Labels of samples start..start+count-1: 0..K-1 repeated (sample i has
  class i % K), so any run of K samples holds every class once and the
  class-row grid has one column per repeat. Zeros for unconditional models
  (which ignore them)."""
  return (jnp.arange(start, start + count, dtype=jnp.int32)
          % max(exp.num_classes, 1))


def initial_noise(exp: Experiment, scfg, rng, batch: int,
                  batch_index: Optional[int] = None):
  """x0 for sampling; config.sample.shared_bands shares those bands' noise
  across the samples (the paper's fix-some-bands steering experiment).

  batch_index: for a sample set drawn in several batches: the noise of
  batch i is drawn from fold_in(rng, i), except the shared bands, which
  come from rng itself, so they are shared by every batch, not only
  within one.
  """
  shared = tuple(scfg.get("shared_bands", ()) or ())
  key = rng if batch_index is None else jax.random.fold_in(rng, batch_index)
  shape = (batch,) + tuple(exp.info.shape)
  if not shared:
    return jax.random.normal(key, shape, jnp.float32)
  if batch_index is None:
    return steering.shared_band_noise(rng, exp.path, batch, shared)
  ref = steering.shared_band_noise(rng, exp.path, 1, shared)
  chosen = {int(b) for b in shared}
  sources = [0 if s in chosen else 1 for s in range(exp.path.num_bands)]
  return steering.mix_noise(exp.path,
                            [ref, jax.random.normal(key, shape, jnp.float32)],
                            sources)


def band_strip_states(exp: Experiment, sampler, params, x0, y,
                      num_steps: int, extra_times=()):
  """States at every band boundary tau_0..tau_S, integrating band by band
  with the same solver: [S+1, B, H, W, C] (index 0 is the noise).

  extra_times: the sampler's other switch times (sampler_extra_times),
  each of which needs its own step inside a band.
  """
  tau = [float(v) for v in exp.path.tau]
  states = [x0]
  x = x0
  for a, b in zip(tau[:-1], tau[1:]):
    # The band's share of the step budget, at least one step per segment
    # between switch times (window edges with overlap, a class-drop time).
    segments = 1 + len(sampling.switch_times(exp.path, a, b, extra_times))
    n = max(segments, round(num_steps * (b - a)))
    x = sampler(params, x, y, t_start=a, t_end=b, num_steps=n)
    states.append(x)
  return jnp.stack(states)
