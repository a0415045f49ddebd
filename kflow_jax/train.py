"""Training: the sharded train step (pure) and the loop around it.

    python -m kflow_jax.main --config=configs/digits_fourier.py --workdir=DIR

The loop: prefetch the next global batch on a background thread while the
step runs, log every `log_every_steps`, sample every `sample_every_steps`,
checkpoint every `checkpoint_every_steps`, on SIGTERM and at the end.
Relaunching the same command resumes from the newest readable checkpoint,
bit-identically on the CPU (rng = fold_in(rng, step); the data iterator
position is part of the checkpoint).
"""
import os
import queue
import threading

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from kflow_jax import checkpointing
from kflow_jax import experiment
from kflow_jax import input_pipeline
from kflow_jax import metrics_io
from kflow_jax import models
from kflow_jax import optim
from kflow_jax import sharding
from kflow_jax import train_state
from kflow_jax.evaluators import samples as samples_lib


class NonFiniteLossError(FloatingPointError):
  """The loss or gradient became NaN/inf; nothing after the last good
  checkpoint was saved."""


def make_train_step(local_loss, tx, schedule, mesh, ema_decays,
                    state_shardings):
  """Jitted (state, batch) -> (state, metrics); the state is donated.

  local_loss(params, batch, keys) -> (loss, aux) as in sharding.py.
  """
  grad_fn = sharding.sharded_loss_and_grad(local_loss, mesh)
  bsh = sharding.batch_sharding(mesh)

  def step(state, batch):
    bsz = jax.tree.leaves(batch)[0].shape[0]
    # One key per example of the global batch: the noise an example gets
    # does not depend on the device count (see sharding.py).
    keys = jax.random.split(jax.random.fold_in(state.rng, state.step), bsz)
    keys = jax.lax.with_sharding_constraint(keys, bsh)
    loss, aux, grads = grad_fn(state.params, batch, keys)
    gnorm = optax.global_norm(grads)
    finite = jnp.logical_and(jnp.isfinite(loss), jnp.isfinite(gnorm))
    new_state = train_state.apply_update(state, grads, tx, ema_decays, finite)
    metrics = {"loss": loss, "grad_norm": gnorm,
               "learning_rate": schedule(state.step), "finite": finite}
    for key in ("band_loss_sum", "band_count"):
      if key in aux:
        metrics[key] = aux[key]
    return new_state, metrics

  return jax.jit(step, in_shardings=(state_shardings, bsh),
                 out_shardings=(state_shardings, sharding.replicated(mesh)),
                 donate_argnums=0)


def make_state_init(exp, tx, ema_decays, mesh, seed: int):
  """Returns (init_fn() -> sharded state, shardings, abstract state)."""
  rng = jax.random.PRNGKey(int(seed))
  r_init, r_train = jax.random.split(rng)

  def boxed():
    variables = experiment.init_variables(exp, r_init)
    return train_state.create(variables["params"], tx, r_train, ema_decays)

  abstract_boxed = jax.eval_shape(boxed)
  shardings = sharding.state_shardings(mesh, abstract_boxed,
                                       models.param_shardings)
  abstract = jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
      nn.meta.unbox(abstract_boxed), shardings)
  init = jax.jit(lambda: nn.meta.unbox(boxed()), out_shardings=shardings)
  return init, shardings, abstract


class Prefetcher:
  """Reads, shards and transfers the next batches while the step runs.

  Each item is (global batch, iterator state after that batch): the state
  saved with a checkpoint is the one of the last batch consumed, not of the
  live iterator, which is ahead by the queue depth.
  """

  def __init__(self, it, mesh, num_batches: int, depth: int = 2):
    self._it, self._mesh, self._n = it, mesh, int(num_batches)
    self._q = queue.Queue(maxsize=max(1, depth))
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def _put(self, item):
    while not self._stop.is_set():
      try:
        self._q.put(item, timeout=0.1)
        return
      except queue.Full:
        continue

  def _run(self):
    try:
      for _ in range(self._n):
        if self._stop.is_set():
          return
        local = next(self._it)
        state = self._it.get_state()
        batch = {k: local[k] for k in ("image", "label") if k in local}
        self._put((sharding.global_batch(self._mesh, batch), state))
    except BaseException as e:  # pylint: disable=broad-except
      self._put(e)  # re-raised in the training thread

  def __next__(self):
    item = self._q.get()
    if isinstance(item, BaseException):
      raise item
    return item

  def close(self):
    self._stop.set()
    self._thread.join(timeout=10)


def _summarize(window: list) -> dict:
  """Mean of scalar metrics over the log window; band losses from sums."""
  host = jax.device_get(window)
  out = {k: float(np.mean([m[k] for m in host]))
         for k in ("loss", "grad_norm", "learning_rate")}
  if "band_loss_sum" in host[0]:
    s = np.sum([m["band_loss_sum"] for m in host], axis=0)
    c = np.sum([m["band_count"] for m in host], axis=0)
    out["band_loss"] = np.where(c > 0, s / np.maximum(c, 1), np.nan)
  return out


def _check_finite(metrics, step, ckpt):
  if bool(jax.device_get(metrics["finite"])):
    return
  m = jax.device_get(metrics)
  good = ckpt.all_steps()
  raise NonFiniteLossError(
      f"Non-finite loss at step {step} (loss={float(m['loss'])}, "
      f"grad_norm={float(m['grad_norm'])}). Training stopped; the last good "
      f"checkpoint is step {good[-1] if good else 'none'} in "
      f"{ckpt.directory} and nothing after it was saved. Lower "
      "config.optim.learning_rate, raise config.optim.warmup_steps, or "
      "set config.optim.grad_clip_norm, then relaunch.")


def _decode(decoder, x):
  """Latents -> images with the VAE (latent configs); pixels unchanged."""
  if decoder is None:
    return np.asarray(jax.device_get(x))
  return np.asarray(jax.device_get(decoder(x)))


def _grid_layout(exp, labels) -> dict:
  """save_grid keywords: one class per row for class-conditional runs."""
  if not exp.num_classes:
    return {}
  return {"labels": np.asarray(labels), "num_classes": exp.num_classes}


def write_samples(config, exp, sampler, params, workdir, step, writer,
                  final=False, decoder=None):
  """Sample grid (and, at the end, the band strip) as PNG."""
  scfg = config.sample
  n = int(scfg.num_samples)
  rng = jax.random.PRNGKey(int(scfg.seed))
  x0 = experiment.initial_noise(exp, scfg, rng, n)
  y = experiment.sample_labels(exp, 0, n)
  x = _decode(decoder, sampler(params, x0, y))
  if jax.process_index() != 0:
    return
  name = "samples.png" if final else os.path.join(
      "samples", f"step_{step:08d}.png")
  layout = _grid_layout(exp, y)
  samples_lib.save_grid(os.path.join(workdir, name), x, **layout)
  writer.write_image(step, "samples", (
      samples_lib.class_grid(x, **layout) if layout else
      samples_lib.grid(x)))
  if final:
    k = min(4, n)
    states = experiment.band_strip_states(
        exp, sampler, params, x0[:k], y[:k], int(scfg.num_steps),
        extra_times=experiment.sampler_extra_times(exp, scfg))
    states = np.stack([_decode(decoder, s) for s in states])  # [S+1,k,H,W,C]
    samples_lib.save_band_strip(
        os.path.join(workdir, "band_strip.png"),
        [states[:, i] for i in range(k)], exp.path.tau)
  logging.info("Wrote samples for step %d to %s", step, workdir)


def train_and_evaluate(config, workdir: str, *,
                       allow_config_change: bool = False, devices=None):
  """Trains config.total_steps steps in `workdir`, resuming if possible.

  `devices` (default: all) restricts the mesh, e.g. for tests comparing
  device counts in one process. The input pipeline yields the same global
  batches for any process count, so a run's result does not depend on how
  many hosts or devices it is spread over.
  Returns the final TrainState.
  """
  wd = checkpointing.check_workdir(workdir)
  checkpointing.check_config(wd, config, allow_config_change)
  workdir = os.fspath(wd)
  mesh = sharding.make_mesh(config.mesh.fsdp, devices)
  sharding.check_batch_size(int(config.batch_size), mesh, jax.process_count())
  exp = experiment.build(config, workdir)
  tx, schedule = optim.make_optimizer(config.optim, int(config.total_steps))
  decays = train_state.validate_ema_decays(config.ema_decays)
  init, state_sh, abstract = make_state_init(exp, tx, decays, mesh,
                                             config.seed)
  ckpt = checkpointing.Checkpointer(wd, int(config.keep_checkpoints))
  data_it = input_pipeline.create(
      config.input, global_batch_size=int(config.batch_size),
      seed=int(config.seed), process_index=jax.process_index(),
      process_count=jax.process_count(), split="train")
  restored = ckpt.restore_latest(abstract)
  if restored is None:
    start, state = 0, init()
    logging.info("Starting a new run in %s.", workdir)
  else:
    start, state, data_state = restored
    data_it.set_state(data_state)
    logging.info("Resuming from the checkpoint at step %d in %s.", start,
                 workdir)
  total = int(config.total_steps)
  step_fn = make_train_step(experiment.make_loss(exp, config),
                            tx, schedule, mesh, decays, state_sh)
  sampler = jax.jit(experiment.make_sampler(exp, config.sample),
                    static_argnames=("t_start", "t_end", "num_steps"))
  decoder = input_pipeline.latent_decoder(config.input)
  writer = metrics_io.MetricWriter(workdir, resume_step=start or None)
  progress = metrics_io.Progress(start, total)
  block = sharding.must_block(mesh)
  stop = checkpointing.StopSignal().install()
  prefetch = Prefetcher(data_it, mesh, total - start)
  log_every = max(1, int(config.log_every_steps))
  ckpt_every = int(config.checkpoint_every_steps)
  sample_every = int(config.sample_every_steps)
  n_dev = mesh.size
  step, window, prev, data_state, saved = start, [], None, None, start
  try:
    while step < total:
      batch, data_state = next(prefetch)
      state, metrics = step_fn(state, batch)
      step += 1
      if block:
        jax.block_until_ready(metrics["loss"])
      # Check the previous step, which has finished by now on any backend,
      # so the host never waits on the step just queued.
      if prev is not None:
        _check_finite(prev, step - 1, ckpt)
      prev = metrics
      window.append(metrics)
      if step % log_every == 0 or step == total:
        _check_finite(metrics, step, ckpt)
        summary = _summarize(window)
        timing = progress.update(step)
        summary.update(timing)
        summary["images_per_s_per_device"] = (
            int(config.batch_size) * timing["steps_per_s"] / n_dev)
        writer.write(step, summary)
        logging.info("%s", progress.line(step, summary["loss"], timing))
        window = []
      if sample_every > 0 and step % sample_every == 0 and step != total:
        write_samples(config, exp, sampler, ema_or_params(state, decays),
                      workdir, step, writer, decoder=decoder)
      stopping = stop.should_stop(step, ckpt)
      if (ckpt_every > 0 and step % ckpt_every == 0) or stopping:
        _check_finite(metrics, step, ckpt)
        ckpt.save(step, state, data_state)
        saved = step
      if stopping:
        logging.warning("Stopped by SIGTERM at step %d; checkpoint saved. "
                        "Relaunch the same command to resume.", step)
        break
    if step == total and saved != step:
      _check_finite(prev, step, ckpt)
      ckpt.save(step, state, data_state)
    ckpt.wait()
    if step == total and config.sample.at_end:
      write_samples(config, exp, sampler, ema_or_params(state, decays),
                    workdir, step, writer, final=True, decoder=decoder)
  finally:
    prefetch.close()
    stop.uninstall()
    writer.close()
    ckpt.close()
  return state


def ema_or_params(state, decays, decay=None):
  return train_state.ema_by_decay(state, decays, decay)


def restore_for_inference(config, workdir: str, *,
                          allow_config_change: bool = False):
  """(experiment, mesh, state, step) from the newest checkpoint."""
  wd = checkpointing.check_workdir(workdir)
  checkpointing.check_config(wd, config, allow_config_change, write=False)
  mesh = sharding.make_mesh(config.mesh.fsdp)
  exp = experiment.build(config, os.fspath(wd))
  tx, _ = optim.make_optimizer(config.optim, int(config.total_steps))
  decays = train_state.validate_ema_decays(config.ema_decays)
  _, _, abstract = make_state_init(exp, tx, decays, mesh, config.seed)
  ckpt = checkpointing.Checkpointer(wd, int(config.keep_checkpoints))
  try:
    restored = ckpt.restore_latest(abstract, with_data=False)
  finally:
    ckpt.close()
  if restored is None:
    raise checkpointing.WorkdirError(
        f"No checkpoint in {os.fspath(wd)}; train first with --mode=train.")
  step, state, _ = restored
  return exp, mesh, state, step


def sample_tag(scfg, step: int) -> str:
  """File name stem of --mode=sample outputs: step, solver, steps and any
  guidance / steering option, so that the runs of one experiment (e.g.
  with and without class drop) do not overwrite each other."""
  tag = f"step_{step:08d}_{scfg.solver}_{int(scfg.num_steps)}"
  join = lambda v: "-".join(str(int(b)) for b in v)
  if float(scfg.guidance) != 1.0:
    tag += f"_cfg{float(scfg.guidance):g}"
  if scfg.get("guidance_bands", ()):
    tag += f"_gbands{join(scfg.guidance_bands)}"
  if float(scfg.get("class_drop_t", -1.0)) >= 0:
    tag += f"_drop{float(scfg.class_drop_t):g}"
  if scfg.get("shared_bands", ()):
    tag += f"_shared{join(scfg.shared_bands)}"
  return tag


def sample(config, workdir: str, *, allow_config_change: bool = False):
  """--mode=sample: N samples from the newest checkpoint, as PNG and .npz."""
  exp, _, state, step = restore_for_inference(
      config, workdir, allow_config_change=allow_config_change)
  scfg = config.sample
  decays = train_state.validate_ema_decays(config.ema_decays)
  params = (ema_or_params(state, decays, scfg.ema_decay) if scfg.use_ema
            else state.params)
  sampler = jax.jit(experiment.make_sampler(exp, scfg),
                    static_argnames=("t_start", "t_end", "num_steps"))
  if exp.num_classes and not float(config.get("label_dropout", 0.0)) and (
      float(scfg.guidance) != 1.0 or float(scfg.class_drop_t) >= 0):
    logging.warning("Guidance / class drop use the null class, which this "
                    "run never trained (config.label_dropout=0).")
  n, bs = int(scfg.num_samples), int(scfg.batch_size)
  rng = jax.random.PRNGKey(int(scfg.seed))
  decoder = input_pipeline.latent_decoder(config.input)
  out, labels, latents = [], [], []
  for i in range(0, n, bs):
    m = min(bs, n - i)
    # Shared bands (steering) come from rng itself: shared by all batches.
    x0 = experiment.initial_noise(exp, scfg, rng, m, batch_index=i // bs)
    y = experiment.sample_labels(exp, i, m)
    x = sampler(params, x0, y)
    if decoder is not None:
      latents.append(np.asarray(jax.device_get(x)))
    out.append(_decode(decoder, x))
    labels.append(np.asarray(y))
  images, labels = np.concatenate(out), np.concatenate(labels)
  extra = {"latents": np.concatenate(latents)} if latents else {}
  if exp.num_classes:
    # Class i % K for sample i; unconditional runs have no labels to store.
    extra["labels"] = labels
  outdir = os.path.join(os.fspath(workdir), "sample_mode")
  if jax.process_index() == 0:
    tag = sample_tag(scfg, step)
    samples_lib.save_npz(os.path.join(outdir, tag + ".npz"), images, **extra)
    samples_lib.save_grid(os.path.join(outdir, tag + ".png"), images[:256],
                          **_grid_layout(exp, labels[:256]))
    logging.info("Wrote %d samples of step %d to %s/%s.{png,npz}", n, step,
                 outdir, tag)
  return images


def evaluate(config, workdir: str, *, allow_config_change: bool = False):
  """--mode=eval: the K-Flow loss on the eval split (EMA params), with a
  fixed rng so numbers are comparable between checkpoints."""
  exp, mesh, state, step = restore_for_inference(
      config, workdir, allow_config_change=allow_config_change)
  decays = train_state.validate_ema_decays(config.ema_decays)
  params = ema_or_params(state, decays)
  per_example = experiment.make_per_example_loss(exp, config)

  def masked(p, ex, key):
    loss, aux = per_example(p, ex, key)
    w = ex["mask"].astype(jnp.float32)
    out = {"loss_sum": loss * w, "mask_count": w}
    for k in ("band_loss_sum", "band_count"):
      if k in aux:
        out[k] = aux[k] * w
    return loss, out

  loss_fn = sharding.sharded_loss_and_grad(sharding.per_example(masked),
                                           mesh, with_grad=False)
  bs = int(config.batch_size)

  @jax.jit
  def eval_step(params, batch, i):
    keys = jax.random.split(
        jax.random.fold_in(jax.random.PRNGKey(int(config.seed) + 1), i), bs)
    _, aux, _ = loss_fn(params, batch, keys)
    return aux

  it = input_pipeline.create(
      config.input, global_batch_size=bs, seed=int(config.seed),
      process_index=jax.process_index(), process_count=jax.process_count(),
      split="eval")
  totals = None
  for i, local in enumerate(it):
    if int(config.eval_steps) > 0 and i >= int(config.eval_steps):
      break
    batch = sharding.global_batch(
        mesh, {k: local[k] for k in ("image", "label", "mask") if k in local})
    aux = jax.device_get(eval_step(params, batch, i))
    totals = aux if totals is None else jax.tree.map(np.add, totals, aux)
  result = {"eval_loss": float(totals["loss_sum"] / totals["mask_count"]),
            "eval_examples": float(totals["mask_count"])}
  if "band_loss_sum" in totals:
    c = totals["band_count"]
    result["eval_band_loss"] = np.where(
        c > 0, totals["band_loss_sum"] / np.maximum(c, 1), np.nan)
  writer = metrics_io.MetricWriter(os.fspath(workdir))
  writer.write(step, result)
  writer.close()
  logging.info("Eval at step %d: loss %.5f on %d examples", step,
               result["eval_loss"], int(result["eval_examples"]))
  return result
