"""One setup for every run: from a config to the pieces of a run.

`setup(config, workdir, mode)` builds, once and in one order, everything
train, sample, eval, the tools and the benchmarks need: mesh, data info,
transform (fitted on data first when it must be: PCA), path with its
measured band energies, model (run-owned options such as the MoE's band
times come from the path), optimizer, EMA decays, state init and
shardings, the generation spec, and the run's field (run/field.py: the
network as the run trains it, full-resolution or scale-adaptive, with its
loss, velocity and sampler). Each config section is read here (or in the
module `setup` hands it to), nowhere else.

Run artifacts measured on data once (the PCA basis, the band energies
behind energy-aware band times) and the path they give (path.json: band
edges and times) are written into the workdir at the first start and read
back, or checked, on resume and at sampling, so a resumed run and
`--mode=sample` use exactly the path the model was trained on.
"""
import json
import os
from typing import Any, Callable, NamedTuple, Optional

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax.infra import checkpointing
from kflow_jax import config_lib
from kflow_jax import generate
from kflow_jax.data import input_pipeline
from kflow_jax import kamp
from kflow_jax.infra import metrics_io
from kflow_jax import models
from kflow_jax.models import grid_experts
from kflow_jax.models import text as text_lib
from kflow_jax.run import field as field_lib
from kflow_jax.run import optim
from kflow_jax.flow import adaptive
from kflow_jax.flow import paths
from kflow_jax.flow import slots as slots_lib
from kflow_jax.flow import token_slots
from kflow_jax.infra import sharding
from kflow_jax.run import train_state
from kflow_jax.kamp import coarse

ENERGY_FILE = "band_energy.json"
PCA_FILE = "pca_basis.npz"
PATH_FILE = "path.json"
MODES = ("train", "sample", "eval", "tool")


class Run(NamedTuple):
  """Everything a run is made of (see `setup`)."""
  config: Any
  workdir: Optional[str]
  mode: str
  mesh: Any               # jax.sharding.Mesh
  info: Any               # input_pipeline.DatasetInfo of the train split
  transform: kamp.KTransform
  path: paths.Path
  model: Any              # flax.linen.Module
  num_classes: int        # 0: unconditional
  tx: Any                 # optax.GradientTransformation
  schedule: Callable      # step -> learning rate
  ema_decays: tuple
  init_state: Callable    # () -> sharded TrainState
  state_shardings: Any
  abstract_state: Any     # ShapeDtypeStructs with shardings
  spec: generate.Spec
  decoder: Optional[Callable]  # latents -> pixels (latent configs)
  # The network as the run trains it (field.Field: band I/O, loss and
  # gradient, velocity, sampler), full-resolution or scale-adaptive.
  field: field_lib.Field
  # Condition slots (flow/slots.Slots: a label per group of bands); None:
  # one label for every band.
  slots: Any = None


def setup(config, workdir: Optional[str], mode: str = "train", *,
          devices=None, allow_config_change: bool = False,
          shape: Optional[tuple] = None) -> Run:
  """Builds the run of `config` in `workdir` for `mode` (see MODES).

  train writes config.json (or checks it against the saved one) and the
  data-measured artifacts; sample and eval only read and check them.
  `devices` (default: all) restricts the mesh, e.g. to compare device
  counts in one process. workdir=None (tools, benchmarks) measures
  everything afresh and writes nothing. `shape` (H, W, C), mode "tool"
  only: build the run for inputs of that shape instead of the data set's
  (benchmarks at any size; nothing may then be measured on the data).
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
  wd = None
  if workdir is not None:
    wd = checkpointing.check_workdir(workdir)
    if mode != "tool" and not allow_config_change:
      # Compare now; a train run writes config.json (and path.json) only
      # once the whole run has been built, so a config refused below
      # leaves nothing behind that would block the corrected one.
      checkpointing.check_config(wd, config, False, write=False)
    workdir = os.fspath(wd)
  mesh = sharding.make_mesh(config.mesh.fsdp, devices)
  if mode == "train":
    sharding.check_batch_size(int(config.batch_size), mesh,
                              jax.process_count())
  info = input_pipeline.get_info(config.input, "train")
  if shape is not None:
    info = _reshaped(config, info, shape, mode)
  ncls = num_classes_of(config, info)
  # The one place a run's being scale-adaptive is decided (the field).
  adaptive = bool(config.model.scale_adaptive)
  if adaptive:
    # Before a transform is fitted on data for nothing (pca).
    coarse.check_transform_name(config.transform.name)
  transform = build_transform(config, tuple(info.shape), workdir)
  path = build_path(config, transform, workdir, write=False)
  slots = slots_lib.parse(config.cond, num_bands=path.num_bands,
                          num_classes=ncls,
                          label_dropout=float(config.label_dropout),
                          transform=transform)
  # Token (caption) slots: kinds, text encoder, caption vocabulary.
  slots = token_slots.parse(config.cond, slots,
                            captions=str(config.input.captions))
  if slots is not None and slots.freeze and float(
      config.optim.weight_decay):
    raise ValueError(
        "config.cond.text.freeze keeps the pretrained encoder as loaded "
        "(its gradient is stopped), but AdamW's weight decay "
        f"(config.optim.weight_decay={config.optim.weight_decay}) would "
        "still shrink it: set weight_decay=0 or freeze=False.")
  if slots is not None and adaptive:
    raise ValueError(
        "condition slots (config.cond.slot_starts) are not built for "
        "scale-adaptive runs yet; set config.model.scale_adaptive=False or "
        "config.cond.slot_starts=None.")
  model = build_model(config, ncls, path, slots)
  tx, schedule = optim.make_optimizer(config.optim, int(config.total_steps))
  decays = train_state.validate_ema_decays(config.ema_decays)
  init, shardings, abstract = make_state_init(
      model, info, ncls, tx, decays, mesh, int(config.seed),
      num_slots=slots.num_slots if slots else 1, slots=slots)
  spec = generate.parse_spec(config.sample, ncls, path.num_bands,
                             slots.num_slots if slots else 1, slots=slots)
  field = field_lib.build(config, path, model, mesh, ncls,
                          scale_adaptive=adaptive, slots=slots)
  if wd is not None and mode != "tool":
    checkpointing.check_config(wd, config, allow_config_change,
                               write=mode == "train")
    if mode == "train":
      _check_path_record(os.path.join(workdir, PATH_FILE), path, write=True)
  if mode == "sample" and ncls and not float(config.label_dropout) and (
      spec.guidance != 1.0 or spec.class_drop_t is not None):
    logging.warning("Guidance / class drop use the null class, which this "
                    "run never trained (config.label_dropout=0).")
  return Run(config=config, workdir=workdir, mode=mode, mesh=mesh, info=info,
             transform=transform, path=path, model=model, num_classes=ncls,
             tx=tx, schedule=schedule, ema_decays=decays, init_state=init,
             state_shardings=shardings, abstract_state=abstract, spec=spec,
             decoder=input_pipeline.latent_decoder(config.input),
             field=field, slots=slots)


def _reshaped(config, info, shape, mode: str):
  """The data set's info for inputs of `shape` (setup's override)."""
  shape = tuple(int(v) for v in shape)
  if len(shape) != 3 or min(shape) < 1:
    raise ValueError(f"shape must be (H, W, C) of positive ints, got "
                     f"{shape}.")
  if mode != "tool":
    raise ValueError(
        f"setup(shape={shape}) builds a run for inputs the data set does "
        f"not hold (it has {tuple(info.shape)}); only mode='tool' "
        f"(benchmarks) may, not mode={mode!r}. Drop shape, or use "
        "mode='tool'.")
  measured = [k for k, on in (
      ("config.path.gamma (band energies)", float(config.path.gamma) != 0),
      ("config.transform (fitted on data)", kamp.needs_preparation(
          config.transform.name, _kwargs(config.transform)))) if on]
  if measured and shape != tuple(info.shape):
    raise ValueError(
        f"setup(shape={shape}): {measured[0]} is measured on the data set, "
        f"whose inputs are {tuple(info.shape)}; use a config that measures "
        "nothing on data (gamma=0, a transform that needs no fit), or no "
        "shape override.")
  return info._replace(shape=shape)


def make_state_init(model, info, num_classes, tx, ema_decays, mesh,
                    seed: int, num_slots: int = 1, slots=None):
  """Returns (init_fn() -> sharded state, shardings, abstract state).
  With token slots and config.cond.text.encoder_path, the text encoder's
  initial params are the pretrained ones."""
  rng = jax.random.PRNGKey(int(seed))
  r_init, r_train = jax.random.split(rng)
  pretrained = None
  if slots is not None and slots.encoder_path:
    pretrained = text_lib.load_encoder(slots.encoder_path)[1]

  def boxed():
    x = jnp.zeros((1,) + tuple(info.shape), jnp.float32)
    t = jnp.zeros((1,), jnp.float32)
    shape = text_lib.label_shape(1, num_slots, slots.kinds if slots else (),
                                 slots.text if slots else None)
    y = jnp.zeros(shape, jnp.int32) if num_classes else None
    variables = model.init(r_init, x, t, y, train=False)
    params = variables["params"]
    if pretrained is not None:
      params = text_lib.insert_encoder(params, pretrained,
                                       slots.encoder_path)
    return train_state.create(params, tx, r_train, ema_decays)

  abstract_boxed = jax.eval_shape(boxed)
  shardings = sharding.state_shardings(mesh, abstract_boxed,
                                       models.param_shardings)
  abstract = jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
      nn.meta.unbox(abstract_boxed), shardings)
  init = jax.jit(lambda: nn.meta.unbox(boxed()), out_shardings=shardings)
  return init, shardings, abstract


def restore(run: Run, with_data: bool = False, step: Optional[int] = None):
  """(step, state, data_state) of the newest readable checkpoint of the
  run's workdir, or of checkpoint `step`; a WorkdirError when there is
  none."""
  ckpt = checkpointing.Checkpointer(run.workdir,
                                    int(run.config.keep_checkpoints),
                                    read_only=True)
  try:
    restored = ckpt.restore_latest(run.abstract_state, with_data=with_data,
                                   step=step)
  finally:
    ckpt.close()
  if restored is None:
    raise checkpointing.WorkdirError(
        f"No checkpoint in {run.workdir}; train first with --mode=train.")
  return restored


def inference_params(run: Run, state, decay=None):
  """The params sampling and evaluation use: an EMA (the spec's decay, or
  the first) when spec.use_ema, else the raw params."""
  if not run.spec.use_ema:
    return state.params
  return train_state.ema_by_decay(state, run.ema_decays,
                                  run.spec.ema_decay if decay is None
                                  else decay)


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


def build_transform(config, shape, workdir: Optional[str]) -> kamp.KTransform:
  """The config's transform, fitted on training data first when it must be
  (the registry's `prepare` hook: the PCA basis, into the workdir)."""
  name = config.transform.name
  options = _kwargs(config.transform)
  if kamp.needs_preparation(name, options):
    if workdir is None:
      raise ValueError(
          f"the {name} transform is fitted on data and needs a workdir to "
          "hold the fit, or config.transform.basis=<path to .npz>.")
    # The fit is deterministic: every process fits its own copy rather
    # than wait for process 0's file.
    out = os.path.join(workdir, PCA_FILE)
    if jax.process_index() != 0:
      out += f".p{jax.process_index()}"
    n = int(config.pca_examples)
    if not os.path.exists(out):
      logging.info("Fitting the %s transform on up to %d training examples "
                   "-> %s", name, n, out)
    options = kamp.prepare(name, options, out=out, batches=lambda: (
        input_pipeline.epoch_images(config.input, seed=int(config.seed))),
                           max_examples=n)
  return kamp.get(name, shape=shape, **options)


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
    metrics_io.write_json(f, {"cutoffs": list(cutoffs),
                              "energies": energies.tolist(),
                              "transform": transform.name,
                              "num_examples": n})
  return energies


def build_path(config, transform, workdir: Optional[str],
               write: bool = True) -> paths.Path:
  """The config's path; its record (path.json) is written at the first
  start and must match on every later start."""
  p = config.path
  cutoffs = p.cutoffs
  if cutoffs is None:
    cutoffs = kamp.even_cutoffs(int(p.num_scales))
  cutoffs = kamp.validate_cutoffs(cutoffs)
  energies = None
  rule = p.energy
  if rule not in paths.ENERGY_RULES:
    raise ValueError(f"config.path.energy={rule!r}; valid: "
                     f"{list(paths.ENERGY_RULES)}.")
  if float(p.gamma) != 0.0:
    energies = _band_energies(config, transform, cutoffs, workdir)
    if rule == "displacement":
      energies = energies + paths.measure_noise_band_energy(
          transform, cutoffs, int(p.energy_examples))
  path = paths.make_path(transform, cutoffs=cutoffs, energies=energies,
                         gamma=float(p.gamma), blend=p.blend,
                         overlap=float(p.overlap))
  if workdir is not None:
    _check_path_record(os.path.join(workdir, PATH_FILE), path, write)
  return path


def _check_path_record(f: str, path: paths.Path, write: bool) -> None:
  record = dict(paths.to_config(path), transform=path.transform.name)
  if os.path.exists(f):
    with open(f) as fh:
      saved = json.load(fh)
    same = (saved.get("transform") == record["transform"] and np.allclose(
        saved["tau"], record["tau"], atol=1e-6) and np.allclose(
            saved["cutoffs"], record["cutoffs"], atol=1e-9))
    if not same:
      raise ValueError(
          f"{f} records the path this run was trained with (transform "
          f"{saved.get('transform')}, cutoffs {saved['cutoffs']}, tau "
          f"{saved['tau']}), but the config now gives transform "
          f"{record['transform']}, cutoffs {record['cutoffs']}, tau "
          f"{record['tau']}; use a new workdir for another path.")
  elif write:
    metrics_io.write_json(f, record)


def build_model(config, num_classes: int, path: paths.Path, slots=None):
  """The config's backbone; run-owned options come from the run (the
  MoE's band times, the label table's condition slots)."""
  name = config.model.name
  # How the run uses the backbone (config_lib.RUN_MODEL_KEYS) is not a
  # backbone option.
  kwargs = _kwargs(config.model,
                   drop=("name",) + tuple(config_lib.RUN_MODEL_KEYS))
  owned = models.run_options(name)
  set_by_config = [k for k in owned if kwargs.get(k) is not None]
  if set_by_config:
    raise ValueError(
        f"config.model.{set_by_config[0]} is set by the run (model {name!r} "
        "takes it from the path's band times); remove it from the config.")
  run_values = {"tau": tuple(float(v) for v in path.tau)}
  kwargs.update({k: run_values[k] for k in owned})
  if num_classes and "num_classes" not in kwargs:
    kwargs["num_classes"] = num_classes
  if slots is not None:
    kwargs["num_slots"] = slots.num_slots
    if slots.max_tokens:
      kwargs.update(slot_kinds=slots.kinds, text=slots.text,
                    freeze_encoder=slots.freeze)
  model = models.get(name, **kwargs)
  if bool(config.model.get("per_grid_experts", False)):
    model = _grid_experts(config, model, path)
  return model


def _grid_experts(config, model, path):
  """The backbone once per coarse grid of the run's plan (config.model.
  per_grid_experts; models/grid_experts.py)."""
  if not bool(config.model.scale_adaptive):
    raise ValueError(
        "config.model.per_grid_experts gives each coarse grid of a "
        "scale-adaptive run its own backbone, and this run has no coarse "
        "grids; set config.model.scale_adaptive=True or "
        "per_grid_experts=False.")
  frames = adaptive.plan(path, model).frames
  factors = tuple(dict.fromkeys(int(f.factor) for f in frames))
  if len(factors) < 2:
    raise ValueError(
        f"config.model.per_grid_experts: every band of this run lives on "
        f"one grid (factor {factors[0]}), so there is nothing to split; "
        "use more bands or per_grid_experts=False.")
  return grid_experts.GridExperts(
      experts=tuple(model.clone() for _ in factors), factors=factors)


def num_classes_of(config, info) -> int:
  return int(info.num_classes) if config.conditional else 0
