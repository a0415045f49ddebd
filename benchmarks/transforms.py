"""K-amplitude transforms: forward + inverse time under jit, side by side.

  python -m benchmarks.transforms            # the three issue sizes
  python -m benchmarks.transforms --quick    # smoke run (seconds), for tests

For every transform and size, the median time of jit(inverse(forward(x))).
For the wavelet (haar, db2 and db6 by default), in the same run and
interleaved call by call so that load on a shared machine hits all three
alike: ours, PyWavelets wavedec2/waverec2 (mode="periodization", float32,
same wavelet and levels) and jaxwt wavedec2/waverec2 (jaxwt has no
periodization, so its default padding), with the time ratios pywt/ours and
jaxwt/ours (> 1: ours is faster) and our XLA compile time.

What bounds our wavelet on CPU (profiled from the compiled HLO and by
timing pieces; kamp/wavelet.py has the design): not arithmetic but the
number of ops and passes over memory, each with a dispatch and a
thread-pool hand-off. 32x32: the 12 matmuls of 3 levels (forward +
inverse) plus, in a [B*C, H, W] layout, a transpose before and after each
H-axis dot (24 ops); the [H, B*C, W] layout leaves 18. 256x256: the
stencils; for db6 the interior/edge segments and their concatenate copies
made 73 ops, one wrap-padded window per pass makes 47. The lifting steps
(kamp/lifting.py) need half the multiply-adds but one pass each, ~3x
slower. jit(inverse(forward)) lets XLA cancel the forward's last
transpose and packing against the inverse's first ones; forward alone
is 50-70 % of the round trip.

The ratios move with the load on a shared machine, likely because XLA
splits each loop op over the cores (2 partitions in the compiled HLO) and
waits for the slowest share while PyWavelets runs on one core, so a busy
core costs ours more (not isolated further). The code before the changes
above measured pywt/ours for db6 at 256x256 from 2.5 to 5.3 across runs;
compare ratios from one run.
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
from kflow_jax import kamp# noqa: E402

SIZES = [(64, 32, 32, 3), (64, 32, 32, 4), (16, 256, 256, 3)]
QUICK_SIZES = [(2, 16, 16, 3)]


def _time(fn, x, repeats):
  """Median wall time in ms of fn(x) after one warm-up (compile) call."""
  return _time_interleaved({"fn": fn}, x, repeats)["fn"]


def _time_interleaved(fns, x, repeats):
  """{name: median ms} with the calls of all fns interleaved per round.

  One warm-up (compile) call each; then every round calls each fn once, so
  a burst of load from other jobs slows all of them, not just one.
  """
  inputs = {}
  for name, (fn, arg) in ((k, v if isinstance(v, tuple) else (v, x))
                          for k, v in fns.items()):
    inputs[name] = (fn, arg)
    jax.block_until_ready(fn(arg))
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, (fn, arg) in inputs.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(arg))
      times[name].append(1e3 * (time.perf_counter() - start))
  return {name: statistics.median(t) for name, t in times.items()}


def _random_orthogonal(dim, seed=0):
  q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
  return q.astype(np.float32)


def _transforms(shape):
  h, w, c = shape
  out = {name: kamp.get(name, shape) for name in ("identity", "fourier",
                                                   "dct")}
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


def _wavelet_rows(size, x, wavelet, levels, repeats):
  """Ours vs PyWavelets vs jaxwt for one wavelet, interleaved."""
  t = kamp.get("wavelet", size[1:], wavelet=wavelet, levels=levels)
  start = time.perf_counter()
  ours = jax.jit(lambda v: t.inverse(t.forward(v))).lower(x).compile()
  compile_s = time.perf_counter() - start
  err = float(jnp.abs(ours(x) - x).max())
  with warnings.catch_warnings():  # pywt: levels above its boundary max
    warnings.simplefilter("ignore")
    ms = _time_interleaved(
        {"ours": ours, "pywt": _pywt_fn(wavelet, levels),
         "jaxwt": (_jaxwt_fn(wavelet, levels),
                   np.ascontiguousarray(x.transpose(0, 3, 1, 2)))},
        x, repeats)
  name = f"wavelet {wavelet} L{levels}"
  print(f"{str(size):18s} {name:22s} {ms['ours']:9.3f} ms  (max round-trip "
        f"error {err:.1e}, compile {compile_s:.2f} s)", flush=True)
  print(f"{'':18s} {'  PyWavelets':22s} {ms['pywt']:9.3f} ms  "
        f"ratio pywt/ours = {ms['pywt'] / ms['ours']:.2f}", flush=True)
  print(f"{'':18s} {'  jaxwt (no period.)':22s} {ms['jaxwt']:9.3f} ms  "
        f"ratio jaxwt/ours = {ms['jaxwt'] / ms['ours']:.2f}", flush=True)
  return [(size, name, ms["ours"], err),
          (size, f"ratio pywt/ours {wavelet}", ms["pywt"] / ms["ours"], None),
          (size, f"ratio jaxwt/ours {wavelet}", ms["jaxwt"] / ms["ours"],
           None)], (size, wavelet, ms, compile_s)


def run(sizes, wavelets, levels, repeats):
  rows, table = [], []
  for size in sizes:
    x = np.random.default_rng(0).standard_normal(size).astype(np.float32)
    for name, t in _transforms(size[1:]).items():
      fn = jax.jit(lambda v, t=t: t.inverse(t.forward(v)))
      ms = _time(fn, x, repeats)
      err = float(jnp.abs(fn(x) - x).max())
      rows.append((size, name, ms, err))
      print(f"{str(size):18s} {name:22s} {ms:9.3f} ms  (max round-trip "
            f"error {err:.1e})", flush=True)
    for wavelet in wavelets:
      new_rows, line = _wavelet_rows(size, x, wavelet, levels, repeats)
      rows += new_rows
      table.append(line)
  print(f"\nwavelet L{levels}, jit(inverse(forward(x))), median ms "
        "(interleaved); ratios > 1: ours is faster")
  print(f"{'size':18s} {'wavelet':8s} {'ours':>9s} {'pywt':>9s} "
        f"{'jaxwt':>9s} {'pywt/ours':>10s} {'jaxwt/ours':>11s} "
        f"{'compile s':>10s}")
  for size, wavelet, ms, compile_s in table:
    print(f"{str(size):18s} {wavelet:8s} {ms['ours']:9.3f} {ms['pywt']:9.3f} "
          f"{ms['jaxwt']:9.3f} {ms['pywt'] / ms['ours']:10.2f} "
          f"{ms['jaxwt'] / ms['ours']:11.2f} {compile_s:10.2f}", flush=True)
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="one tiny size, few repeats (smoke test)")
  parser.add_argument("--wavelet", default="haar,db2,db6",
                      help="comma-separated PyWavelets names")
  parser.add_argument("--levels", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=None)
  args = parser.parse_args(argv)
  sizes = QUICK_SIZES if args.quick else SIZES
  levels = min(args.levels, 2) if args.quick else args.levels
  repeats = args.repeats or (2 if args.quick else 21)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; "
        f"jit(inverse(forward(x))), median of {repeats}")
  return run(sizes, args.wavelet.split(","), levels, repeats)


if __name__ == "__main__":
  main()
