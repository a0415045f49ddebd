"""Molecular assembly (kflow_jax/modes/assembly.py and what it runs):
equivariance of the whole prediction, one band = rigid flow matching, the
data order, and the command line on COD-Cluster17 files the test writes
and on the offline proxy (slow tier: every method, bit-identical resume)."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kflow_jax.data import assembly_sets
from kflow_jax.data import cod_cluster17 as cod
from kflow_jax.flow import rigid
from kflow_jax.models import cluster_gnn
from kflow_jax.modes import assembly

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
M = cod.NUM_MOLECULES
# An asymmetric rigid molecule (no two atoms tie for the frame).
BODY = np.array([[0.0, 0, 0], [1.4, 0.1, 0], [-0.3, 1.2, 0.2],
                 [0.2, -0.4, 1.3], [2.1, 1.0, -0.6]])
TYPES = np.array([6, 6, 8, 7, 1])


def _rot(rng):
  q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
  return q * np.sign(np.linalg.det(q))


def _cluster(seed, cid="c"):
  """17 rigid copies of BODY, a start and a packing."""
  rng = np.random.default_rng(seed)
  start, final = [], []
  for _ in range(M):
    a = BODY @ _rot(rng).T + rng.normal(size=3) * 6
    start.append(a)
    final.append((a - a.mean(0)) @ _rot(rng).T + rng.normal(size=3) * 4)
  return cod.Cluster(cid, np.tile(TYPES, M), np.repeat(np.arange(M), 5),
                     np.concatenate(start), np.concatenate(final))


def _moved(cl, q, s, perm):
  """The cluster rotated by q, translated by s, molecules permuted."""
  x0 = cl.initial.reshape(M, -1, 3)[perm].reshape(-1, 3)
  x1 = cl.final.reshape(M, -1, 3)[perm].reshape(-1, 3)
  return cl._replace(initial=x0 @ q.T + s, final=x1 @ q.T + s)


def _predict(clusters, starts, params=None, solver="euler"):
  model = cluster_gnn.ClusterNet(hidden=16, depth=2, num_bands=len(starts))
  data = assembly_sets.arrays(clusters, 5, starts)
  b = {k: jnp.asarray(v) for k, v in data.items()}
  eye = jnp.broadcast_to(jnp.eye(3), b["c0"].shape[:-1] + (3, 3))
  if params is None:
    params = jax.jit(model.init)(jax.random.PRNGKey(0), b["c0"], eye,
                        jnp.zeros(len(clusters)),
                        jnp.zeros(len(clusters), jnp.int32), b["types"],
                        b["body"], b["frame"])["params"]
  apply = lambda c, r, k, band: model.apply(
      {"params": params}, c, r, k, band, b["types"], b["body"], b["frame"])
  c, r = rigid.sample(apply, b["proj"], b["c0"], eye, 3, solver)
  pred = dict(data, c=np.asarray(c), r=np.asarray(r))
  return assembly.positions(pred, clusters), params, apply, b


# Slow tier (a network and a sampler compiled twice per case); the
# network's own equivariance is fast in tests/cluster_gnn_test.py.
@pytest.mark.slow
@pytest.mark.parametrize("starts", [(0, 1, 4, 9), (0,)])
def test_rotating_translating_permuting_the_cluster_moves_the_prediction(
    starts):
  cl = _cluster(0)
  (x,), params, _, _ = _predict([cl], starts)
  rng = np.random.default_rng(1)
  q, s, perm = _rot(rng), rng.normal(size=3) * 10, rng.permutation(M)
  (y,), _, _, _ = _predict([_moved(cl, q, s, perm)], starts, params)
  expect = (x.reshape(M, -1, 3)[perm].reshape(-1, 3)) @ q.T + s
  np.testing.assert_allclose(y, expect, atol=2e-3)
  # The prediction moved away from the start: the test is not vacuous.
  assert np.abs(x - cl.initial).max() > 0.1


def test_predicted_molecules_stay_rigid():
  cl = _cluster(2)
  (x,), _, _, _ = _predict([cl], (0, 1, 4, 9), solver="midpoint")
  for i in range(M):
    a, b = cl.initial[5 * i:5 * i + 5], x[5 * i:5 * i + 5]
    d = lambda p: np.linalg.norm(p[:, None] - p[None], axis=-1)
    np.testing.assert_allclose(d(a), d(b), atol=1e-3)


# Slow tier; its fast cousin at the path level is
# tests/rigid_path_test.py::test_ends_are_exact_and_one_band_is_rigid_flow_matching.
@pytest.mark.slow
def test_one_band_is_rigid_flow_matching():
  """starts (0,): the projector is the identity and the band sampler is
  plain rigid flow matching's Euler (straight centroids, rotation vectors
  about the start), step for step."""
  cl = _cluster(3)
  data = assembly_sets.arrays([cl], 5, (0,))
  np.testing.assert_allclose(data["proj"][0, 0], np.eye(M), atol=1e-5)
  (x,), _, apply, b = _predict([cl], (0,))
  c, om = b["c0"], jnp.zeros_like(b["c0"])
  for i in range(3):
    t = i / 3
    c_hat, r_hat = apply(c, rigid.exp_so3(om), jnp.full((1,), t),
                         jnp.zeros((1,), jnp.int32))
    c = c + (1 / 3) * (c_hat - c) / (1 - t)
    om = om + (1 / 3) * (rigid.log_so3(r_hat) - om) / (1 - t)
  fm = dict(data, c=np.asarray(c), r=np.asarray(rigid.exp_so3(om)))
  np.testing.assert_allclose(x, assembly.positions(fm, [cl])[0], atol=1e-4)


def test_batches_walk_one_permutation_per_epoch():
  seen = np.concatenate([assembly.batch_indices(5, s, 10, 4)
                         for s in range(5)])
  np.testing.assert_array_equal(np.sort(seen[:10]), np.arange(10))
  np.testing.assert_array_equal(np.sort(seen[10:20]), np.arange(10))
  np.testing.assert_array_equal(assembly.batch_indices(5, 3, 10, 4),
                                seen[12:16])
  assert not np.array_equal(seen[:10], seen[10:20])


def test_frame_atoms_refuse_a_linear_molecule():
  with pytest.raises(ValueError, match="on one line"):
    assembly_sets.frame_atoms(np.array([[-1.0, 0, 0], [0, 0, 0],
                                        [1.0, 0, 0]]))


def _write_cod(root, count):
  """count clusters in the published layout (rows mol_idx,atom_type,x,y,z)."""
  sym = {6: "C", 8: "O", 7: "N", 1: "H"}
  for k in range(count):
    cl = _cluster(100 + k)
    for name, x in ((cod.INITIAL, cl.initial), (cod.FINAL, cl.final)):
      f = os.path.join(root, name.format(f"id{k}"))
      os.makedirs(os.path.dirname(f), exist_ok=True)
      rows = [f"{m},{sym[z]},{a:.6f},{b:.6f},{c:.6f}" for m, z, (a, b, c)
              in zip(cl.molecule, cl.numbers, x)]
      with open(f, "w") as fh:
        fh.write("mol_idx,atom_type,x,y,z\n" + "\n".join(rows) + "\n")


def _main(*flags, ok=True):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO,
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  p = subprocess.run([sys.executable, "-m", "kflow_jax.main", *flags],
                     cwd=REPO, env=env, capture_output=True, text=True,
                     timeout=900)
  if ok:
    assert p.returncode == 0, p.stderr[-3000:]
  return p


SMALL = ["--config.total_steps=4", "--config.batch_size=4",
         "--config.model.hidden=16", "--config.model.depth=1",
         "--config.log_every_steps=2", "--config.sample.steps_per_band=2",
         "--config.sample.num_files=2"]


# Slow tier: training through main (the loader on the published layout is
# tested fast in tests/cod_cluster17_test.py).
@pytest.mark.slow
def test_cod_cluster17_trains_and_scores_from_the_published_layout(
    tmp_path):
  root, wd = str(tmp_path / "COD"), str(tmp_path / "run")
  _write_cod(root, 20)
  cfg = f"--config=configs/cod_cluster17.py:root={root}"
  _main(cfg, f"--workdir={wd}", *SMALL)
  _main(cfg, f"--workdir={wd}", "--mode=eval", *SMALL)
  (out,) = [os.path.join(wd, assembly.OUT, d)
            for d in os.listdir(os.path.join(wd, assembly.OUT))]
  assert os.path.basename(out) == "step_4_test_euler2"
  with open(os.path.join(out, "eval.json")) as f:
    res = json.load(f)
  # AssembleFlow's split of 20 clusters: 16 / 2 / 2.
  assert res["metrics"]["count"] == 2 and res["bands"] == [0, 1, 4, 9]
  for k in ("pm_atom", "pm_center", "collision", "separation"):
    assert np.isfinite(res["metrics"][k]) and np.isfinite(
        res["start_metrics"][k]), k
  # The start scores as the start: its PM against the truth, recomputed.
  xyz = sorted(f for f in os.listdir(out) if f.endswith(".xyz"))
  assert len(xyz) == 6 and "clusters.png" in os.listdir(out)
  with open(os.path.join(out, xyz[1])) as f:
    lines = f.read().splitlines()
  assert int(lines[0]) == 5 * M and len(lines) == 2 + 5 * M
  assert lines[2].split()[0] in ("C", "O", "N", "H")


def test_cod_cluster17_without_data_is_one_clear_error(tmp_path):
  p = _main("--config=configs/cod_cluster17.py", f"--workdir={tmp_path}",
            ok=False)
  assert p.returncode == 1
  assert p.stderr.strip().splitlines()[-1].startswith(
      "kflow_jax: error: config.data.root is empty")
  p = _main(f"--config=configs/cod_cluster17.py:root={tmp_path}/none",
            f"--workdir={tmp_path}/run", ok=False)
  assert "no COD-Cluster17 data under" in p.stderr.splitlines()[-1]
  assert not os.path.exists(tmp_path / "run" / "config.json")


def test_bad_assembly_settings_are_refused(tmp_path):
  cases = (("--config.bands.starts=(0,2,2)", "increase strictly"),
           ("--config.loss.kappa=start", "plain regression"),
           ("--mode=mix", "image mode"))
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  # The three commands at once: each is a process start and a refusal.
  procs = [subprocess.Popen(
      [sys.executable, "-m", "kflow_jax.main",
       "--config=configs/molecules.py:runlocal",
       f"--workdir={tmp_path}/x{i}", flag], cwd=REPO, env=env,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i, (flag, _) in enumerate(cases)]
  for p, (flag, text) in zip(procs, cases):
    _, err = p.communicate(timeout=600)
    assert p.returncode == 1 and text in err.splitlines()[-1], (flag, err)


def _params(wd):
  from kflow_jax.infra import checkpointing  # pylint: disable=g-import-not-at-top
  ck = checkpointing.Checkpointer(wd, read_only=True)
  step = ck.all_steps()[-1]
  tree = ck.manager.restore(step)["state"]
  ck.close()
  return step, jax.tree.leaves(tree["params"])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["kflow", "fm", "regression"])
def test_every_method_of_the_proxy_config_through_main(tmp_path, method):
  """configs/molecules.py on pyxtal's crystals: train, eval, and a resumed
  run equals an uninterrupted one bit for bit."""
  if importlib.util.find_spec("pyxtal") is None:
    pytest.skip("the offline proxy reads pyxtal's database (pip install "
                "--no-deps pyxtal==1.1.5; .ci/run does)")
  cfg = f"--config=configs/molecules.py:method={method},runlocal"
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  _main(cfg, f"--workdir={a}")
  # b: the same run, its last checkpoint lost (as after a kill between
  # the checkpoints of steps 3 and 6): the relaunch resumes from step 3.
  _main(cfg, f"--workdir={b}")
  shutil.rmtree(os.path.join(b, "checkpoints", "6"))
  p = _main(cfg, f"--workdir={b}")
  assert "Resuming from the checkpoint at step 3" in p.stderr
  (sa, pa), (sb, pb) = _params(a), _params(b)
  assert sa == sb == 6
  for x, y in zip(pa, pb):
    np.testing.assert_array_equal(x, y)
  _main(cfg, f"--workdir={a}", "--mode=eval")
  (out,) = os.listdir(os.path.join(a, assembly.OUT))
  with open(os.path.join(a, assembly.OUT, out, "eval.json")) as f:
    res = json.load(f)
  assert res["metrics"]["valid_center"] == 100.0
  assert res["kappa"] == ("start" if method == "regression" else "uniform")


# Slow tier: two trainings (1 and 4 devices).
@pytest.mark.slow
def test_training_does_not_depend_on_the_device_count(tmp_path):
  """The same run on 1 and on 4 devices (data parallel, one key per
  cluster of the global batch): the same parameters up to float
  reassociation of the gradient's pmean."""
  from kflow_jax.config_lib import assembly as assembly_config  # pylint: disable=g-import-not-at-top
  root = str(tmp_path / "COD")
  _write_cod(root, 12)
  params = []
  for n in (1, 4):
    c = assembly_config.base()
    c.data.source, c.data.root = "cod_cluster17", root
    assembly_config.runlocal(c)
    c.total_steps, c.checkpoint_every_steps = 3, 0
    s = assembly.setup(c, str(tmp_path / f"run{n}"), "train",
                       devices=jax.devices()[:n])
    assert s.mesh.size == n
    params.append(jax.tree.leaves(assembly.train(s).params))
  for a, b in zip(*params):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
