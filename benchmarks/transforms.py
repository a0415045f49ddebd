"""K-amplitude transforms: forward + inverse time under jit, side by side.

  python benchmarks/transforms.py            # the three issue sizes
  python benchmarks/transforms.py --quick    # smoke run (seconds), for tests

For every transform and size, the median time of jit(inverse(forward(x)));
for the wavelet, in the same run, jaxwt wavedec2/waverec2 (same wavelet and
levels; jaxwt has no periodization, so its default padding) and PyWavelets
wavedec2/waverec2 (mode="periodization", float32), with the ratios
jaxwt / ours and pywt / ours (> 1: ours is faster).
"""
import argparse
import os
import statistics
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pywt

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kflow_jax import kamp  # noqa: E402

SIZES = [(64, 32, 32, 3), (64, 32, 32, 4), (16, 256, 256, 3)]
QUICK_SIZES = [(2, 16, 16, 3)]


def _time(fn, x, repeats):
  """Median wall time in ms of fn(x) after one warm-up (compile) call."""
  jax.block_until_ready(fn(x))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(x))
    times.append(1e3 * (time.perf_counter() - start))
  return statistics.median(times)


def _random_orthogonal(dim, seed=0):
  q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
  return q.astype(np.float32)


def _transforms(shape, wavelet, levels):
  h, w, c = shape
  out = {name: kamp.get(name, shape) for name in ("identity", "fourier",
                                                   "dct")}
  out[f"wavelet {wavelet} L{levels}"] = kamp.get(
      "wavelet", shape, wavelet=wavelet, levels=levels)
  if h * w * c <= 4096:
    out["pca"] = kamp.get("pca", shape, basis=_random_orthogonal(h * w * c))
  patch = 8 if h % 8 == 0 and w % 8 == 0 else 2
  out[f"pca patch {patch}"] = kamp.get(
      "pca", shape, basis=_random_orthogonal(patch * patch * c), patch=patch)
  return out


def _jaxwt_fn(wavelet, levels):
  import jaxwt  # pylint: disable=g-import-not-at-top

  @jax.jit
  def fn(x):  # jaxwt transforms the last two axes: [B, C, H, W]
    coeffs = jaxwt.wavedec2(x, wavelet, level=levels)
    return jaxwt.waverec2(coeffs, wavelet)
  return fn


def _pywt_fn(wavelet, levels):
  def fn(x):
    coeffs = pywt.wavedec2(x, wavelet, mode="periodization", level=levels,
                           axes=(1, 2))
    return pywt.waverec2(coeffs, wavelet, mode="periodization", axes=(1, 2))
  return fn


def run(sizes, wavelet, levels, repeats):
  rows = []
  for size in sizes:
    x = np.random.default_rng(0).standard_normal(size).astype(np.float32)
    for name, t in _transforms(size[1:], wavelet, levels).items():
      fn = jax.jit(lambda v, t=t: t.inverse(t.forward(v)))
      ms = _time(fn, x, repeats)
      err = float(jnp.abs(fn(x) - x).max())
      rows.append((size, name, ms, err))
      print(f"{str(size):18s} {name:22s} {ms:9.3f} ms  (max round-trip "
            f"error {err:.1e})", flush=True)
      if name.startswith("wavelet"):
        ours = ms
        with warnings.catch_warnings():
          warnings.simplefilter("ignore")
          jw = _time(_jaxwt_fn(wavelet, levels),
                     np.ascontiguousarray(x.transpose(0, 3, 1, 2)), repeats)
          pw = _time(_pywt_fn(wavelet, levels), x, repeats)
        print(f"{'':18s} {'  jaxwt (no period.)':22s} {jw:9.3f} ms  "
              f"ratio jaxwt/ours = {jw / ours:.2f}", flush=True)
        print(f"{'':18s} {'  PyWavelets':22s} {pw:9.3f} ms  "
              f"ratio pywt/ours = {pw / ours:.2f}", flush=True)
        rows.append((size, "ratio jaxwt/ours", jw / ours, None))
        rows.append((size, "ratio pywt/ours", pw / ours, None))
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="one tiny size, few repeats (smoke test)")
  parser.add_argument("--wavelet", default="db6")
  parser.add_argument("--levels", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=None)
  args = parser.parse_args(argv)
  sizes = QUICK_SIZES if args.quick else SIZES
  levels = min(args.levels, 2) if args.quick else args.levels
  repeats = args.repeats or (2 if args.quick else 10)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; "
        f"jit(inverse(forward(x))), median of {repeats}")
  return run(sizes, args.wavelet, levels, repeats)


if __name__ == "__main__":
  main()
