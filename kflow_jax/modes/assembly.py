r"""Molecular assembly runs: K-Flow over the rigid molecules of a cluster
(configs/molecules.py, configs/cod_cluster17.py; docs/method.md#rigid-band-paths).

    python -m kflow_jax.main --config=configs/molecules.py --workdir=DIR
    python -m kflow_jax.main --config=configs/molecules.py --workdir=DIR \
        --mode=eval                     # AssembleFlow's metrics, files

main.py hands a config with task "assembly" (config_lib/assembly.py) to
`main`. Training: the endpoint loss of flow/rigid.py at a band time drawn
per cluster (uniform on [0, K], or 0 for the plain regression), the
network models/cluster_gnn.ClusterNet, data parallel over the mesh with
the image runs' train step (modes/train.make_train_step: one rng key per
cluster, pmean of the gradient), AdamW and EMA, Orbax checkpoints; a
batch is a pure function of (data order seed, step), so a relaunch
resumes bit for bit from the newest checkpoint without an iterator state.
At the end the valid split is scored into metrics.jsonl.

sample / eval: the band-by-band sampler of flow/rigid.py from each start
of config.sample.split, written under
<workdir>/assembly_mode/step_<N>_<split>_<solver><steps>/ as
predictions.npz (poses and atoms), .xyz files of the first num_files
clusters (start, prediction, truth: ASE, VMD, Avogadro and PyMOL open
them) and clusters.png; eval adds eval.json: AssembleFlow's metrics
(evaluators/assembly.py) of the prediction and, beside them, of the
trivial prediction that every molecule stays at its start.
"""
import os
from typing import NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax.data import assembly_sets
from kflow_jax.data import atoms
from kflow_jax.data import cod_cluster17
from kflow_jax.evaluators import assembly as metrics_lib
from kflow_jax.evaluators import plots
from kflow_jax.flow import rigid
from kflow_jax.infra import checkpointing
from kflow_jax.infra import metrics_io
from kflow_jax.infra import sharding
from kflow_jax.models import cluster_gnn
from kflow_jax.modes import train as train_lib
from kflow_jax.run import optim
from kflow_jax.run import train_state

MODES = ("train", "sample", "eval")
KAPPA = ("uniform", "start")
SPLITS = ("train", "valid", "test")
OUT = "assembly_mode"


class Setup(NamedTuple):
  config: object
  workdir: str
  mesh: object
  model: object
  starts: tuple
  clusters: dict          # split -> [cod_cluster17.Cluster]
  num_atoms: int
  tx: object
  schedule: object
  decays: tuple
  abstract_state: object
  state_shardings: object
  init_state: object      # () -> TrainState


def _check(config, mode):
  if mode not in MODES:
    raise ValueError(f"--mode={mode} is an image mode; molecular assembly "
                     f"runs take --mode= one of {MODES}.")
  starts = tuple(int(s) for s in config.bands.starts)
  m = cod_cluster17.NUM_MOLECULES
  if not starts or starts[0] != 0 or any(
      b <= a for a, b in zip(starts, starts[1:])) or starts[-1] >= m:
    raise ValueError(
        f"config.bands.starts={starts} must begin at 0 and increase "
        f"strictly below {m} (the molecules of a cluster), e.g. (0, 1, 4, "
        "9); (0,) is one band, plain rigid flow matching.")
  if config.bands.rotations not in rigid.ROTATIONS:
    raise ValueError(f"config.bands.rotations={config.bands.rotations!r} "
                     f"is not one of {rigid.ROTATIONS}.")
  if config.loss.kappa not in KAPPA:
    raise ValueError(f"config.loss.kappa={config.loss.kappa!r} is not one "
                     f"of {KAPPA}.")
  if config.loss.kappa == "start" and starts != (0,):
    raise ValueError(
        "config.loss.kappa='start' trains a plain regression of the final "
        "poses from the start: it has one band, so set "
        "config.bands.starts=(0,) (configs/molecules.py:method=regression).")
  if int(config.mesh.fsdp) != 1:
    raise ValueError("config.mesh.fsdp must be 1 for molecular assembly: "
                     "the cluster network is small and runs data parallel.")
  if int(config.batch_size) < 1 or int(config.total_steps) < 1:
    raise ValueError("config.batch_size and config.total_steps must be "
                     ">= 1.")
  s = config.sample
  if s.split not in SPLITS:
    raise ValueError(f"config.sample.split={s.split!r} is not one of "
                     f"{SPLITS}.")
  if s.solver not in rigid.SOLVERS:
    raise ValueError(f"config.sample.solver={s.solver!r} is not one of "
                     f"{rigid.SOLVERS}.")
  if int(s.steps_per_band) < 1:
    raise ValueError("config.sample.steps_per_band must be >= 1, got "
                     f"{s.steps_per_band}.")
  return starts


def setup(config, workdir: str, mode: str, *,
          allow_config_change: bool = False, devices=None) -> Setup:
  """Everything a run needs, checked before anything is written."""
  starts = _check(config, mode)
  wd = checkpointing.check_workdir(workdir)
  if not allow_config_change:
    checkpointing.check_config(wd, config, False, write=False)
  parts = assembly_sets.splits(config.data)
  clusters = dict(zip(SPLITS, parts))
  for name in ("train", config.sample.split):
    if not clusters[name]:
      raise ValueError(
          f"the {name} split is empty ({[len(p) for p in parts]} clusters "
          "in train / valid / test): use more data (config.data.limit=-1, "
          "more config.data.draws) or another config.sample.split.")
  num_atoms = max(len(c.numbers) // cod_cluster17.NUM_MOLECULES
                  for p in parts for c in p)
  mesh = sharding.make_mesh(1, devices)
  sharding.check_batch_size(int(config.batch_size), mesh,
                            jax.process_count())
  mc = config.model
  model = cluster_gnn.ClusterNet(
      hidden=int(mc.hidden), depth=int(mc.depth), num_bands=len(starts),
      num_rbf=int(mc.num_rbf), cutoff=float(mc.cutoff))
  tx, schedule = optim.make_optimizer(config.optim, int(config.total_steps))
  decays = train_state.validate_ema_decays(config.ema_decays)
  example = _device_batch(assembly_sets.arrays(clusters["train"][:1],
                                               num_atoms, starts))

  def init_state():
    key, init_key = jax.random.split(jax.random.PRNGKey(int(config.seed)))
    params = model.init(init_key, example["c0"], _eye(example["c0"]),
                        jnp.zeros((1,)), jnp.zeros((1,), jnp.int32),
                        example["types"], example["body"],
                        example["frame"])["params"]
    return train_state.create(params, tx, key, decays)

  abstract = jax.eval_shape(init_state)
  shardings = sharding.state_shardings(mesh, abstract)
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract, shardings)
  init = jax.jit(init_state, out_shardings=shardings)
  checkpointing.check_config(wd, config, allow_config_change,
                             write=mode == "train")
  return Setup(config, os.fspath(wd), mesh, model, starts, clusters,
               num_atoms, tx, schedule, decays, abstract, shardings, init)


def _eye(c):
  return jnp.broadcast_to(jnp.eye(3), c.shape[:-1] + (3, 3))


def _device_batch(arrays: dict) -> dict:
  return {k: jnp.asarray(v) for k, v in arrays.items() if k != "shift"}


def _apply(model, params, batch):
  def apply(c, r, kappa, band):
    return model.apply({"params": params}, c, r, kappa, band,
                       batch["types"], batch["body"], batch["frame"])
  return apply


def make_local_loss(s: Setup):
  """(params, batch, keys) -> (mean endpoint error, per-band sums)."""
  k = len(s.starts)
  start = s.config.loss.kappa == "start"
  weight = float(s.config.loss.rot_weight)

  def local_loss(params, batch, keys):
    if start:
      kappa = jnp.zeros((keys.shape[0],))
    else:
      kappa = jax.vmap(lambda key: jax.random.uniform(key, (), maxval=k))(
          keys)
    err = rigid.endpoint_errors(_apply(s.model, params, batch),
                                batch["proj"], batch["c0"],
                                _eye(batch["c0"]), batch["c1"], batch["r1"],
                                kappa, weight, s.config.bands.rotations,
                                bool(s.config.loss.project_centroids))
    onehot = jax.nn.one_hot(jnp.minimum(jnp.floor(kappa), k - 1), k)
    return jnp.mean(err), {"band_loss_sum": onehot.T @ err,
                           "band_count": jnp.sum(onehot, 0)}
  return local_loss


def batch_indices(seed: int, step: int, n: int, size: int) -> np.ndarray:
  """Examples of global batch `step`: consecutive slices of one seeded
  permutation of the n training clusters per epoch."""
  pos = np.arange(step * size, (step + 1) * size)
  out = np.empty(size, np.int64)
  for epoch in np.unique(pos // n):
    perm = np.random.default_rng([int(seed), int(epoch)]).permutation(n)
    sel = pos // n == epoch
    out[sel] = perm[pos[sel] % n]
  return out


def _global(mesh, arrays: dict, idx) -> dict:
  """This process's slice of the examples idx, as a global batch."""
  per = len(idx) // jax.process_count()
  mine = idx[jax.process_index() * per:(jax.process_index() + 1) * per]
  return sharding.global_batch(
      mesh, {k: v[mine] for k, v in arrays.items() if k != "shift"})


def train(s: Setup):
  """Trains config.total_steps steps, resuming from the newest checkpoint;
  scores the valid split at the end. Returns the final state."""
  config, mesh = s.config, s.mesh
  data = assembly_sets.arrays(s.clusters["train"], s.num_atoms, s.starts)
  n = len(s.clusters["train"])
  bsz, total = int(config.batch_size), int(config.total_steps)
  ckpt = checkpointing.Checkpointer(s.workdir, int(config.keep_checkpoints))
  restored = ckpt.restore_latest(s.abstract_state, with_data=False)
  if restored is None:
    start, state = 0, s.init_state()
    logging.info("Starting a new assembly run in %s (%d training clusters).",
                 s.workdir, n)
  else:
    start, state, _ = restored
    logging.info("Resuming from the checkpoint at step %d in %s.", start,
                 s.workdir)
  step_fn = train_lib.make_train_step(make_local_loss(s), s.tx, s.schedule,
                                      mesh, s.decays, s.state_shardings)
  writer = metrics_io.MetricWriter(s.workdir, resume_step=start or None)
  progress = metrics_io.Progress(start, total)
  block = sharding.must_block(mesh)
  stop = checkpointing.StopSignal().install()
  log_every = max(1, int(config.log_every_steps))
  ckpt_every = int(config.checkpoint_every_steps)
  seed = int(config.seed)
  step, window, prev, saved = start, [], None, start
  try:
    while step < total:
      batch = _global(mesh, data, batch_indices(seed, step, n, bsz))
      state, metrics = step_fn(state, batch)
      step += 1
      if block:
        jax.block_until_ready(metrics["loss"])
      if prev is not None:
        train_lib.check_finite(prev, step - 1, ckpt)
      prev = metrics
      window.append(metrics)
      if step % log_every == 0 or step == total:
        train_lib.check_finite(metrics, step, ckpt)
        summary = train_lib.summarize(window)
        timing = progress.update(step)
        summary.update(timing)
        summary["clusters_per_s"] = bsz * timing["steps_per_s"]
        writer.write(step, summary)
        logging.info("%s", progress.line(step, summary["loss"], timing,
                                         summary))
        window = []
      did_save, stopping = train_lib.save_if_due(ckpt, stop, step,
                                                 ckpt_every, state, None,
                                                 metrics)
      saved = step if did_save else saved
      if stopping:
        break
    if step == total and saved != step:
      train_lib.check_finite(prev, step, ckpt)
      ckpt.save(step, state, None)
    ckpt.wait()
    if step == total and s.clusters["valid"]:
      scores = score(s.clusters["valid"],
                     predict(s, _params(s, state), s.clusters["valid"]))
      writer.write(step, {f"valid_{k}": v for k, v in scores.items()})
      logging.info("valid split at step %d: %s", step, scores)
  finally:
    stop.uninstall()
    writer.close()
    ckpt.close()
  return state


def _params(s: Setup, state):
  return state.ema_params[0] if s.config.sample.use_ema else state.params


def predict(s: Setup, params, clusters) -> dict:
  """Sampled poses of `clusters`: {c [C, M, 3], r [C, M, 3, 3] since the
  start, plus the arrays of assembly_sets.arrays}."""
  sc = s.config.sample
  steps = 1 if s.config.loss.kappa == "start" else int(sc.steps_per_band)
  data = assembly_sets.arrays(clusters, s.num_atoms, s.starts)
  size = max(int(s.config.batch_size), s.mesh.size)
  size -= size % s.mesh.size
  rep = sharding.replicated(s.mesh)

  @jax.jit
  def run(params, batch):
    c, r = rigid.sample(_apply(s.model, params, batch), batch["proj"],
                        batch["c0"], _eye(batch["c0"]), steps, sc.solver,
                        s.config.bands.rotations)
    return jax.lax.with_sharding_constraint((c, r), rep)

  n = len(clusters)
  cs, rs = [], []
  for lo in range(0, n, size):
    idx = np.minimum(np.arange(lo, lo + size), n - 1)  # pad with the last
    c, r = run(params, _global(s.mesh, data, idx))
    cs.append(np.asarray(c)[:min(size, n - lo)])
    rs.append(np.asarray(r)[:min(size, n - lo)])
  return dict(data, c=np.concatenate(cs), r=np.concatenate(rs))


def positions(pred: dict, clusters) -> list:
  """Predicted atoms [N, 3] of each cluster, in the data's own frame."""
  out = []
  for i, cl in enumerate(clusters):
    n = len(cl.numbers) // cod_cluster17.NUM_MOLECULES
    x = assembly_sets.atoms_of(pred["body"][i, :, :n], pred["c"][i],
                               pred["r"][i])
    out.append(x.reshape(-1, 3) + pred["shift"][i])
  return out


def score(clusters, pred: dict, with_start: bool = False):
  """AssembleFlow's aggregate of the prediction (and of the start)."""
  xs = positions(pred, clusters)
  per = {cl.id: [metrics_lib.cluster_metrics(cl.final, x, cl.numbers,
                                             cl.molecule)]
         for cl, x in zip(clusters, xs)}
  out = metrics_lib.aggregate(per)
  if not with_start:
    return out
  start = {cl.id: [metrics_lib.cluster_metrics(cl.final, cl.initial,
                                               cl.numbers, cl.molecule)]
           for cl in clusters}
  return out, metrics_lib.aggregate(start), per


def _picture(path: str, clusters, xs, rows: int = 3):
  panels = []
  for cl, x in list(zip(clusters, xs))[:rows]:
    truth = np.asarray(cl.final)
    centre = truth.mean(0)
    _, _, vt = np.linalg.svd(truth - centre, full_matrices=False)
    # One view for the three panels, wide enough for the spread start.
    box = 1.1 * max(float(np.max(np.abs((np.asarray(y) - centre) @
                                        vt[:2].T)))
                    for y in (cl.initial, x, truth))
    panels.append(plots.side_by_side([
        plots.atom_panel(y - centre, cl.molecule, f"{cl.id}: {name}",
                         vt[:2], box)
        for name, y in (("start", cl.initial), ("prediction", x),
                        ("truth", truth))]))
  plots.save_png(path, np.concatenate(panels, axis=0))


def write_outputs(s: Setup, step: int, mode: str, params) -> dict:
  """sample / eval (module doc); returns eval.json's content (eval)."""
  sc = s.config.sample
  clusters = s.clusters[sc.split]
  if int(sc.num_clusters) >= 0:
    clusters = clusters[:int(sc.num_clusters)]
  steps = 1 if s.config.loss.kappa == "start" else int(sc.steps_per_band)
  out = os.path.join(s.workdir, OUT,
                     f"step_{step}_{sc.split}_{sc.solver}{steps}")
  os.makedirs(out, exist_ok=True)
  pred = predict(s, params, clusters)
  xs = positions(pred, clusters)
  if jax.process_index() == 0:
    np.savez(os.path.join(out, "predictions.npz"),
             ids=np.asarray([c.id for c in clusters]), c=pred["c"],
             r=pred["r"], shift=pred["shift"],
             **{f"atoms_{i}": x for i, x in enumerate(xs)})
    for cl, x in list(zip(clusters, xs))[:int(sc.num_files)]:
      for name, y in (("start", cl.initial), ("pred", x),
                      ("true", cl.final)):
        atoms.write_xyz(os.path.join(out, f"{cl.id}_{name}.xyz"),
                        cl.numbers, y, f"{cl.id} {name} step {step}")
    _picture(os.path.join(out, "clusters.png"), clusters, xs)
  result = None
  if mode == "eval":
    scores, start, per = score(clusters, pred, with_start=True)
    result = {"step": step, "split": sc.split, "solver": sc.solver,
              "steps_per_band": steps, "bands": list(s.starts),
              "kappa": s.config.loss.kappa,
              "rotations": s.config.bands.rotations, "metrics": scores,
              "start_metrics": start,
              "per_cluster": {k: v[0] for k, v in per.items()}}
    metrics_io.write_json(os.path.join(out, "eval.json"), result)
    logging.info("%s split, step %d: %s (start: %s)", sc.split, step,
                 scores, start)
  logging.info("Wrote %s", out)
  return result


def main(config, workdir: str, mode: str, step=None,
         allow_config_change: bool = False):
  """--mode=train / sample / eval of a molecular assembly config."""
  s = setup(config, workdir, mode, allow_config_change=allow_config_change)
  if mode == "train":
    return train(s)
  ckpt = checkpointing.Checkpointer(s.workdir, read_only=True)
  try:
    restored = ckpt.restore_latest(s.abstract_state, with_data=False,
                                   step=step)
  finally:
    ckpt.close()
  if restored is None:
    raise checkpointing.WorkdirError(
        f"no checkpoint in {s.workdir}: train first (the same command "
        "without --mode).")
  step, state, _ = restored
  return write_outputs(s, int(step), mode, _params(s, state))
