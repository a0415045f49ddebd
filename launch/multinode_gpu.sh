#!/usr/bin/env bash
# Multi-node GPU training without SLURM: run this on every node, each with
# its own --node-rank (0 is the coordinator), one process per node using
# that node's GPUs.
#
#   # on node0 (10.0.0.1), node1, ..., node3:
#   launch/multinode_gpu.sh --node-rank=0 --num-nodes=4 \
#       --coordinator=10.0.0.1:12345 --gpus-per-node=8 -- \
#       --config=configs/imagenet.py \
#       --config.input.path=/shared/imagenet256_latents \
#       --workdir=/shared/runs/imagenet_fourier
#
# Options (before --; the kflow_jax.main flags come after it):
#   --node-rank=R        this node's index in [0, N)            (required)
#   --num-nodes=N        number of nodes                         (required)
#   --coordinator=H:P    host:port of node 0, reachable from all (required)
#   --gpus-per-node=G    use GPUs 0..G-1 (sets CUDA_VISIBLE_DEVICES); by
#                        default all GPUs the node has
#   --python=PATH        python of the environment (default: python)
#   --i-know-workdir-is-shared  skip the shared-storage check
#   --dry-run            print the command instead of running it
#
# The workdir must be on storage all nodes share (NFS, Lustre, GPFS, or
# gs:// etc.): each node checks that before starting (launch/
# shared_workdir.sh writes and reads marker files in the workdir). Relaunch
# every node with the same command after a failure or preemption: the run
# resumes from the newest checkpoint. SIGTERM to this script reaches python
# (exec), which writes a checkpoint before exiting.
set -euo pipefail

die() {
  echo "multinode_gpu.sh: error: $*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

main() {
  local rank="" nodes="" coord="" gpus="" python=${PYTHON:-python}
  local check_shared=1 dry_run=0
  while [[ $# -gt 0 ]]; do
    case $1 in
      --node-rank=*) rank=${1#*=} ;;
      --num-nodes=*) nodes=${1#*=} ;;
      --coordinator=*) coord=${1#*=} ;;
      --gpus-per-node=*) gpus=${1#*=} ;;
      --python=*) python=${1#*=} ;;
      --i-know-workdir-is-shared) check_shared=0 ;;
      --dry-run) dry_run=1 ;;
      -h | --help) usage ;;
      --) shift; break ;;
      *) die "unknown option '$1' (kflow_jax flags go after --; see --help)" ;;
    esac
    shift
  done
  [[ -n $rank && -n $nodes && -n $coord ]] ||
    die "--node-rank, --num-nodes and --coordinator are required (--help)."
  [[ $nodes =~ ^[1-9][0-9]*$ ]] || die "--num-nodes=$nodes: not a count."
  [[ $rank =~ ^[0-9]+$ && $rank -lt $nodes ]] ||
    die "--node-rank=$rank must be in [0, $nodes)."
  [[ $coord =~ ^[^:]+:[0-9]+$ ]] ||
    die "--coordinator=$coord must be host:port (node 0's address)."
  [[ $# -gt 0 ]] || die "no kflow_jax flags after --; need --config=..." \
    "and --workdir=..."
  local workdir
  workdir=$(bash "$(dirname "$0")/shared_workdir.sh" --workdir-of "$@")
  [[ -n $workdir ]] || die "no --workdir=... among the kflow_jax flags."
  local arg
  for arg in "$@"; do
    case $arg in
      --num_processes* | --process_id* | --coordinator_address* | \
        --distributed*)
        die "'$arg' is set by this script; drop it (use --num-nodes," \
          "--node-rank, --coordinator)." ;;
    esac
  done
  if [[ -n $gpus ]]; then
    [[ $gpus =~ ^[1-9][0-9]*$ ]] || die "--gpus-per-node=$gpus: not a count."
    local visible
    visible=$(seq -s, 0 $((gpus - 1)))
    export CUDA_VISIBLE_DEVICES=$visible
    if [[ $dry_run -eq 0 ]] && command -v nvidia-smi >/dev/null; then
      local have
      have=$(nvidia-smi -L | grep -c '^GPU' || true)
      [[ $have -ge $gpus ]] ||
        die "--gpus-per-node=$gpus but nvidia-smi lists $have GPU(s) here."
    fi
  fi
  local repo
  repo=$(cd "$(dirname "$0")/.." && pwd)
  local cmd=("$python" -m kflow_jax.main --coordinator_address="$coord"
    --num_processes="$nodes" --process_id="$rank" "$@")
  if [[ $dry_run -eq 1 ]]; then
    [[ $check_shared -eq 1 ]] &&
      echo "bash launch/shared_workdir.sh $(printf '%q' "$workdir") $rank $nodes"
    [[ -n $gpus ]] && printf 'CUDA_VISIBLE_DEVICES=%s ' "$CUDA_VISIBLE_DEVICES"
    printf '%q ' "${cmd[@]}"
    echo
    return 0
  fi
  if [[ $check_shared -eq 1 ]]; then
    bash "$repo/launch/shared_workdir.sh" "$workdir" "$rank" "$nodes"
  fi
  cd "$repo"
  exec "${cmd[@]}"
}

main "$@"
