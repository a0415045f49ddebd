"""--mode=eval: the K-Flow loss of a checkpoint on the eval split.

The inference params (EMA by default, see experiment.inference_params) are
scored with a fixed rng, so numbers are comparable between checkpoints;
per-band losses come from per-band sums and counts over the whole split.
"""
import jax
import numpy as np

from kflow_jax import experiment
from kflow_jax import input_pipeline
from kflow_jax import kamp
from kflow_jax import metrics_io
from kflow_jax import sharding


def eval_loss(run, params, step: int) -> dict:
  """{"eval_loss", "eval_examples", "eval_band_loss"} written to
  metrics.jsonl at `step`."""
  config = run.config
  # The training loss on a local batch (the model runs once on it, which
  # a band-routed MoE needs), with padding masked out.
  loss_fn = sharding.sharded_loss_and_grad(experiment.make_loss(run),
                                           run.mesh, with_grad=False)
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
        run.mesh, {k: local[k] for k in ("image", "label", "mask")
                   if k in local})
    aux = jax.device_get(eval_step(params, batch, i))
    totals = aux if totals is None else jax.tree.map(np.add, totals, aux)
  result = {"eval_loss": float(totals["loss_sum"] / totals["mask_count"]),
            "eval_examples": float(totals["mask_count"])}
  if "band_loss_sum" in totals:
    result["eval_band_loss"] = kamp.band_mean(totals["band_loss_sum"],
                                              totals["band_count"])
  writer = metrics_io.MetricWriter(run.workdir)
  writer.write(step, result)
  writer.close()
  return result
