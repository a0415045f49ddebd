"""What every experiment script shares: the sizes, the command a user types,
the reuse of finished runs, the mean and spread, the tables.

Every number in docs/results/ comes from `python -m kflow_jax.main` (train,
--mode=eval / sample / restore / mix) or `python -m kflow_jax.tools.*`, run
here as subprocesses exactly as a user would type them, so the evidence
tests the product and not a library shortcut. Runs live under
ROOT/runs/<arm>/seed<k>/ (ROOT: --root of run_all, default
~/.cache/kflow_jax/experiments); a run whose last checkpoint exists is
reused, and every evaluation is kept as ROOT/runs/<arm>/seed<k>/evidence/
<tag>.json, so an interrupted `run_all` picks up where it stopped and a
second call only rewrites the tables.
"""
import contextlib
import fcntl
import glob
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from typing import NamedTuple, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "docs", "results")
COST_FILE = "commands.jsonl"
RESUME_EVERY = 200


class Scale(NamedTuple):
  """How big every experiment is (FULL for docs/results, QUICK for CI)."""
  name: str
  seeds: tuple                # seeds of the main comparison
  ablation_seeds: tuple       # seeds of the recipe ablations
  digits_budgets: tuple       # training steps evaluated (one run each)
  patches_budgets: tuple
  num_samples: int            # samples per evaluation
  num_steps: int              # sampler NFE of the main comparison
  classifier_steps: int
  restore_images: int
  mix_size: int               # mix grid rows = cols
  all_arms: bool              # False: the first two arms of each list
  extra_flags: tuple = ()     # appended to every training command
  # Before every arm's own overrides: the defaults this evidence was
  # gathered with, so that later changes of a shipped config (digits took
  # logit-normal t, then band I/O with logit-normal t per band, from
  # docs/results/recipe.md) neither break the reuse of
  # the runs nor change what a rerun from scratch reproduces.
  pinned: tuple = ("--config.loss.t_sampling=uniform",
                   "--config.path.hide_input=False",
                   "--config.path.project_output=False")
  # Only read what earlier calls produced: a run or score not there yet
  # raises Missing, and the tables show "-" for it (run_all --report).
  report_only: bool = False
  # MNIST-5k (experiments/mnist.py): training steps of its runs, which use
  # the shipped recipes (no pinning).
  mnist_budgets: tuple = (800,)


class Missing(Exception):
  """A run or score that a --report call does not produce."""


# Sized for a 2-core CPU (the committed run: 104 training runs, 3.5 to 5
# hours on 2 cores). Budgets are well below the shipped configs'
# (digits 2000, patches 3000 steps), so the numbers compare recipes at
# equal small compute, not converged models.
FULL = Scale(name="full", seeds=(0, 1, 2), ablation_seeds=(0,),
             digits_budgets=(400, 800), patches_budgets=(400, 800),
             num_samples=500, num_steps=40, classifier_steps=1000,
             restore_images=64, mix_size=6, all_arms=True)
# Toy size: every script end to end in CI, numbers meaningless.
QUICK = Scale(name="quick", seeds=(0,), ablation_seeds=(0,),
              digits_budgets=(4,), patches_budgets=(4,), num_samples=16,
              num_steps=8, classifier_steps=20, restore_images=4,
              mix_size=2, all_arms=False, mnist_budgets=(4,),
              extra_flags=("--config.batch_size=8",
                           "--config.optim.warmup_steps=1",
                           "--config.path.energy_examples=16",
                           "--config.pca_examples=64"))


def arms(scale: Scale, items: Sequence) -> list:
  return list(items) if scale.all_arms else list(items)[:2]


def env() -> dict:
  """The subprocesses' environment: the repository on the path, one CPU
  device per process (no fake devices: they only slow a 2-core machine)
  and a persistent compilation cache shared by all runs, since the same
  programs compile again in every one of them."""
  e = dict(os.environ)
  e["PYTHONPATH"] = REPO + os.pathsep + e.get("PYTHONPATH", "")
  e.setdefault("JAX_PLATFORMS", "cpu")
  if e["JAX_PLATFORMS"] == "cpu":
    e["XLA_FLAGS"] = ""
  e.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.expanduser(
      "~/.cache/kflow_jax/jax_cache"))
  e.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
  return e


def command(args: Sequence[str], log: str) -> float:
  """Runs `python <args>` in the repository; output to `log`. Returns the
  wall time; a failure raises with the end of the log."""
  os.makedirs(os.path.dirname(log), exist_ok=True)
  start = time.time()
  with open(log, "a") as fh:
    fh.write("\n$ python " + " ".join(args) + "\n")
    fh.flush()
    p = subprocess.run([sys.executable, *args], cwd=REPO, env=env(),
                       stdout=fh, stderr=subprocess.STDOUT)
  if p.returncode:
    with open(log) as fh:
      tail = fh.read()[-3000:]
    raise RuntimeError(f"python {' '.join(args)} failed ({p.returncode}); "
                       f"log {log}:\n{tail}")
  seconds = time.time() - start
  # Every finished command's wall time, kept beside its log, so the cost of
  # the evidence is measured even when it was gathered over several calls.
  with open(os.path.join(os.path.dirname(log), COST_FILE), "a") as fh:
    fh.write(json.dumps({"args": list(args), "seconds": seconds}) + "\n")
  return seconds


def measured_cost(root: str) -> dict:
  """Wall time of every command the evidence under `root` ran (all calls,
  from the COST_FILEs beside the logs): total seconds and the count."""
  total, count = 0.0, 0
  for d, _, files in os.walk(root):
    if COST_FILE in files:
      with open(os.path.join(d, COST_FILE)) as fh:
        for line in fh:
          total += float(json.loads(line)["seconds"])
          count += 1
  return {"seconds": total, "commands": count}


class Run(NamedTuple):
  """A trained run: what `--config` and overrides it was trained with."""
  name: str
  config: str          # e.g. configs/digits.py:transform=fourier
  overrides: tuple     # --config.<key>=<value> flags of the model
  seed: int
  workdir: str

  def flags(self) -> list:
    return [f"--config={self.config}", f"--workdir={self.workdir}",
            *self.overrides, f"--config.seed={self.seed}"]


@contextlib.contextmanager
def _locked(workdir: str):
  """Holds an exclusive lock on a run's workdir, so that several experiment
  processes (e.g. quality and recipe at once on a bigger machine) never
  train or score the same run together: the second waits, then finds the
  first one's result and reuses it."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, ".experiments.lock"), "w") as fh:
    fcntl.flock(fh, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(fh, fcntl.LOCK_UN)


# What train() sets on the command line; a stored config.json holds them,
# an arm's resolved config does not (total_steps is compared on its own).
TRAIN_KEYS = ("total_steps", "checkpoint_every_steps", "keep_checkpoints",
              "log_every_steps", "sample_every_steps", "sample.at_end")


def resolved_config(run: Run) -> dict:
  """The config `run.flags()` resolves to, read the way kflow_jax.main
  reads it (ml_collections only: nothing is built), as a dict."""
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  # Config paths are relative to the repository.
  argv = ["experiments", f"--config={os.path.join(REPO, run.config)}",
          *run.overrides, f"--config.seed={run.seed}"]
  values = absl_flags.FlagValues()
  # sys_argv: the overrides are found in it when the flag is defined.
  config_flags.DEFINE_config_file("config", None, "", flag_values=values,
                                  sys_argv=argv)
  values(argv)
  return json.loads(values.config.to_json(sort_keys=True))


def training_hash(config: dict, total_steps: int) -> str:
  """sha256 of what a run trains: its config without the keys train() sets
  and without newer keys at the default they were added with
  (config_lib.without_added_defaults: the hash of a run made before a key
  existed does not move when it is added), with total_steps (the cosine
  schedule's length) put back."""
  from kflow_jax import config_lib  # pylint: disable=g-import-not-at-top
  flat = config_lib.without_added_defaults(config_lib.flatten(config))
  kept = {k: v for k, v in flat.items() if k not in TRAIN_KEYS}
  kept["total_steps"] = int(total_steps)
  text = json.dumps(kept, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()


def _same_config_run(root: str, run: Run, total_steps: int) -> Run:
  """`run`, or an earlier arm's run when both train the same config: such
  arms cannot differ, so they share one run (and reports say "same
  config", never an effect). The runs are found by the config.json each
  workdir under ROOT/runs holds (training_hash), so no index can go stale
  when a key is added; a run already started in the arm's own workdir is
  its own."""
  own = os.path.join(run.workdir, "config.json")
  if os.path.exists(own):
    return run
  want = training_hash(resolved_config(run), total_steps)
  with _locked(root):
    for f in sorted(glob.glob(os.path.join(root, "runs", "*", "*",
                                           "config.json"))):
      with open(f) as fh:
        stored = json.load(fh)
      if training_hash(stored, stored.get("total_steps", 0)) == want:
        return run._replace(workdir=os.path.dirname(f))
  return run


def same_run(a: "Run", b: "Run") -> bool:
  """True when two arms resolved to one config and so share a run."""
  return a is not None and b is not None and a.workdir == b.workdir


def arm_run(root: str, scale: Scale, name: str, config: str,
            overrides: Sequence[str], seed: int) -> Run:
  """Arm `name` on `seed` as train() runs it, in its own workdir (before
  an earlier arm's run of the same config is found)."""
  return Run(name, config, tuple(scale.pinned) + tuple(overrides) +
             tuple(scale.extra_flags), seed,
             os.path.join(root, "runs", name, f"seed{seed}"))


def carry_records(previous: dict, per_seed: dict, hashes: dict,
                  keys: Sequence[str]) -> dict:
  """Seed records of a result file kept across machines.

  A run directory does not outlive its machine; the result file does. For
  each arm and seed: a record measured now gets its run's training hash
  and, where the previous result file holds one of the same hash, the
  check that it reproduced it (`reproduced`: True when every key in
  `keys` is bit-identical, else {key: [before, now]}); a seed with no
  run now takes the previous record when its hash is the arm's or it has
  none (records made before they held one), marked `carried`. A record of
  another hash is never carried: that config trains a different run.
  Returns {arm: [record per seed]}."""
  out = {}
  for name, records in per_seed.items():
    out[name] = []
    for k, rec in enumerate(records):
      before = (previous.get(name) or [])
      old = dict(before[k]) if k < len(before) and before[k] else {}
      if old.get("run_hash") not in (None, hashes[name][k]):
        old = {}
      if rec:
        rec = dict(rec, run_hash=hashes[name][k])
        shared = [m for m in keys if m in old and m in rec]
        if shared:
          diff = {m: [old[m], rec[m]] for m in shared if old[m] != rec[m]}
          rec["reproduced"] = diff or True
      elif old:
        # `reproduced` stays: what the last retraining of this seed showed.
        rec = dict(old, carried=True)
      out[name].append(rec)
  return out


def provenance(per_seed: dict, labels: dict, seeds, result: str) -> list:
  """The page section saying which seeds were measured by this call and
  which carried (carry_records), and whether the re-measured ones
  reproduced their previous record; `labels` {arm: row label}."""
  rows = []
  for name, label in labels.items():
    cells = []
    for seed, rec in zip(seeds, per_seed[name]):
      if not rec:
        cells.append(f"seed {seed}: -")
      elif rec.get("carried"):
        again = rec.get("reproduced")
        cells.append(f"seed {seed}: carried" + (
            "" if again is None else
            " (reproduced bit for bit when last trained again)"
            if again is True else
            " (when last trained again it differed from its record)"))
      elif rec.get("reproduced") is True:
        cells.append(f"seed {seed}: measured, reproduced bit for bit")
      elif rec.get("reproduced"):
        d = ", ".join(f"{m} {a:.6g} -> {b:.6g}"
                      for m, (a, b) in rec["reproduced"].items())
        cells.append(f"seed {seed}: measured, differs from before ({d})")
      else:
        cells.append(f"seed {seed}: measured")
    rows.append([label, "; ".join(cells)])
  return ["## Where each seed's numbers come from", "",
          "Run directories do not outlive the machine they were trained on; "
          "the result file does. A seed whose run is not on this machine "
          f"keeps its record from the previous `{result}` (carried) when "
          "that record has the arm's training hash or predates hashes; a "
          "seed trained again is compared with its previous record.", "",
          table(["arm", "seeds"], rows), ""]


def previous_result(out_dir: str, name: str, scale: Scale) -> dict:
  """The result file `name`.json in out_dir when it was written at this
  scale ({} otherwise)."""
  f = os.path.join(out_dir, name + ".json")
  if not os.path.exists(f):
    return {}
  with open(f) as fh:
    data = json.load(fh)
  return data if data.get("scale", {}).get("name") == scale.name else {}


def train(root: str, scale: Scale, name: str, config: str,
          overrides: Sequence[str], seed: int, budgets: Sequence[int]) -> Run:
  """Trains (or reuses) arm `name` with `seed`, keeping a checkpoint at
  every budget (one run: the shorter budgets are its earlier checkpoints,
  mid-way through the learning-rate schedule of the longest). An arm whose
  resolved config equals an earlier arm's gets that arm's run."""
  run = arm_run(root, scale, name, config, overrides, seed)
  final = max(budgets)
  run = _same_config_run(root, run, final)
  wd = run.workdir
  done = os.path.join(wd, "checkpoints", str(final))
  if os.path.isdir(done):
    return run
  if scale.report_only:
    raise Missing(f"{wd} has no checkpoint {final}")
  # A checkpoint at every budget, and at least every RESUME_EVERY steps:
  # a run killed part-way (a session's end) resumes from its last one
  # instead of starting again (the relaunch runs the same command).
  every = math.gcd(RESUME_EVERY, *[int(b) for b in budgets])
  with _locked(wd):
    if not os.path.isdir(done):
      command(["-m", "kflow_jax.main", *run.flags(),
               f"--config.total_steps={final}",
               f"--config.checkpoint_every_steps={every}",
               f"--config.keep_checkpoints={final // every}",
               f"--config.log_every_steps={min(50, final)}",
               "--config.sample_every_steps=0",
               "--config.sample.at_end=False"],
              os.path.join(wd, "train.log"))
  return run


def _cached(run: Run, tag: str, make, report_only: bool = False) -> dict:
  f = os.path.join(run.workdir, "evidence", tag + ".json")
  if report_only and not os.path.exists(f):
    raise Missing(f)
  with _locked(run.workdir):
    if os.path.exists(f):
      with open(f) as fh:
        return json.load(fh)
    out = make()
    os.makedirs(os.path.dirname(f), exist_ok=True)
    with open(f + ".tmp", "w") as fh:
      json.dump(out, fh, indent=1)
    os.replace(f + ".tmp", f)
  return out


def _sample_flags(scale: Scale, sample: dict) -> list:
  opts = dict(num_samples=scale.num_samples,
              batch_size=min(scale.num_samples, 250),
              num_steps=scale.num_steps)
  opts.update(sample)
  return [f"--config.sample.{k}={v}" for k, v in opts.items()]


def evaluate(run: Run, scale: Scale, step: int, tag: str, *,
             sample: dict = None, classifier: str = "",
             metrics: str = "cheap") -> dict:
  """--mode=eval of checkpoint `step` with config.sample options `sample`;
  returns eval.json's metrics plus the sampler's NFE."""
  def make():
    flags = run.flags() + ["--mode=eval", f"--step={step}",
                           f"--config.evals.metrics={metrics}",
                           *_sample_flags(scale, sample or {})]
    if classifier:
      flags.append(f"--config.evals.classifier={classifier}")
    seconds = command(["-m", "kflow_jax.main", *flags],
                      os.path.join(run.workdir, "eval.log"))
    with open(os.path.join(run.workdir, "eval.json")) as fh:
      ev = json.load(fh)
    out = dict(ev["metrics"], step=int(ev["checkpoint_step"]),
               seconds=seconds, samples=ev.get("samples"))
    out["nfe"] = (ev.get("sampler") or {}).get("nfe_mean")
    return out
  return _cached(run, f"eval_{tag}_step{step}", make, scale.report_only)


def steer(run: Run, scale: Scale, step: int, mode: str, tag: str,
          restore: dict, sample: dict = None, flags: Sequence[str] = ()
          ) -> dict:
  """--mode=restore / mix of checkpoint `step`: the JSON the mode writes
  (its PNG next to it). `flags`: more command-line flags (e.g. the
  classifier that scores the restored sets)."""
  def make():
    out_dir = os.path.join(run.workdir, f"{mode}_mode")
    before = set(os.listdir(out_dir)) if os.path.isdir(out_dir) else set()
    args = run.flags() + [f"--mode={mode}", f"--step={step}",
                           *_sample_flags(scale, sample or {})]
    args += [f"--config.restore.{k}={v}" for k, v in restore.items()]
    args += list(flags)
    command(["-m", "kflow_jax.main", *args],
            os.path.join(run.workdir, f"{mode}.log"))
    new = sorted(f for f in set(os.listdir(out_dir)) - before
                 if f.endswith(".json"))
    if not new:  # the same file as an earlier call: rewritten in place
      new = sorted(f for f in os.listdir(out_dir) if f.endswith(".json"))
    with open(os.path.join(out_dir, new[-1])) as fh:
      out = json.load(fh)
    out["png"] = os.path.join(out_dir, new[-1][:-5] + ".png")
    return out
  return _cached(run, f"{mode}_{tag}_step{step}", make, scale.report_only)


def sample(run: Run, scale: Scale, step: int, tag: str,
           sample_opts: dict) -> dict:
  """--mode=sample of checkpoint `step` with config.sample options
  `sample_opts`: {"dir": the sample set's directory, "seconds"}."""
  def make():
    out_dir = os.path.join(run.workdir, "sample_mode")
    before = set(os.listdir(out_dir)) if os.path.isdir(out_dir) else set()
    args = run.flags() + ["--mode=sample", f"--step={step}",
                          *_sample_flags(scale, sample_opts)]
    seconds = command(["-m", "kflow_jax.main", *args],
                      os.path.join(run.workdir, "sample.log"))
    new = sorted(set(os.listdir(out_dir)) - before)
    if len(new) != 1:
      raise RuntimeError(
          f"--mode=sample of {run.workdir} made {new} in {out_dir}; "
          "expected one new sample set (an earlier set with the same tag "
          "is resumed in place: remove it to sample again).")
    return {"dir": os.path.join(out_dir, new[0]), "seconds": seconds}
  return _cached(run, f"sample_{tag}_step{step}", make, scale.report_only)


def classifier(root: str, scale: Scale, dataset: str = "digits") -> str:
  """The classifier of the FD and class accuracy on `dataset`, trained
  once by the tool a user runs."""
  out = os.path.join(root,
                     f"{dataset}_classifier_{scale.classifier_steps}.npz")
  if not os.path.exists(out) and not scale.report_only:
    command(["-m", "kflow_jax.tools.train_classifier", f"--dataset={dataset}",
             f"--out={out}", f"--steps={scale.classifier_steps}"],
            os.path.join(root, f"{dataset}_classifier.log"))
  return out


# ----------------------------------------------------------------------------
# Numbers and tables.


def attempt(fn, *args, **kwargs):
  """fn(...) or None when it is Missing (a --report call)."""
  try:
    return fn(*args, **kwargs)
  except Missing:
    return None


def mean_std(values) -> dict:
  v = np.asarray([x for x in values if x is not None], np.float64)
  if v.size == 0:
    return {"mean": None, "std": None, "n": 0}
  return {"mean": float(v.mean()),
          "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
          "n": int(v.size)}


def fmt(stat: dict, digits: int = 3) -> str:
  """'mean ± std' (n seeds); '-' without data."""
  if not stat or stat.get("mean") is None:
    return "-"
  m, s = stat["mean"], stat["std"]
  f = f"{{:.{digits}g}}"
  return (f.format(m) if stat["n"] < 2
          else f"{f.format(m)} ± {f.format(s)}")


def table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
  lines = ["| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
  return "\n".join(lines)


def write_result(out_dir: str, name: str, markdown: str, data: dict,
                 page: str = None) -> str:
  """docs/results/<name>.json (the numbers) and <page or name>.md (the page
  written from them: a page named for its topic may be written by a script
  named for its claim). A NaN or infinity is refused (allow_nan=False): a
  missing number is None, and a non-finite score is a failed run to look
  at, not a table cell."""
  os.makedirs(out_dir, exist_ok=True)
  text = json.dumps(data, indent=1, sort_keys=True, allow_nan=False)
  with open(os.path.join(out_dir, name + ".json"), "w") as fh:
    fh.write(text)
  path = os.path.join(out_dir, (page or name) + ".md")
  with open(path, "w") as fh:
    fh.write(markdown.rstrip() + "\n")
  return path


def copy_figure(src: str, out_dir: str, name: str) -> str:
  """Copies a PNG a run wrote into the results; returns its file name."""
  os.makedirs(out_dir, exist_ok=True)
  shutil.copyfile(src, os.path.join(out_dir, name))
  return name


def plot(out_dir: str, name: str, series: dict, xlabel: str, ylabel: str,
         title: str, logx: bool = False) -> str:
  """A line plot of {label: (x, mean, std)}; returns the file name.
  matplotlib comes with the `test` extra (experiments are a developer
  tool, not a runtime need)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5, 3.4), dpi=110)
  for label, (x, m, s) in series.items():
    nan = lambda a: [np.nan if v is None else v for v in a]
    x, m, s = (np.asarray(nan(a), np.float64) for a in (x, m, s))
    ax.plot(x, m, marker="o", label=label)
    if np.any(s > 0):
      ax.fill_between(x, m - s, m + s, alpha=0.2)
  if logx:
    ax.set_xscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(out_dir, exist_ok=True)
  fig.savefig(os.path.join(out_dir, name))
  plt.close(fig)
  return name


def parse(argv=None, carries: bool = False):
  """--quick (toy size, results under ROOT/results: the committed
  docs/results are never overwritten by toy numbers), --root, --out.
  `carries`: the script keeps its seed records when their runs are gone
  (carry_records), so its --report may run on a ROOT without runs."""
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true",
                 help="toy size (CI): every script end to end in minutes")
  p.add_argument("--root", default=None,
                 help="runs and caches (default ~/.cache/kflow_jax/"
                      "experiments[_quick])")
  p.add_argument("--report", action="store_true",
                 help="write the tables from the runs and scores already "
                      "under ROOT; train and score nothing (missing: '-')")
  p.add_argument("--out", default=None,
                 help="tables and figures (default docs/results; with "
                      "--quick ROOT/results)")
  a = p.parse_args(argv)
  scale = (QUICK if a.quick else FULL)._replace(report_only=a.report)
  root = os.path.abspath(os.path.expanduser(a.root or (
      "~/.cache/kflow_jax/experiments" + ("_quick" if a.quick else ""))))
  out = os.path.abspath(a.out or (os.path.join(root, "results") if a.quick
                                  else RESULTS))
  # Run directories do not outlive their machine; the result files do. A
  # --report over a ROOT without runs would turn every number of the
  # pages in OUT into "-".
  if (a.report and not carries
      and not os.path.isdir(os.path.join(root, "runs"))
      and glob.glob(os.path.join(out, "*.json"))):
    p.error(f"--report with --root={root}, which holds no runs, would "
            f"replace the numbers of the result files in {out} with '-'. "
            "Point --root at the runs those pages were made from, or write "
            "the tables elsewhere with --out=DIR.")
  return scale, root, out


def main(run_fn, argv=None, carries: bool = False):
  scale, root, out = parse(argv, carries)
  start = time.time()
  run_fn(scale, root, out)
  print(f"{run_fn.__module__}: {scale.name} scale done in "
        f"{time.time() - start:.0f} s; results in {out}")
