"""Figure layout of generate/files.py: folding many rows into a compact grid."""
import numpy as np
from PIL import Image
import pytest

from kflow_jax.generate import files


def test_fold_rows_keeps_every_image_in_blocks():
  x = np.linspace(-1, 1, 20 * 3 * 4).reshape(20, 3, 2, 2, 1)
  folded, labels = files.fold_rows(x, ["in", "out", "ref"], max_rows=8)
  assert folded.shape == (8, 3 * 3 + 2, 2, 2, 1)  # 3 blocks, 2 gaps
  assert labels[:4] == ["#0-7\nin", "out", "ref", ""]
  assert labels[8] == "#16-19\nin"
  # Row 10 is row 2 of block 1, whose columns start after one gap.
  np.testing.assert_array_equal(folded[2, 4:7], x[10])
  np.testing.assert_array_equal(folded[3, 8:11], x[19])
  assert (folded[4:, 8:] == 1).all()  # the last block is padded white
  assert (folded[:, 3] == 1).all()    # the gap between blocks


@pytest.mark.parametrize("rows,expect_wide", [(6, False), (64, True)])
def test_save_labelled_grid_folds_only_long_figures(tmp_path, rows,
                                                    expect_wide):
  x = np.zeros((rows, 4, 8, 8, 1))
  f = files.save_labelled_grid(str(tmp_path / "g.png"), x,
                               ["a", "b", "c", "d"],
                               [f"#{i}" for i in range(rows)], max_rows=8)
  w, h = Image.open(f).size
  assert (w > h) == expect_wide, (w, h)


def test_finished_bands_row_of_the_band_strip():
  import jax  # pylint: disable=g-import-not-at-top
  from kflow_jax import kamp  # pylint: disable=g-import-not-at-top
  from kflow_jax.flow import degradation  # pylint: disable=g-import-not-at-top
  from kflow_jax.flow import paths  # pylint: disable=g-import-not-at-top
  from kflow_jax.generate import sampler  # pylint: disable=g-import-not-at-top
  path = paths.make_path(kamp.get("fourier", (8, 8, 1)), num_scales=2)
  states = jax.random.normal(jax.random.key(0), (3, 2, 8, 8, 1))
  done = np.asarray(sampler.finished_bands(path, states))
  assert (done[0] == 0).all()  # nothing finished at t = 0
  np.testing.assert_allclose(
      done[1], degradation.band_part(path, states[1], [0]), atol=1e-6)
  # Band 0's part differs from the state: the fine band is still noise.
  assert np.abs(done[1] - np.asarray(states[1])).max() > 0.1
  np.testing.assert_allclose(done[2], states[2], atol=1e-5)  # all finished
