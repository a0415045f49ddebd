"""MFU in the training log: the peak table, the arithmetic, XLA's FLOP
count (per device; against DiT.analytic_flops), and a training run through
the command line that logs TFLOP/s and no MFU on the CPU."""
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits
from kflow_jax.infra import flops
from kflow_jax.infra import metrics_io
from kflow_jax import models
from kflow_jax.infra import sharding
from kflow_jax.modes import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------ peak table ---


@pytest.mark.parametrize("kind,chip", [
    ("TPU v4", "TPU v4"),
    ("TPU v4 lite", None),          # the inference chip, not a v4
    ("TPU v5 lite", "TPU v5e"),
    ("TPU v5e", "TPU v5e"),
    ("TPU v5", "TPU v5p"),          # what a v5p reports
    ("TPU v5p", "TPU v5p"),
    ("TPU v6 lite", "TPU v6e"),
    ("NVIDIA A100-SXM4-80GB", "A100"),
    ("NVIDIA A100-PCIE-40GB", "A100"),
    ("NVIDIA H100 80GB HBM3", "H100"),
    ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H100 NVL", "H100 NVL"),
    ("NVIDIA H200", "H200"),
    ("NVIDIA H200 NVL", "H200 NVL"),
    ("NVIDIA GH200 480GB", "GH200"),
    ("cpu", None),
    ("Tesla V100-SXM2-16GB", None),
])
def test_chip_of_device_kind(kind, chip):
  assert flops.chip(kind) == chip
  peak = flops.peak_tflops(kind)
  assert peak == (None if chip is None else flops.PEAK_TFLOPS[chip])


def test_peak_of_devices():
  assert flops.peak_tflops(jax.devices()[0]) is None  # the CPU
  assert flops.PEAK_TFLOPS["TPU v5p"] == 459.0
  assert flops.PEAK_TFLOPS["H200"] == flops.PEAK_TFLOPS["H100"] == 989.0
  # accelerator_check reads the same table.
  from benchmarks import accelerator_check
  assert accelerator_check.peak_tflops is flops.peak_tflops


def test_utilization_arithmetic():
  # 8 devices, 16 TFLOP per step at 0.5 steps/s: 1 TFLOP/s per device.
  u = flops.utilization(16e12, 0.5, 8, "TPU v4")
  assert u["tflops_per_s_per_device"] == pytest.approx(1.0)
  assert u["mfu"] == pytest.approx(1.0 / 275.0)
  u = flops.utilization(989e12 * 0.4, 1.0, 1, "NVIDIA H100 80GB HBM3")
  assert u["mfu"] == pytest.approx(0.4)
  # Unknown peak (the CPU, or no device given): TFLOP/s only.
  assert flops.utilization(16e12, 0.5, 8, jax.devices()[0]) == {
      "tflops_per_s_per_device": pytest.approx(1.0)}
  assert "mfu" not in flops.utilization(1e9, 2.0, 1)


# ------------------------------------------------------- XLA's FLOP count ---


class _Stage:

  def __init__(self, cost):
    self.cost = cost

  def cost_analysis(self):
    if isinstance(self.cost, Exception):
      raise self.cost
    return self.cost


def test_step_flops_forms():
  assert flops.step_flops(_Stage({"flops": 12.0})) == 12.0
  assert flops.step_flops(_Stage([{"flops": 7.0}])) == 7.0  # older jax
  for bad in ([], None, {}, {"flops": -1.0}, {"flops": 0.0},
              NotImplementedError("no cost model"), RuntimeError("x")):
    assert flops.step_flops(_Stage(bad)) is None, bad


def test_step_flops_is_per_device():
  # A batch-sharded matmul: each device multiplies its rows only.
  mesh = sharding.make_mesh(devices=jax.devices()[:4])
  bsh = sharding.batch_sharding(mesh)
  w = jnp.ones((32, 16))
  x = jax.device_put(jnp.ones((64, 32)), bsh)
  fn = jax.jit(lambda x, w: x @ w, in_shardings=(bsh, None),
               out_shardings=bsh)
  per_device = flops.step_flops(fn.lower(x, w).compile())
  assert per_device == 2 * 64 * 32 * 16 / 4
  one = flops.step_flops(jax.jit(lambda x, w: x @ w).lower(
      jnp.ones((64, 32)), w).compile())
  assert one == 2 * 64 * 32 * 16


def test_compile_flops_without_cost_analysis_logs_and_skips(monkeypatch):
  class Lowered:
    def compile(self):
      return _Stage(NotImplementedError("no cost model here"))

  class StepFn:
    def lower(self, state, batch):
      return Lowered()

  warned = []
  monkeypatch.setattr(train.logging, "warning",
                      lambda msg, *a: warned.append(msg % a))
  mesh = sharding.make_mesh(devices=jax.devices()[:2])
  assert train.compile_flops(StepFn(), None, None, mesh) is None
  assert len(warned) == 1 and "no FLOP count" in warned[0]


def _matmul_flops(jaxpr) -> int:
  """2 x multiply-adds of every dot_general and convolution in a jaxpr
  (sub-jaxprs included): what DiT.analytic_flops claims to count."""
  total = 0
  for eqn in jaxpr.eqns:
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else [param]:
        if hasattr(sub, "jaxpr") and hasattr(sub, "consts"):
          total += _matmul_flops(sub.jaxpr)
        elif hasattr(sub, "eqns"):
          total += _matmul_flops(sub)
    out = eqn.outvars[0].aval.shape
    if eqn.primitive.name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2 * int(np.prod(out)) * int(np.prod([lhs[i] for i in contract]))
    elif eqn.primitive.name == "conv_general_dilated":
      rhs = eqn.invars[1].aval.shape
      features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
      total += 2 * int(np.prod(out)) * int(np.prod(rhs)) // features
  return total


@pytest.mark.slow
def test_dit_xla_flops_match_analytic():
  # DiT-S/2 widths (hidden 384, 6 heads) on 32x32x4 latents, 256 tokens;
  # two blocks instead of twelve: both counts are linear in the depth.
  model = models.get("dit", size="S", depth=2, patch_size=2, num_classes=10)
  shape = (2, 32, 32, 4)
  x = jax.random.normal(jax.random.key(0), shape)
  t = jnp.array([0.3, 0.8], jnp.float32)
  y = jnp.array([1, 10], jnp.int32)
  abstract = jax.eval_shape(model.init, jax.random.key(0, impl="rbg"), x, t,
                            y)
  variables = jax.tree.map(lambda a: jnp.full(a.shape, 0.01, a.dtype),
                           nn.meta.unbox(abstract))
  analytic = model.analytic_flops(shape)
  # Its scope: exactly the matmuls (dense layers, patch conv, attention
  # scores and weighted sum), counted as 2 FLOPs per multiply-add.
  jaxpr = jax.make_jaxpr(lambda v: model.apply(v, x, t, y))(variables)
  assert _matmul_flops(jaxpr.jaxpr) == analytic
  # XLA counts every op: the rest (layer norms, softmax, GELU, adaLN
  # modulation, residual adds) is O(hidden) per token against O(hidden^2)
  # for the matmuls, ~0.9 % here (but ~10 % at the test size mu, hidden 32).
  fwd = models.flops(model, variables, x, t, y)
  assert abs(fwd / analytic - 1) < 0.05, fwd / analytic
  # Backward: two matmuls per forward matmul (input and weight gradients).
  both = models.flops(model, variables, x, t, y, backward=True)
  assert abs(both / (3 * analytic) - 1) < 0.05, both / analytic


# ------------------------------------------------------- the training log ---


def test_progress_line_shows_tflops_and_mfu():
  p = metrics_io.Progress(0, 10)
  timing = {"steps_per_s": 2.0, "eta_s": 4.0}
  line = p.line(5, 0.5, timing, {"tflops_per_s_per_device": 123.456,
                                 "mfu": 0.4123})
  assert "2.00 steps/s | 123.5 TFLOP/s/device | MFU 41.2% | ETA" in line
  assert "TFLOP" not in p.line(5, 0.5, timing)


@pytest.mark.slow
def test_main_logs_tflops_and_no_mfu_on_cpu(tmp_path):
  wd = str(tmp_path / "run")
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  p = subprocess.run(
      [sys.executable, "-m", "kflow_jax.main",
       "--config=configs/digits.py:runlocal", f"--workdir={wd}",
       "--config.sample.at_end=False"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows] == [2, 4, 6]
  for r in rows:
    assert r["flops_per_step"] > 0 and r["tflops_per_s_per_device"] > 0
    assert "mfu" not in r  # the CPU's peak is unknown
    # 1 device: TFLOP/s = FLOPs per step x steps/s.
    assert r["tflops_per_s_per_device"] == pytest.approx(
        r["flops_per_step"] * r["steps_per_s"] / 1e12, rel=1e-6)
  assert len({r["flops_per_step"] for r in rows}) == 1
  assert "TFLOP/s/device" in p.stderr and "MFU" not in p.stderr
  assert "no FLOP count" not in p.stderr


@pytest.mark.slow
def test_train_step_compiles_once_and_counts_all_devices(tmp_path):
  names = []

  def listen(event, duration, **kw):
    del duration
    if event == "/jax/core/compile/backend_compile_duration":
      names.append(kw.get("fun_name"))

  c = digits.get_config("runlocal")
  c.sample.at_end = False
  c.total_steps = 2
  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    train.train_and_evaluate(c, str(tmp_path / "two"),
                             devices=jax.devices()[:2])
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
  # The FLOP count compiles the step ahead; the loop's call reuses it.
  assert names.count("jit(step)") == 1, names
  with open(os.path.join(tmp_path, "two", "metrics.jsonl")) as f:
    row = json.loads(f.readline())
  assert row["flops_per_step"] > 0 and "mfu" not in row
  assert row["tflops_per_s_per_device"] == pytest.approx(
      row["flops_per_step"] * row["steps_per_s"] / 2 / 1e12, rel=1e-6)
