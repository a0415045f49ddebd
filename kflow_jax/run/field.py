"""The network as the run trains it: one Field per run.

`build` (called once, by experiment.setup) decides how the run uses its
backbone, at full resolution or scale-adaptive (config.model.
scale_adaptive: band s's network on bands 0..s as a smaller image,
flow/adaptive.py), and returns a `Field` of pure functions that train,
sample, eval, restore and the benchmarks call alike, whichever it is. A new
loss or sampler option is then written here once, and nothing else asks
which kind of run it is.

The Field owns what follows from how the network is trained:
  band I/O       config.path.hide_input / project_output, checked
                 (paths.band_network; a scale-adaptive network sees only
                 bands 0..s by construction and uses neither)
  slots          condition slots (flow/slots.py, parsed by setup): labels
                 [B, K] ([B, K, L] with token slots, the batch's captions
                 in them) seen through their visibility, band-mixed
                 hybrids made on the global batch, slot dropout events
  the loss       config.loss and config.label_dropout, read once; every
                 example's noise, time and label drop are drawn by
                 losses.draw_examples, from that example's own key
  the velocity   the network with the spec's guidance, per-band guidance
                 and class drop (generate/sampler.guided_velocity)
  the sampler    generate/sampler.make_sampler at full resolution, or
                 flow/adaptive_sampler.make_sampler band by band
"""
from typing import Callable, NamedTuple, Optional

from absl import logging

from kflow_jax.flow import adaptive
from kflow_jax.flow import adaptive_loss
from kflow_jax.flow import adaptive_sampler
from kflow_jax.flow import losses
from kflow_jax.flow import paths
from kflow_jax.flow import slots as slots_lib
from kflow_jax.generate import sampler as sampler_lib
from kflow_jax.infra import sharding
from kflow_jax.kamp import coarse


class BandIO(NamedTuple):
  """What the network sees and moves (config.path, docs/method.md#band-io):
  hide_input zeroes the bands not started at t, project_output keeps only
  the bands that flow at t."""
  hide_input: bool = False
  project_output: bool = False


class Field(NamedTuple):
  """The run's network as it is trained (see `build`).

  band_io: BandIO, the network's band I/O.
  plan: adaptive.Plan of a scale-adaptive run (each band's grid and frame,
    for reports such as the cost benchmark), None at full resolution.
  tag: suffix of --mode=sample's set directory ("" or "_adaptive").
  record: what a sample set records about the field ({} or
    {"scale_adaptive": True}).
  band_grids: "HxW" of the grid each band's network runs on (reports; ()
    at full resolution).
  loss_and_grad: (params, batch, keys) -> (loss, aux, grads) over a global
    batch, sharded over the mesh (sharding.sharded_loss_and_grad's
    contract: keys [B, 2] one per example, batch-sharded).
  loss: the same without the gradient (evaluation; grads None).
  network: (params, train=False) -> (x, t, y) -> v, the network at full
    resolution as it is trained (band I/O included; scale-adaptive: the
    network of t's band on its grid, all examples in one band).
  velocity: (params, y, spec) -> (x, t) -> v, the sampling field of
    generate.Spec `spec` for labels y (guidance, guidance_bands, class
    drop), at full resolution. The output projection is the sampler's
    (`projects`), done on its coefficient state.
  sampler: (spec, unroll=False) -> fn(params, x0, y, t_start=0.0,
    t_end=1.0, num_steps=None) -> (x, stats), stats["nfe"] (and for a
    scale-adaptive run nfe_per_band, nfe_full_equivalent); jit it with
    generate.sampler.jit_sampler. unroll: fixed-step solvers, step loops
    unrolled (XLA counts a loop body once: FLOP counts need it).
  projects: (spec) -> bool, whether samplers project v on the bands active
    at t: asked for (spec.project) or trained so (project_output).
  train_phases: ((end_step, loss_and_grad), ...): a scale-adaptive run's
    curriculum of per-band sub-batches (config.loss.band_batch_phases),
    each for the steps before its end_step; loss_and_grad after the last.
    () for every other run. See `loss_and_grad_at`.
  """
  band_io: BandIO
  plan: Optional[adaptive.Plan]
  tag: str
  record: dict
  band_grids: tuple
  loss_and_grad: Callable
  loss: Callable
  network: Callable
  velocity: Callable
  sampler: Callable
  projects: Callable
  train_phases: tuple = ()


def loss_and_grad_at(field: Field, step: int) -> tuple:
  """(phase, loss_and_grad) that trains step `step` (0-based: the step
  that takes the state from `step` to step + 1): the first phase whose
  end_step is above it, else the run's own (phase len(train_phases)). A
  function of the step alone, so a resumed run trains each step as the
  uninterrupted run did."""
  for k, (end, fn) in enumerate(field.train_phases):
    if step < end:
      return k, fn
  return len(field.train_phases), field.loss_and_grad


class LossOptions(NamedTuple):
  """config.loss, checked (see read_loss_options)."""
  t_sampling: str
  t_options: dict             # band_weights, logit_mean, logit_std
  band_loss_weights: Optional[tuple]
  band_batch_sizes: Optional[tuple]
  band_batch_phases: tuple = ()   # ((end_step, sizes), ...)


_T_OPTIONS = ("band_weights", "logit_mean", "logit_std")
_LOSS_KEYS = ("t_sampling", *_T_OPTIONS, "band_loss_weights",
              "band_weighting", "band_batch_sizes", "band_batch_phases")


def read_band_io(config, transform, scale_adaptive: bool) -> BandIO:
  """config.path.hide_input / project_output, checked."""
  io = BandIO(bool(config.path.hide_input), bool(config.path.project_output))
  if (io.hide_input or io.project_output) and scale_adaptive:
    # Not an error: configs/digits.py sets both for K-Flow, and a user
    # turning scale_adaptive on from the command line should not have to
    # turn them off too.
    logging.info(
        "config.path.hide_input / project_output are not used by a "
        "scale-adaptive run: band s's network sees only its coarse grid, "
        "which holds no unstarted band.")
    return BandIO()
  if io.hide_input:
    coarse.check_orthonormal(
        transform, why="hiding the unstarted bands "
        "(config.path.hide_input=True) would lose information about the "
        "target", fix="Set config.path.hide_input=False, or use an "
        "orthonormal transform (fourier, dct, pca, an orthogonal wavelet "
        "such as haar or db*).")
  return io


def read_loss_options(config, path: paths.Path,
                      scale_adaptive: bool) -> LossOptions:
  """config.loss read once: t sampling with its options, the band loss
  weights (given, or by a band_weighting rule) and the per-band
  sub-batches of scale-adaptive runs."""
  lc = config.loss
  unknown = sorted(set(lc.keys()) - set(_LOSS_KEYS))
  if unknown:
    raise ValueError(
        f"config.loss.{unknown[0]} is not a loss option; valid: "
        f"{list(_LOSS_KEYS)}. Remove it, or add it to run/field.py.")
  sizes = lc.band_batch_sizes
  if sizes is not None and not scale_adaptive:
    raise ValueError(
        "config.loss.band_batch_sizes sets the per-band sub-batches of a "
        "scale-adaptive run; set config.model.scale_adaptive=True or remove "
        "it.")
  phases = _read_phases(lc.get("band_batch_phases", ()), path.num_bands,
                        scale_adaptive)
  t_options = {k: lc[k] for k in _T_OPTIONS}
  for k, (end, split) in enumerate(phases):
    try:  # the batch_sizes check, now, and naming the phase
      adaptive_loss.batch_sizes(adaptive_loss.band_shares(
          path, lc.t_sampling, **t_options), int(config.batch_size), split)
    except ValueError as e:
      raise ValueError(
          f"config.loss.band_batch_phases, phase {k} (the steps before "
          f"{end}): " + str(e).replace("config.loss.band_batch_sizes=",
                                       "sizes ")) from None
  weighting = lc.band_weighting
  if weighting not in losses.BAND_WEIGHTINGS:
    raise ValueError(f"config.loss.band_weighting={weighting!r}; valid: "
                     f"{list(losses.BAND_WEIGHTINGS)}.")
  weights = lc.band_loss_weights
  if weighting != "none":
    if weights is not None:
      raise ValueError(
          "config.loss.band_weighting and config.loss.band_loss_weights both "
          "set the per-band loss weights; set only one of them.")
    weights = losses.target_scale_weights(path)
  return LossOptions(
      t_sampling=lc.t_sampling, t_options=t_options,
      band_loss_weights=weights,
      band_batch_sizes=None if sizes is None else tuple(sizes),
      band_batch_phases=phases)


def _read_phases(phases, num_bands: int, scale_adaptive: bool) -> tuple:
  """config.loss.band_batch_phases as ((end_step, sizes), ...), checked
  for form (read_loss_options checks the sizes against the batch)."""
  phases = tuple(phases or ())
  if not phases:
    return ()
  if not scale_adaptive:
    raise ValueError(
        "config.loss.band_batch_phases is a curriculum of the per-band "
        "sub-batches of a scale-adaptive run; set "
        "config.model.scale_adaptive=True or remove it.")
  out, last = [], 0
  for entry in phases:
    ok = (isinstance(entry, (tuple, list)) and len(entry) == num_bands + 1
          and all(isinstance(v, int) and not isinstance(v, bool)
                  for v in entry))
    if not ok or entry[0] <= last:
      raise ValueError(
          f"config.loss.band_batch_phases={phases}: each phase must be "
          f"(end_step, B_0, ..., B_{num_bands - 1}), {num_bands + 1} ints, "
          "with end steps increasing from above 0, e.g. "
          "--config.loss.band_batch_phases=\"((300, 40, 16, 8),)\" for "
          "3 bands and a batch of 64.")
    last = entry[0]
    out.append((int(entry[0]), tuple(int(v) for v in entry[1:])))
  return tuple(out)


def read_coarse_units(config, scale_adaptive: bool) -> str:
  """config.model.coarse_units (flow/adaptive.UNITS), refused on a
  full-resolution run, where it would change nothing (an arm that cannot
  differ from its control)."""
  units = str(config.model.get("coarse_units", "coefficients"))
  if units != "coefficients" and not scale_adaptive:
    raise ValueError(
        f"config.model.coarse_units={units!r} sets the units of the coarse "
        "grids of a scale-adaptive run, and this run has none; set "
        "config.model.scale_adaptive=True or leave coarse_units at "
        "'coefficients'.")
  return units


def build(config, path: paths.Path, model, mesh, num_classes: int, *,
          scale_adaptive: bool, slots=None) -> Field:
  """The run's Field: the one place where a run's being scale-adaptive
  changes what is computed. Raises a ValueError naming the fix for a run
  that cannot be built (band I/O on a transform that is not orthonormal,
  a scale-adaptive run whose transform, cut-offs, overlap or backbone do
  not allow coarse grids, config.loss errors)."""
  opts = read_loss_options(config, path, scale_adaptive)
  io = read_band_io(config, path.transform, scale_adaptive)
  units = read_coarse_units(config, scale_adaptive)
  if scale_adaptive:
    return _scale_adaptive(path, model, mesh, int(num_classes),
                           float(config.label_dropout), opts, io, units)
  return _full_resolution(path, model, mesh, int(num_classes),
                          float(config.label_dropout), opts, io, slots)


def _projects(io: BandIO) -> Callable:
  return lambda spec: bool(spec.project or io.project_output)


def _full_resolution(path, model, mesh, num_classes, label_dropout, opts,
                     io, slots=None) -> Field:
  """The backbone at full resolution, seen through paths.band_network (and
  with condition slots, through their visibility: slots.network)."""

  def backbone(params, train):
    def apply(x, t, y):
      return model.apply({"params": params}, x, t, y, train=train)
    return apply if slots is None else slots_lib.network(slots, path, apply)

  def network(params, train=False):
    return paths.band_network(path, backbone(params, train),
                              hide_input=io.hide_input,
                              project_output=io.project_output)

  def local_loss(params, batch, keys):
    # On one device's examples; the model runs once on them all (which a
    # band-routed MoE needs).
    x1 = batch["image"]
    x0, t, y = losses.draw_examples(
        keys, x1.shape[1:], lambda r: paths.sample_t(
            r, 1, path, opts.t_sampling, **opts.t_options)[0],
        batch.get("label"), label_dropout=0.0 if slots else label_dropout,
        num_classes=num_classes)
    if slots is not None:
      # Slot labels of the (band-mixed) global batch, then the disjoint
      # dropout events (slots.drop_events replaces the one-label drop).
      y = slots_lib.drop_events(slots, keys, batch["slot_labels"])
    return losses.kflow_loss(network(params, train=True), path, x1, keys[0],
                             y=y, x0=x0, t=t, mask=batch.get("mask"),
                             band_loss_weights=opts.band_loss_weights)

  def velocity(params, y, spec):
    # Hidden input as trained; the output projection is the sampler's.
    return sampler_lib.guided_velocity(
        paths.band_network(path, backbone(params, False),
                           hide_input=io.hide_input), path,
        num_classes, spec, y, slots)

  projects = _projects(io)

  def sampler(spec, unroll=False):
    return sampler_lib.make_sampler(
        lambda params, y: velocity(params, y, spec), path, spec,
        project=projects(spec), unroll=unroll)

  def with_slots(fn, mix: bool):
    """fn on the global batch with its slot labels. Training makes the
    band-mixed hybrids here, before the batch is split over devices, so
    that each pair (i, i + 1) does not depend on the device count; the
    evaluation loss is that of the data as it is."""
    if slots is None:
      return fn

    def wrapped(params, batch, keys):
      x1, y = batch["image"], slots_lib.batch_labels(slots, batch)
      if mix:
        x1, y = slots_lib.band_mix(slots, path, x1, y, keys)
      return fn(params, dict(batch, image=x1, slot_labels=y), keys)
    return wrapped

  return Field(
      band_io=io, plan=None, tag="", record={}, band_grids=(),
      loss_and_grad=with_slots(
          sharding.sharded_loss_and_grad(local_loss, mesh), mix=True),
      loss=with_slots(sharding.sharded_loss_and_grad(
          local_loss, mesh, with_grad=False), mix=False),
      network=network, velocity=velocity, sampler=sampler,
      projects=projects)


def _scale_adaptive(path, model, mesh, num_classes, label_dropout, opts,
                    io, units) -> Field:
  """Band s's network on bands 0..s at its coarse grid (flow/adaptive*),
  in `units` (adaptive.UNITS)."""
  plan = adaptive.plan(path, model, units)

  def loss(with_grad, sizes=opts.band_batch_sizes):
    setup = adaptive_loss.make_loss_setup(
        path, opts.t_sampling, opts.t_options,
        band_loss_weights=opts.band_loss_weights, band_batch_sizes=sizes)
    return adaptive_loss.sharded_loss_and_grad(
        model, plan, setup, mesh, num_classes=num_classes,
        label_dropout=label_dropout, with_grad=with_grad)

  def on_grid(params, frame, train):
    return adaptive.in_units(
        lambda z, t, y: model.apply({"params": params}, z, t, y,
                                    train=train, frame=frame),
        frame, plan.units)

  def network(params, train=False):
    def apply(z, t, y, frame):
      return on_grid(params, frame, train)(z, t, y)
    return lambda x, t, y=None: adaptive.velocity(apply, plan, x, t, y)

  def band_velocity(params, y, spec, frame):
    """The sampling field on a band's grid (the adaptive sampler's)."""
    return sampler_lib.guided_velocity(on_grid(params, frame, False), path,
                                       num_classes, spec, y)

  def velocity(params, y, spec):
    def apply(z, t, yy, frame):
      del yy  # the labels are bound in band_velocity
      return band_velocity(params, y, spec, frame)(z, t)
    return lambda x, t: adaptive.velocity(apply, plan, x, t)

  def sampler(spec, unroll=False):
    return adaptive_sampler.make_sampler(
        lambda params, y, frame: band_velocity(params, y, spec, frame),
        plan, spec, unroll=unroll)

  return Field(
      band_io=io, plan=plan, tag="_adaptive",
      record={"scale_adaptive": True, **(
          {} if units == "coefficients" else {"coarse_units": units})},
      band_grids=tuple(f"{g.shape[0]}x{g.shape[1]}" for g in plan.grids),
      loss_and_grad=loss(True), loss=loss(False), network=network,
      velocity=velocity, sampler=sampler, projects=_projects(io),
      train_phases=tuple((end, loss(True, sizes))
                         for end, sizes in opts.band_batch_phases))
