"""Training: the sharded train step (pure) and the loop around it.

    python -m kflow_jax.main --config=configs/digits.py --workdir=DIR

The loop: prefetch the next global batch on a background thread while the
step runs, log every `log_every_steps` (loss, rates, and TFLOP/s per device
and MFU from XLA's FLOP count of the compiled step; see flops.py), sample
every `sample_every_steps`, checkpoint every `checkpoint_every_steps`, on
SIGTERM and at the end.
Relaunching the same command resumes from the newest readable checkpoint,
bit-identically on the CPU (rng = fold_in(rng, step); the data iterator
position is part of the checkpoint).
"""
import queue
import threading
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from kflow_jax.infra import checkpointing
from kflow_jax.run import experiment
from kflow_jax.run import field as field_lib
from kflow_jax.infra import flops
from kflow_jax.generate import sampler as sampler_lib
from kflow_jax.data import input_pipeline
from kflow_jax import kamp
from kflow_jax import models
from kflow_jax.infra import metrics_io
from kflow_jax.modes import periodic_eval
from kflow_jax.infra import sharding
from kflow_jax.run import train_state


class NonFiniteLossError(FloatingPointError):
  """The loss or gradient became NaN/inf; nothing after the last good
  checkpoint was saved."""


def make_train_step(local_loss, tx, schedule, mesh, ema_decays,
                    state_shardings, grad_fn=None):
  """Jitted (state, batch) -> (state, metrics); the state is donated.

  local_loss(params, batch, keys) -> (loss, aux) as in sharding.py; or
  grad_fn(params, batch, keys) -> (loss, aux, grads) over the global batch
  (sharding.sharded_loss_and_grad's contract, e.g. a run's
  field.loss_and_grad), and local_loss None.
  """
  if grad_fn is None:
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
    for key in ("band_loss_sum", "band_loss_sq_sum", "band_count"):
      if key in aux:
        metrics[key] = aux[key]
    return new_state, metrics

  return jax.jit(step, in_shardings=(state_shardings, bsh),
                 out_shardings=(state_shardings, sharding.replicated(mesh)),
                 donate_argnums=0)


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
        batch = {k: local[k] for k in ("image", "label", "caption")
                 if k in local}
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


def summarize(window: list) -> dict:
  """Mean of scalar metrics over the log window; band losses from sums."""
  host = jax.device_get(window)
  out = {k: float(np.mean([m[k] for m in host]))
         for k in ("loss", "grad_norm", "learning_rate")}
  if "band_loss_sum" in host[0]:
    s = np.sum([m["band_loss_sum"] for m in host], axis=0)
    c = np.sum([m["band_count"] for m in host], axis=0)
    out["band_loss"] = kamp.band_mean(s, c)
    if "band_loss_sq_sum" in host[0]:
      # Root mean square of the per-example errors of each band: their
      # second moment, what tools/band_allocation.py reads.
      sq = kamp.band_mean(np.sum([m["band_loss_sq_sum"] for m in host],
                                 axis=0), c)
      out["band_loss_rms"] = np.sqrt(sq)
  return out


def check_finite(metrics, step, ckpt):
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


def save_if_due(ckpt, stop, step: int, every: int, state, data_state,
                metrics) -> tuple:
  """Saves a checkpoint every `every` steps and when SIGTERM asked to
  stop. Returns (saved, stopping): the loop breaks on stopping, read once
  here so a signal between two reads cannot stop it unsaved."""
  stopping = stop.should_stop(step, ckpt)
  if not ((every > 0 and step % every == 0) or stopping):
    return False, False
  check_finite(metrics, step, ckpt)
  ckpt.save(step, state, data_state)
  if stopping:
    logging.warning("Stopped by SIGTERM at step %d; checkpoint saved. "
                    "Relaunch the same command to resume.", step)
  return True, stopping


def compile_flops(step_fn, state, batch, mesh):
  """FLOPs of one step over all devices of `mesh` (see flops.py), or None.

  Compiles `step_fn` for (state, batch) ahead of its first call; the call
  then finds that executable in jax's compilation cache (same lowered
  module), so the step is compiled once, not twice. Lowering reads only
  shapes and shardings: nothing is donated or run here.
  """
  per_device = flops.step_flops(step_fn.lower(state, batch).compile())
  if per_device is None:
    logging.warning("XLA gave no FLOP count for the train step on %s; "
                    "metrics go without flops_per_step, "
                    "tflops_per_s_per_device and mfu.",
                    mesh.devices.flat[0].device_kind)
    return None
  return per_device * mesh.size


def make_run_step(run, grad_fn=None):
  """The run's jitted train step (see make_train_step) on the loss and
  gradient of the run's field (full-resolution or scale-adaptive), or on
  `grad_fn` (one of its train_phases)."""
  return make_train_step(None, run.tx, run.schedule, run.mesh,
                         run.ema_decays, run.state_shardings,
                         grad_fn=grad_fn or run.field.loss_and_grad)


def make_run_steps(run):
  """step -> (phase, jitted train step of that step): the run's step, or
  with a curriculum (config.loss.band_batch_phases) the step of the phase
  the step falls in (field.loss_and_grad_at), each made once."""
  made = {}

  def at(step: int):
    phase, grad_fn = field_lib.loss_and_grad_at(run.field, step)
    if phase not in made:
      made[phase] = make_run_step(run, grad_fn)
    return phase, made[phase]
  return at


def train_and_evaluate(config, workdir: str, *,
                       allow_config_change: bool = False, devices=None,
                       on_step=None):
  """Trains config.total_steps steps in `workdir`, resuming if possible.

  `devices` (default: all) restricts the mesh, e.g. for tests comparing
  device counts in one process. The input pipeline yields the same global
  batches for any process count, so a run's result does not depend on how
  many hosts or devices it is spread over.
  on_step(step, timings): called after every step with the host seconds
  spent waiting for the batch ({"input_wait_s": ...}); benchmarks use it.
  Returns the final TrainState.
  """
  run = experiment.setup(config, workdir, "train", devices=devices,
                         allow_config_change=allow_config_change)
  workdir, mesh, decays = run.workdir, run.mesh, run.ema_decays
  line, warning = sharding.batch_report(
      int(config.batch_size), mesh.size, int(config.recipe_devices))
  logging.info("%s", line)
  if warning:
    logging.warning("%s", warning)
  ckpt = checkpointing.Checkpointer(workdir, int(config.keep_checkpoints))
  data_it = input_pipeline.create(
      config.input, global_batch_size=int(config.batch_size),
      seed=int(config.seed), process_index=jax.process_index(),
      process_count=jax.process_count(), split="train")
  restored = ckpt.restore_latest(run.abstract_state)
  if restored is None:
    start, state = 0, run.init_state()
    logging.info("Starting a new run in %s.", workdir)
  else:
    start, state, data_state = restored
    data_it.set_state(data_state)
    logging.info("Resuming from the checkpoint at step %d in %s.", start,
                 workdir)
  count = models.count_params(state.params, run.model)
  logging.info("Parameters: %d in all, %d used per example.", count.total,
               count.active)
  total = int(config.total_steps)
  steps_at = make_run_steps(run)
  sampler = sampler_lib.jit_sampler(run.field.sampler(run.spec))
  writer = metrics_io.MetricWriter(workdir, resume_step=start or None)
  evals = periodic_eval.PeriodicEval(run, writer)  # config.evals.every_steps
  progress = metrics_io.Progress(start, total)
  block = sharding.must_block(mesh)
  stop = checkpointing.StopSignal().install()
  prefetch = Prefetcher(data_it, mesh, total - start)
  log_every = max(1, int(config.log_every_steps))
  ckpt_every = int(config.checkpoint_every_steps)
  sample_every = int(config.sample_every_steps)
  n_dev = mesh.size
  device = mesh.devices.flat[0]
  # XLA's FLOPs of each phase's step, counted at its first batch before
  # its first call; the window's mean is logged (phases differ in cost).
  phase_flops, window_flops = {}, []
  step, window, prev, data_state, saved = start, [], None, None, start
  try:
    while step < total:
      waited = time.perf_counter()
      batch, data_state = next(prefetch)
      waited = time.perf_counter() - waited
      phase, step_fn = steps_at(step)
      if phase not in phase_flops:
        phase_flops[phase] = compile_flops(step_fn, state, batch, mesh)
        if phase:
          logging.info("Step %d: curriculum phase %d "
                       "(config.loss.band_batch_phases).", step, phase)
      window_flops.append(phase_flops[phase])
      state, metrics = step_fn(state, batch)
      step += 1
      if block:
        jax.block_until_ready(metrics["loss"])
      # Check the previous step, which has finished by now on any backend,
      # so the host never waits on the step just queued.
      if prev is not None:
        check_finite(prev, step - 1, ckpt)
      prev = metrics
      window.append(metrics)
      if on_step is not None:
        on_step(step, {"input_wait_s": waited})
      if step % log_every == 0 or step == total:
        check_finite(metrics, step, ckpt)
        summary = summarize(window)
        timing = progress.update(step)
        summary.update(timing)
        summary["images_per_s_per_device"] = (
            int(config.batch_size) * timing["steps_per_s"] / n_dev)
        summary["params"], summary["params_active"] = count
        if None not in window_flops:
          step_flops = float(np.mean(window_flops))
          summary["flops_per_step"] = step_flops
          summary.update(flops.utilization(step_flops, timing["steps_per_s"],
                                           n_dev, device))
        window_flops = []
        writer.write(step, summary)
        logging.info("%s", progress.line(step, summary["loss"], timing,
                                         summary))
        window = []
      evals.after_step(step, state)
      if sample_every > 0 and step % sample_every == 0 and step != total:
        sampler_lib.write_grid(run, sampler, experiment.inference_params(
            run, state), step, writer)
      did_save, stopping = save_if_due(ckpt, stop, step, ckpt_every, state,
                                       data_state, metrics)
      saved = step if did_save else saved
      if stopping:
        break
    if step == total and saved != step:
      check_finite(prev, step, ckpt)
      ckpt.save(step, state, data_state)
    ckpt.wait()
    if step == total and run.spec.at_end:
      sampler_lib.write_grid(run, sampler, experiment.inference_params(
          run, state), step, writer, final=True)
  finally:
    prefetch.close()
    stop.uninstall()
    writer.close()
    ckpt.close()
  return state
