r"""--mode=mix: the paper's steerability grid from band-wise mixed noise.

  python -m kflow_jax.main ... --mode=mix --config.restore.split_band=1

Sample (i, j) of an R x K grid takes the bands below split_band from row
noise i and the others from column noise j (orthonormal transforms only,
steering.check_mixable); the JSON holds the per-band correlations within
and across rows and columns. The bands may be other cut-offs than the
path's on the same transform (config.restore.mix_cutoffs), so a one-band
flow-matching run is steered and scored with a K-Flow run's bands.
"""
import os

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax.flow import degradation
from kflow_jax.flow import paths as paths_lib
from kflow_jax.flow import steering
from kflow_jax.generate import files as samples_lib
from kflow_jax.generate import sampler as sampler_lib
from kflow_jax.infra import metrics_io
from kflow_jax.modes import restore_spec


def analysis_path(path: paths_lib.Path, cutoffs) -> paths_lib.Path:
  """The bands --mode=mix splits the noise by and measures: the path's own,
  or `cutoffs` on the same transform (config.restore.mix_cutoffs). The
  latter lets a one-band run (plain flow matching through an orthonormal
  transform) be steered and scored with the same bands as a K-Flow run."""
  if not cutoffs:
    return path
  return paths_lib.make_path(path.transform, cutoffs=tuple(cutoffs))


def mix_noise_grid(path: paths_lib.Path, rng, rows: int, cols: int,
                   split: int) -> jax.Array:
  """x0 [rows*cols, H, W, C]: sample (i, j) takes bands < split from row
  noise i and bands >= split from column noise j (orthonormal transforms
  only, steering.check_mixable)."""
  if not 1 <= split <= path.num_bands - 1:
    raise ValueError(
        f"config.restore.split_band={split}: the rows take bands "
        f"0..split-1 and the columns the rest, so split must lie in "
        f"1..{path.num_bands - 1} (the path has {path.num_bands} bands).")
  shape = path.transform.shape
  r_row, r_col = jax.random.split(rng)
  row = jax.random.normal(r_row, (rows, 1) + shape, jnp.float32)
  col = jax.random.normal(r_col, (1, cols) + shape, jnp.float32)
  full = (rows * cols,) + shape
  row = jnp.broadcast_to(row, (rows, cols) + shape).reshape(full)
  col = jnp.broadcast_to(col, (rows, cols) + shape).reshape(full)
  return steering.mix_noise(path, [row, col],
                            [0 if s < split else 1
                             for s in range(path.num_bands)])


def band_correlations(path: paths_lib.Path, grid) -> dict:
  """Per-band Pearson correlations in a mix grid [R, K, H, W, C]: mean over
  pairs in the same row, in different rows, in the same column and in
  different columns of the band parts P_s x."""
  g = jnp.asarray(grid)
  r, k = g.shape[:2]
  out = {}
  for s in range(path.num_bands):
    part = np.asarray(degradation.band_part(
        path, g.reshape((r * k,) + g.shape[2:]), [s])).reshape(
            r * k, -1).astype(np.float64)
    part -= part.mean(axis=1, keepdims=True)
    part /= np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
    corr = part @ part.T
    row, col = np.divmod(np.arange(r * k), k)
    off = ~np.eye(r * k, dtype=bool)
    same_row = off & (row[:, None] == row[None, :])
    same_col = off & (col[:, None] == col[None, :])
    mean = lambda m: float(corr[m].mean()) if m.any() else float("nan")
    out[f"band_{s}"] = {
        "same_row": mean(same_row), "other_row": mean(off & ~same_row),
        "same_col": mean(same_col), "other_col": mean(off & ~same_col)}
  return out


def mix_mode(run, params, step: int,
             rspec: restore_spec.RestoreSpec) -> dict:
  """--mode=mix: the steerability grid; rows share the coarse bands' noise,
  columns the fine bands'. Writes PNG + JSON (band correlations)."""
  path, spec = run.path, run.spec
  rows, cols, split = rspec.rows, rspec.cols, rspec.split_band
  bands = analysis_path(path, rspec.mix_cutoffs)
  x0 = mix_noise_grid(bands, jax.random.key(rspec.seed), rows, cols, split)
  y = rspec.labels(None, rows * cols)
  sampler = sampler_lib.jit_sampler(run.field.sampler(spec))
  out = []
  for i, j in rspec.batches(rows * cols):
    out.append(sampler_lib.decode(run.decoder, sampler(
        params, x0[i:j], jnp.zeros((j - i,), jnp.int32) if y is None
        else y[i:j])[0]))
  grid = np.concatenate(out).reshape((rows, cols) + out[0].shape[1:])
  corr = band_correlations(bands, grid) if run.decoder is None else {}
  result = {"step": int(step), "rows": rows, "cols": cols,
            "split_band": split, "row_bands": list(range(split)),
            "col_bands": list(range(split, bands.num_bands)),
            "cutoffs": [float(c) for c in bands.cutoffs],
            "path_cutoffs": [float(c) for c in path.cutoffs],
            "correlations": corr}
  if jax.process_index() == 0:
    base = os.path.join(run.workdir, "mix_mode",
                        f"step_{step:08d}_split{split}")
    samples_lib.save_labelled_grid(
        base + ".png", grid,
        [f"fine {j}" for j in range(cols)],
        [f"coarse {i}" for i in range(rows)])
    metrics_io.write_json(base + ".json", result)
    logging.info("Mix grid %dx%d (bands <%d per row): %s.{png,json}; "
                 "correlations %s", rows, cols, split, base, corr)
  return result
