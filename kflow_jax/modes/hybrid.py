r"""--mode=hybrid: a grid of coarse condition by fine condition.

  python -m kflow_jax.main --config=configs/digits.py:slots \
      --workdir=DIR --mode=hybrid [--config.restore.rows=10 --config.restore.cols=10]
  python -m kflow_jax.main --config=configs/patches.py:slots \
      --workdir=DIR --mode=hybrid --config.restore.row_classes=(0,1,2,3) \
      --config.restore.col_classes=(4,5,6)

For a run with condition slots (config.cond.slot_starts, flow/slots.py),
or a one-label run with a baseline that takes two labels
(config.sample.label_switch_t or factorized_cutoffs), cell (i, j) is
sampled with class i in slot 0 (the coarse bands) and class j in every
later slot (the finer bands), or the i-th of config.restore.row_classes and
the j-th of col_classes (patches: colour photo by texture photo), all cells
from one noise, so a row
differs only by its fine label and a column only by its coarse one. Under
causal visibility with band projection and no overlap the coarse bands of
a row are identical (tests/slots_test.py). config.sample's guidance
(guidance, guidance_bands, guidance_matrix, guidance_mode) applies.
"""
import os

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax import generate
from kflow_jax.generate import files as samples_lib
from kflow_jax.generate import sampler as sampler_lib
from kflow_jax.infra import metrics_io
from kflow_jax.modes import restore_spec


def grid_labels(rows: int, cols: int, num_slots: int, num_classes: int,
                row_classes=None, col_classes=None) -> np.ndarray:
  """int32 [rows * cols, K]: cell (i, j) has class row_classes[i] (default
  i % C) in slot 0 and col_classes[j] (default j % C) in the other slots;
  given class lists set rows and cols."""
  row_classes = np.asarray(row_classes if row_classes else
                           np.arange(rows) % num_classes)
  col_classes = np.asarray(col_classes if col_classes else
                           np.arange(cols) % num_classes)
  i, j = np.divmod(np.arange(len(row_classes) * len(col_classes)),
                   len(col_classes))
  return np.concatenate(
      [row_classes[i][:, None],
       np.repeat(col_classes[j][:, None], num_slots - 1, axis=1)],
      axis=1).astype(np.int32)


def hybrid_mode(run, params, step: int,
                rspec: restore_spec.RestoreSpec) -> np.ndarray:
  """Writes <workdir>/hybrid_mode/step_<step>.{png,json}: the rows x cols
  grid (rows: coarse class, columns: fine class)."""
  num_labels = run.slots.num_slots if run.slots else run.spec.num_labels
  if num_labels < 2:
    raise ValueError(
        "--mode=hybrid samples a coarse and a fine label per image: it needs "
        "a run trained with condition slots (config.cond.slot_starts, e.g. "
        "configs/digits.py:slots), or on a one-label run a baseline that "
        "uses two labels: --config.sample.label_switch_t=(T,) or "
        "--config.sample.factorized_cutoffs=(0.0,K,1.0).")
  labels = grid_labels(rspec.rows, rspec.cols, num_labels, run.num_classes,
                       rspec.row_classes, rspec.col_classes)
  rows = len(rspec.row_classes or range(rspec.rows))
  cols = len(rspec.col_classes or range(rspec.cols))
  y = jnp.asarray(labels)
  noise = jax.random.normal(jax.random.key(rspec.seed),
                            (1,) + tuple(run.info.shape), jnp.float32)
  sampler = sampler_lib.jit_sampler(run.field.sampler(run.spec))
  out = []
  for i, j in rspec.batches(rows * cols):
    x0 = jnp.broadcast_to(noise, (j - i,) + noise.shape[1:])
    out.append(sampler_lib.decode(run.decoder,
                                  sampler(params, x0, y[i:j])[0]))
  grid = np.concatenate(out).reshape((rows, cols) + out[0].shape[1:])
  result = {"step": int(step), "rows": rows, "cols": cols,
            "slot_starts": list(run.slots.starts) if run.slots else None,
            "visibility": run.slots.visibility if run.slots else None,
            "label_switch_t": list(run.spec.label_switch_t),
            "factorized_cutoffs": list(run.spec.factorized_cutoffs),
            "row_label": "slot 0 (coarse bands)",
            "col_label": "slots 1.. (finer bands)",
            "labels": np.asarray(y).tolist(), "seed": rspec.seed}
  if jax.process_index() == 0:
    # The sample tag names the guidance and the baseline's label split.
    base = os.path.join(run.workdir, "hybrid_mode",
                        generate.sample_tag(run.spec, step))
    samples_lib.save_labelled_grid(
        base + ".png", grid,
        [f"fine {int(c)}" for c in labels[:cols, 1]],
        [f"coarse {int(c)}" for c in labels[::cols, 0]])
    metrics_io.write_json(base + ".json", result)
    logging.info("Hybrid grid %dx%d (rows: coarse class, columns: fine "
                 "class): %s.{png,json}", rows, cols, base)
  return grid
