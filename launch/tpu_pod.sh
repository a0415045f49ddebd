#!/usr/bin/env bash
# kflow_jax on a Cloud TPU VM slice, from a bare GCP project.
#
# usage: launch/tpu_pod.sh SUBCOMMAND [options] [-- kflow_jax flags]
#
#   create    make the slice:  --name --zone --accelerator-type=v4-64
#             [--version=RUNTIME] [--spot | --preemptible]
#   install   on every worker: the code (a tarball of this checkout, or
#             --git-url=URL [--ref=REF]) into --remote-dir, a venv with
#             pip install -e . and jax[tpu] at the version setup.py pins
#   run       the same command on every worker, detached, with --distributed;
#             logs to ~/kflow_logs/ on each worker; streams worker 0's log
#             until the run ends (Ctrl-C stops the streaming, not the run;
#             --no-stream returns at once). Needs --workdir=gs://...
#   logs      stream worker 0's log (--worker=N for another)
#   stop      SIGTERM the run on every worker (it saves a checkpoint first)
#   relaunch  after preemption: recreate the slice if it is gone or not
#             READY, reinstall, rerun: the run resumes from its newest
#             checkpoint in the gs:// workdir. Takes the create, install and
#             run options; idempotent, so it also does a first launch.
#   status    the slice's state and health, and what runs on each worker
#   delete    delete the slice (--yes: without asking)
#
# Options (--opt=value or --opt value; also from the environment in caps):
#   --name=NAME (TPU_NAME)  --zone=ZONE (ZONE)  --project=ID (PROJECT)
#   --accelerator-type=TYPE  e.g. v4-64, v5p-64, v5litepod-64, v6e-64
#   --version=RUNTIME        TPU software version; default by generation:
#                            tpu-ubuntu2204-base (v4), v2-alpha-tpuv5 (v5p),
#                            v2-alpha-tpuv5-lite (v5e), v2-alpha-tpuv6e (v6e)
#   --spot | --preemptible   cheaper, can be preempted (then: relaunch)
#   --git-url=URL --ref=REF  install from git (REF: branch, tag or commit;
#                            default the local HEAD commit); without
#                            --git-url a tarball of this checkout (tracked
#                            and untracked, not ignored, files) is copied
#   --remote-dir=DIR (~/kflow_jax)  --venv=DIR (~/kflow_venv)
#   --python=EXE (python3)   python that creates the venv on the workers
#   --jax-version=X          jax[tpu] version (default: setup.py's pin)
#   --worker=N (0)           logs: which worker
#   --no-stream              run: do not stream the log
#   --yes                    delete: do not ask
#   --dry-run                print every gcloud (and local) command, run none
#
# Example:
#   launch/tpu_pod.sh create --name=kf --zone=us-central2-b \
#       --accelerator-type=v4-64 --spot
#   launch/tpu_pod.sh install --name=kf --zone=us-central2-b
#   launch/tpu_pod.sh run --name=kf --zone=us-central2-b -- \
#       --config=configs/imagenet.py \
#       --config.input.path=gs://BUCKET/imagenet256_latents \
#       --workdir=gs://BUCKET/runs/imagenet_fourier
#   # preempted? the same options, subcommand relaunch:
#   launch/tpu_pod.sh relaunch --name=kf --zone=us-central2-b \
#       --accelerator-type=v4-64 --spot -- --config=... --workdir=gs://...
#
# The old form `tpu_pod.sh TPU_NAME ZONE --config=... --workdir=gs://...`
# still works and means `run --name=TPU_NAME --zone=ZONE -- ...`.
set -euo pipefail

readonly LIBTPU_FIND_LINKS=https://storage.googleapis.com/jax-releases/libtpu_releases.html
# Where a run keeps its state on each worker ($HOME there, not here).
readonly R_PID=\$HOME/kflow_jax.pid
readonly R_EXIT=\$HOME/kflow_jax.exit
readonly R_LOG=\$HOME/kflow_jax.log

NAME=${TPU_NAME:-}
ZONE=${ZONE:-}
PROJECT=${PROJECT:-}
ACCEL=""
RUNTIME=""
PRICING=""
GIT_URL=""
REF=""
# Expanded on the workers (remote_path), not here.
# shellcheck disable=SC2088
REMOTE_DIR='~/kflow_jax'
# shellcheck disable=SC2088
VENV='~/kflow_venv'
PYTHON=python3
JAX_VERSION=""
WORKER=0
STREAM=1
YES=0
DRY_RUN=0
MAIN_ARGS=()
REPO=$(cd "$(dirname "$0")/.." && pwd)

die() {
  echo "tpu_pod.sh: error: $*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit "${1:-0}"
}

# Shell-quotes one word only when it needs it, so that dry-run output is
# readable and can still be pasted into a shell.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  elif [[ $1 =~ ^(--[a-z-]+=)(.*)$ ]]; then
    # --flag='value': quote the value only.
    printf '%s' "${BASH_REMATCH[1]}"
    quote "${BASH_REMATCH[2]}"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Runs a command, or prints it under --dry-run.
run_cmd() {
  if [[ $DRY_RUN -eq 1 ]]; then
    local out="" w
    for w in "$@"; do out+="$(quote "$w") "; done
    echo "${out% }"
  else
    "$@"
  fi
}

gcloud_tpu() {
  local sub=$1
  shift
  local args=(gcloud compute tpus tpu-vm "$sub" "$NAME" --zone="$ZONE")
  [[ -n $PROJECT ]] && args+=(--project="$PROJECT")
  run_cmd "${args[@]}" "$@"
}

# `~/x` -> `$HOME/x`: the remote shell expands $HOME inside double quotes,
# where a tilde would stay literal.
remote_path() {
  [[ $1 =~ ^[A-Za-z0-9_./~+-]+$ ]] ||
    die "remote path '$1': use letters, digits and ._/~+- only."
  if [[ $1 == \~/* ]]; then
    printf '%s' "\$HOME/${1#\~/}"
  else
    printf '%s' "$1"
  fi
}

need_name_zone() {
  [[ -n $NAME ]] || die "no slice name. Fix: --name=NAME (or TPU_NAME=...)."
  [[ -n $ZONE ]] || die "no zone. Fix: --zone=ZONE, e.g. us-central2-b" \
    "(v4), us-east5-a (v5p), us-east5-b (v6e) (or ZONE=...)."
}

default_runtime() {
  case $1 in
    v4-*) echo tpu-ubuntu2204-base ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) return 1 ;;
  esac
}

cmd_create() {
  need_name_zone
  [[ -n $ACCEL ]] || die "no accelerator type. Fix: --accelerator-type=" \
    "v4-64 (or v5p-64, v5litepod-64, v6e-64; list them with: gcloud" \
    "compute tpus accelerator-types list --zone=$ZONE)."
  local runtime=$RUNTIME
  if [[ -z $runtime ]]; then
    runtime=$(default_runtime "$ACCEL") || die "no default TPU software" \
      "version for '$ACCEL'. Fix: --version=RUNTIME (list: gcloud compute" \
      "tpus versions list --zone=$ZONE)."
  fi
  local extra=()
  [[ -n $PRICING ]] && extra+=("$PRICING")
  gcloud_tpu create --accelerator-type="$ACCEL" --version="$runtime" \
    ${extra[@]+"${extra[@]}"}
}

# The script install runs on every worker: code, venv, jax[tpu].
install_script() {
  local dir venv
  dir=$(remote_path "$REMOTE_DIR")
  venv=$(remote_path "$VENV")
  local s="set -euo pipefail; "
  if [[ -n $GIT_URL ]]; then
    # fetch + checkout FETCH_HEAD takes a branch, a tag or a commit alike,
    # and updates an existing clone (relaunch) in place.
    s+="[ -d \"$dir/.git\" ] || git clone --quiet --no-checkout $(printf '%q' "$GIT_URL") \"$dir\"; "
    s+="git -C \"$dir\" fetch --quiet origin $(printf '%q' "$REF"); "
    s+="git -C \"$dir\" checkout --quiet --force FETCH_HEAD; "
  else
    s+="rm -rf \"$dir\"; mkdir -p \"$dir\"; tar -xzf \$HOME/kflow_src.tar.gz -C \"$dir\"; "
  fi
  # TPU VM images lack python3-venv on some Ubuntu versions.
  s+="[ -x \"$venv/bin/python\" ] || $PYTHON -m venv \"$venv\" || "
  s+="{ sudo apt-get update -qq && sudo apt-get install -y -qq python3-venv && $PYTHON -m venv \"$venv\"; }; "
  if [[ -n $JAX_VERSION ]]; then
    s+="jv=$(printf '%q' "$JAX_VERSION"); "
  else
    # The pin of the installed ref, read there: the right one for any ref.
    s+="jv=\$(sed -n 's/.*\"jax==\\([0-9.]*\\)\".*/\\1/p' \"$dir/setup.py\"); "
    s+="[ -n \"\$jv\" ] || { echo 'no jax pin in setup.py: pass --jax-version' >&2; exit 1; }; "
  fi
  s+="\"$venv/bin/pip\" install --quiet --upgrade pip; "
  s+="\"$venv/bin/pip\" install --quiet -e \"$dir\" \"jax[tpu]==\$jv\" -f $LIBTPU_FIND_LINKS; "
  s+="\"$venv/bin/python\" -c 'import jax, kflow_jax; print(jax.__version__)'"
  printf '%s' "$s"
}

cmd_install() {
  need_name_zone
  if [[ -n $GIT_URL ]]; then
    if [[ -z $REF ]]; then
      REF=$(git -C "$REPO" rev-parse HEAD) ||
        die "no --ref and no local git HEAD. Fix: --ref=BRANCH|TAG|COMMIT."
      echo "tpu_pod.sh: installing the local HEAD commit $REF (it must be" \
        "pushed to $GIT_URL)" >&2
    fi
  else
    # The checkout as it is, uncommitted edits included; .gitignore'd
    # files (venvs, workdirs, data) stay behind.
    local tarball=${TMPDIR:-/tmp}/kflow_src.$$.tar.gz
    if [[ $DRY_RUN -eq 1 ]]; then
      echo "(cd $(quote "$REPO") && git ls-files -z --cached --others" \
        "--exclude-standard | tar --null -T - -czf $(quote "$tarball"))"
    else
      (cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do
          # Tracked but deleted files would make tar fail.
          [[ -e $f ]] && printf '%s\0' "$f"
        done | tar --null -T - -czf "$tarball") ||
        die "could not pack $REPO (is it a git checkout?). Fix: --git-url=URL."
      # shellcheck disable=SC2064  # expanded now: tarball is local
      trap "rm -f $(printf '%q' "$tarball")" EXIT
    fi
    run_cmd gcloud compute tpus tpu-vm scp "$tarball" \
      "$NAME:kflow_src.tar.gz" --worker=all --zone="$ZONE" \
      ${PROJECT:+--project="$PROJECT"}
  fi
  gcloud_tpu ssh --worker=all --command="$(install_script)"
}

# Refuses flags that cannot work on a pod and a workdir that is not gs://.
check_main_args() {
  [[ ${#MAIN_ARGS[@]} -gt 0 ]] || die "no kflow_jax flags. Fix: append" \
    "-- --config=configs/NAME.py --workdir=gs://BUCKET/runs/NAME."
  local a workdir="" prev="" config=0
  for a in "${MAIN_ARGS[@]}"; do
    case $a in
      --workdir=*) workdir=${a#--workdir=} ;;
      --config=* | --config) config=1 ;;
      --num_processes* | --process_id* | --coordinator_address* | \
        --cpu_devices*)
        die "'$a' does not belong on a TPU pod: every worker runs with" \
          "--distributed and jax finds the topology itself. Fix: drop it." ;;
    esac
    [[ $prev == --workdir ]] && workdir=$a
    prev=$a
  done
  [[ $config -eq 1 ]] || die "no --config=... among the kflow_jax flags."
  [[ -n $workdir ]] || die "no --workdir among the kflow_jax flags. Fix:" \
    "--workdir=gs://BUCKET/runs/NAME."
  if [[ $workdir != gs://* ]]; then
    die "--workdir=$workdir is not on GCS. Each worker has its own disk, so" \
      "checkpoints would not be shared between workers nor survive a" \
      "preemption. Fix: --workdir=gs://BUCKET/runs/NAME (make a bucket in" \
      "the slice's region: gcloud storage buckets create gs://BUCKET" \
      "--location=REGION)."
  fi
}

# What `run` executes on each worker: refuse if a run is still going, else
# start python detached (setsid + nohup: it outlives the ssh session) with
# its output in a fresh log file that ~/kflow_jax.log points to, and record
# its pid and, when it ends, its exit status.
start_script() {
  local stamp=$1 dir venv log inner
  dir=$(remote_path "$REMOTE_DIR")
  venv=$(remote_path "$VENV")
  log="\$HOME/kflow_logs/kflow-$stamp.log"
  # $$ of this bash is the session (and process group) setsid made.
  inner="echo \$\$ > \"$R_PID\"; cd \"$dir\" && \"$venv/bin/python\" -m kflow_jax.main --distributed"
  inner+="$(printf ' %q' "${MAIN_ARGS[@]}"); echo \$? > \"$R_EXIT\""
  local s="set -eu; "
  s+="if [ -f \"$R_PID\" ] && kill -0 \"\$(cat \"$R_PID\")\" 2>/dev/null; then "
  s+="echo \"\$(hostname): a run is still going (pid \$(cat \"$R_PID\")). "
  s+="Stop it first: tpu_pod.sh stop\" >&2; exit 1; fi; "
  s+="mkdir -p \$HOME/kflow_logs; rm -f \"$R_EXIT\" \"$R_PID\"; "
  s+="ln -sfn \"$log\" \"$R_LOG\"; "
  s+="nohup setsid bash -c $(printf '%q' "$inner") > \"$log\" 2>&1 < /dev/null & "
  s+="echo \"\$(hostname): started, log $log\""
  printf '%s' "$s"
}

# Streams the log until the run ends (tail --pid), then exits with the
# run's status, so that `run` reports how training ended.
stream_script() {
  local s="pid=\$(cat \"$R_PID\" 2>/dev/null || echo 0); "
  s+="if kill -0 \"\$pid\" 2>/dev/null; then tail -n +1 -F --pid=\"\$pid\" \"$R_LOG\"; "
  s+="else tail -n 200 \"$R_LOG\"; fi; "
  s+="[ -f \"$R_EXIT\" ] && exit \"\$(cat \"$R_EXIT\")\"; exit 0"
  printf '%s' "$s"
}

cmd_run() {
  need_name_zone
  check_main_args
  gcloud_tpu ssh --worker=all --command="$(start_script "$(date -u +%Y%m%d-%H%M%S)")"
  if [[ $STREAM -eq 1 ]]; then
    WORKER=0
    cmd_logs
  fi
}

cmd_logs() {
  need_name_zone
  gcloud_tpu ssh --worker="$WORKER" --command="$(stream_script)"
}

# SIGTERM to the run on every worker, then wait (up to 10 minutes) until
# it has written its checkpoint and exited, so that the TPUs are free.
stop_script() {
  local s="pid=\$(cat \"$R_PID\" 2>/dev/null || echo 0); "
  s+="if [ \"\$pid\" -gt 0 ] && kill -0 \"\$pid\" 2>/dev/null; then "
  # The negative pid is setsid's process group: bash and python both.
  s+="kill -TERM -- -\"\$pid\"; echo \"\$(hostname): sent SIGTERM, waiting\"; "
  s+="i=0; while kill -0 \"\$pid\" 2>/dev/null && [ \$i -lt 600 ]; do sleep 1; i=\$((i+1)); done; "
  s+="if kill -0 \"\$pid\" 2>/dev/null; then echo \"\$(hostname): still running\" >&2; exit 1; fi; "
  s+="echo \"\$(hostname): stopped\"; else echo \"\$(hostname): no run\"; fi"
  printf '%s' "$s"
}

cmd_stop() {
  need_name_zone
  gcloud_tpu ssh --worker=all --command="$(stop_script)"
}

cmd_status() {
  need_name_zone
  gcloud_tpu describe \
    --format="table(name.basename(),state,health,acceleratorType,schedulingConfig)"
  gcloud_tpu ssh --worker=all --command="if [ -f \"$R_PID\" ] && kill -0 \"\$(cat \"$R_PID\")\" 2>/dev/null; then echo \"\$(hostname): running (pid \$(cat \"$R_PID\"))\"; elif [ -f \"$R_EXIT\" ]; then echo \"\$(hostname): ended, exit \$(cat \"$R_EXIT\")\"; else echo \"\$(hostname): no run\"; fi; tail -n 2 \"$R_LOG\" 2>/dev/null || true"
}

cmd_delete() {
  need_name_zone
  local q=()
  [[ $YES -eq 1 ]] && q=(--quiet)
  gcloud_tpu delete ${q[@]+"${q[@]}"}
}

# The slice's state (READY, CREATING, PREEMPTED, ...) or NOT_FOUND.
slice_state() {
  if [[ $DRY_RUN -eq 1 ]]; then
    gcloud_tpu describe --format="value(state)" >&2
    echo "${TPU_POD_DRY_RUN_STATE:-NOT_FOUND}"
    return 0
  fi
  local args=(--zone="$ZONE" --format="value(state)")
  [[ -n $PROJECT ]] && args+=(--project="$PROJECT")
  gcloud compute tpus tpu-vm describe "$NAME" "${args[@]}" 2>/dev/null ||
    echo NOT_FOUND
}

cmd_relaunch() {
  need_name_zone
  check_main_args
  local state
  state=$(slice_state)
  echo "tpu_pod.sh: slice $NAME is $state" >&2
  case $state in
    READY)
      # A run may survive (e.g. relaunch after a hang): stop it so that
      # the new one can take the TPUs. Its checkpoint is written first.
      cmd_stop
      ;;
    NOT_FOUND)
      cmd_create
      ;;
    *)
      # Preempted spot/preemptible slices cannot be restarted: recreate.
      YES=1
      cmd_delete
      cmd_create
      ;;
  esac
  cmd_install
  cmd_run
}

parse_args() {
  local opt val
  while [[ $# -gt 0 ]]; do
    opt=$1
    case $opt in
      --) shift; MAIN_ARGS=("$@"); return 0 ;;
      -h | --help) usage 0 ;;
      --spot | --preemptible)
        [[ -z $PRICING || $PRICING == "$opt" ]] ||
          die "--spot and --preemptible exclude each other; pick one."
        PRICING=$opt; shift; continue ;;
      --no-stream) STREAM=0; shift; continue ;;
      --yes) YES=1; shift; continue ;;
      --dry-run) DRY_RUN=1; shift; continue ;;
      --*=*) val=${opt#*=}; opt=${opt%%=*}; shift ;;
      --*)
        [[ $# -ge 2 ]] || die "$opt needs a value."
        val=$2; shift 2 ;;
      *) die "unexpected argument '$opt' (kflow_jax flags go after --)." ;;
    esac
    case $opt in
      --name) NAME=$val ;;
      --zone) ZONE=$val ;;
      --project) PROJECT=$val ;;
      --accelerator-type | --type) ACCEL=$val ;;
      --version | --runtime-version) RUNTIME=$val ;;
      --git-url) GIT_URL=$val ;;
      --ref) REF=$val ;;
      --remote-dir) REMOTE_DIR=$val ;;
      --venv) VENV=$val ;;
      --python) PYTHON=$val ;;
      --jax-version) JAX_VERSION=$val ;;
      --worker) WORKER=$val ;;
      *) die "unknown option $opt (see --help)." ;;
    esac
  done
}

main() {
  [[ $# -gt 0 ]] || usage 2
  local sub=$1
  case $sub in
    create | install | run | logs | stop | relaunch | status | delete)
      shift
      parse_args "$@"
      "cmd_$sub"
      ;;
    -h | --help | help) usage 0 ;;
    -*) die "the subcommand comes first: tpu_pod.sh SUBCOMMAND [options]" ;;
    *)
      # The old interface: TPU_NAME ZONE kflow_jax-flags...
      if [[ $# -ge 3 && $3 == --* ]]; then
        NAME=$1 ZONE=$2
        shift 2
        MAIN_ARGS=("$@")
        cmd_run
      else
        die "unknown subcommand '$sub'. One of: create install run logs" \
          "stop relaunch status delete (--help)."
      fi
      ;;
  esac
}

main "$@"
