r"""A grid of kflow_jax runs: the cartesian product of config overrides.

  python -m launch.sweep --sweep="transform.name=fourier,wavelet;seed=0,1,2" \
      --workdir_root=/shared/runs/digits -- --config=configs/digits_fourier.py

runs the 6 combinations one after another on this machine, each with its
own workdir named after its overrides (e.g. .../transform.name-fourier_seed-0)
and `--config.transform.name=fourier --config.seed=0`. Rerunning the same
sweep resumes every run from its newest checkpoint (finished runs end at
once). `;` separates keys, `,` the values of a key; a key starting with --
is a plain flag (`--mode=sample,eval`), any other one a config key.

  --launcher=local   (default) run each command here, in sequence
  --launcher=slurm   sbatch launch/slurm_gpu.sh per run (--launcher_args:
                     sbatch flags, e.g. "--nodes=2 --gpus-per-node=8")
  --launcher=tpu     launch/tpu_pod.sh run per run, in sequence (each waits
                     for its run to end; --launcher_args: "--name=kf
                     --zone=us-central2-b"); --workdir_root must be gs://
  --dry-run          print the commands, run none
  --keep_going       continue after a failed run (default: stop)
  --command          the local command (default: this python -m
                     kflow_jax.main), e.g. a wrapper script

The expansion (expand, run_name, plan) is pure, for tests and notebooks.
"""
import argparse
import hashlib
import itertools
import os
import re
import shlex
import subprocess
import sys
from typing import NamedTuple

LAUNCHERS = ("local", "slurm", "tpu")
# slurm and tpu commands run from here: their launch/ paths are relative,
# and config paths are resolved in the repository on the nodes anyway.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Run(NamedTuple):
  name: str
  workdir: str
  overrides: dict[str, str]
  command: list[str]


def parse_sweep(spec: str) -> list[tuple[str, list[str]]]:
  """"a=1,2;b=x" -> [("a", ["1", "2"]), ("b", ["x"])], checked."""
  axes = []
  for part in spec.split(";"):
    part = part.strip()
    if not part:
      continue
    key, sep, values = part.partition("=")
    key = key.strip()
    if not sep or not key:
      raise ValueError(f"sweep item {part!r} is not KEY=V1,V2,...")
    vals = [v.strip() for v in values.split(",")]
    if any(not v for v in vals):
      raise ValueError(f"sweep item {part!r} has an empty value.")
    if len(set(vals)) != len(vals):
      raise ValueError(f"sweep item {part!r} repeats a value.")
    if key in (k for k, _ in axes):
      raise ValueError(f"sweep key {key!r} appears twice.")
    axes.append((key, vals))
  if not axes:
    raise ValueError("empty sweep; give e.g. --sweep='seed=0,1,2'.")
  return axes


def expand(spec: str) -> list[dict[str, str]]:
  """All combinations, the last key varying fastest."""
  axes = parse_sweep(spec)
  keys = [k for k, _ in axes]
  return [dict(zip(keys, combo))
          for combo in itertools.product(*(v for _, v in axes))]


def to_flag(key: str, value: str) -> str:
  if key.startswith("-"):
    return f"{key}={value}"
  if key.startswith("config."):
    key = key[len("config."):]
  return f"--config.{key}={value}"


def run_name(overrides: dict[str, str]) -> str:
  """A directory name from the overrides: key-value pairs joined by _."""
  parts = []
  for key, value in overrides.items():
    key = key.lstrip("-")
    if key.startswith("config."):
      key = key[len("config."):]
    parts.append(f"{key}-{value}")
  return re.sub(r"[^A-Za-z0-9._=+-]", "-", "_".join(parts))


def _join(root: str, name: str) -> str:
  return root.rstrip("/") + "/" + name


def plan(spec: str, workdir_root: str, flags: list[str], *,
         launcher: str = "local", launcher_args: list[str] = (),
         command: list[str] = (sys.executable, "-m", "kflow_jax.main"),
         ) -> list[Run]:
  """The runs of a sweep with their commands; runs nothing."""
  if launcher not in LAUNCHERS:
    raise ValueError(f"launcher {launcher!r} is not one of {LAUNCHERS}.")
  if not workdir_root:
    raise ValueError("no --workdir_root: the runs' workdirs go under it.")
  if any(f == "--workdir" or f.startswith("--workdir=") for f in flags):
    raise ValueError("pass --workdir_root, not --workdir: every run gets "
                     "its own workdir under it.")
  if launcher == "tpu" and not workdir_root.startswith("gs://"):
    raise ValueError(f"--workdir_root={workdir_root} is not on GCS; TPU "
                     "pods need gs://BUCKET/... (see launch/tpu_pod.sh).")
  combos = expand(spec)
  names = [run_name(o) for o in combos]
  # Sanitizing can map different values to one name: those get a hash of
  # their overrides so that no two runs share a workdir.
  seen = {n: names.count(n) for n in names}
  names = [n if seen[n] == 1 else n + "-" + hashlib.sha1(
      repr(sorted(o.items())).encode()).hexdigest()[:8]
           for n, o in zip(names, combos)]
  runs = []
  for name, overrides in zip(names, combos):
    workdir = _join(workdir_root, name)
    main_flags = [*flags, f"--workdir={workdir}",
                  *(to_flag(k, v) for k, v in overrides.items())]
    if launcher == "local":
      cmd = [*command, *main_flags]
    elif launcher == "slurm":
      cmd = ["sbatch", f"--job-name=kflow-{name}", *launcher_args,
             "launch/slurm_gpu.sh", *main_flags]
    else:
      cmd = ["launch/tpu_pod.sh", "run", *launcher_args, "--", *main_flags]
    runs.append(Run(name, workdir, overrides, cmd))
  assert len({r.workdir for r in runs}) == len(runs)
  return runs


def main(argv: list[str]) -> int:
  if "--" in argv:
    i = argv.index("--")
    argv, flags = argv[:i], argv[i + 1:]
  else:
    flags = []
  parser = argparse.ArgumentParser(
      prog="python -m launch.sweep", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
      usage="%(prog)s --sweep=SPEC --workdir_root=DIR [options] -- "
            "--config=configs/NAME.py [kflow_jax flags]")
  parser.add_argument("--sweep", required=True)
  parser.add_argument("--workdir_root", required=True)
  parser.add_argument("--launcher", choices=LAUNCHERS, default="local")
  parser.add_argument("--launcher_args", default="",
                      help="extra launcher flags, one shell-quoted string")
  parser.add_argument("--command", default=None,
                      help="local launcher: the command instead of "
                      "python -m kflow_jax.main")
  parser.add_argument("--dry-run", "--dry_run", dest="dry_run",
                      action="store_true")
  parser.add_argument("--keep_going", action="store_true",
                      help="continue after a failed run")
  args = parser.parse_args(argv)
  if not any(f.startswith("--config=") or f == "--config" for f in flags):
    parser.error("no kflow_jax flags after --; need at least "
                 "-- --config=configs/NAME.py")
  command = (shlex.split(args.command) if args.command
             else [sys.executable, "-m", "kflow_jax.main"])
  try:
    runs = plan(args.sweep, args.workdir_root, flags,
                launcher=args.launcher,
                launcher_args=shlex.split(args.launcher_args),
                command=command)
  except ValueError as e:
    parser.error(str(e))
  failed = []
  for i, run in enumerate(runs):
    print(f"# [{i + 1}/{len(runs)}] {run.name}", flush=True)
    print(shlex.join(run.command), flush=True)
    if args.dry_run:
      continue
    rc = subprocess.call(run.command,
                         cwd=None if args.launcher == "local" else REPO)
    if rc != 0:
      print(f"# {run.name} failed (exit {rc})", file=sys.stderr, flush=True)
      failed.append(run.name)
      if not args.keep_going:
        break
  if failed:
    print(f"# failed: {' '.join(failed)}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
