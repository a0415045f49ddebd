#!/usr/bin/env bash
# Multi-node GPU training under SLURM: one process per node, all local GPUs
# per process.
#
#   cd /path/to/kflow_jax   # sbatch runs a copy of this script: the repo is
#                           # found from the submit directory (or REPO_DIR)
#   sbatch --nodes=4 --gpus-per-node=8 launch/slurm_gpu.sh \
#       --config=configs/imagenet.py \
#       --config.input.path=/shared/imagenet256_latents \
#       --workdir=/shared/runs/imagenet_fourier
#
# The first node of the allocation is the coordinator; each task passes its
# SLURM_PROCID as --process_id. The workdir must be on a file system all
# nodes share: every node checks that first (launch/shared_workdir.sh; a
# first flag --i-know-workdir-is-shared skips the check). Requeue (sbatch
# --requeue, or scontrol requeue JOBID) after preemption resumes from the
# newest checkpoint. Environment: REPO_DIR (default: the submit directory),
# PYTHON (default: python, e.g. /path/venv/bin/python), COORD_PORT (default:
# derived from the job id, so two jobs sharing a node do not collide).
#SBATCH --job-name=kflow
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
#SBATCH --signal=TERM@120
#SBATCH --open-mode=append
#SBATCH --output=kflow-%j.out
set -euo pipefail

usage() {
  echo "usage: sbatch [sbatch flags] $0 [--i-know-workdir-is-shared]" \
    "--config=... --workdir=/shared/... [flags]" >&2
  exit 2
}

main() {
  local check_shared=1
  if [[ ${1:-} == --i-know-workdir-is-shared ]]; then
    check_shared=0
    shift
  fi
  [[ $# -ge 2 ]] || usage
  if [[ -z ${SLURM_JOB_ID:-} || -z ${SLURM_JOB_NODELIST:-} ]]; then
    echo "slurm_gpu.sh: error: not inside a SLURM job. Fix: submit it with" \
      "sbatch (see the top of this file), or use launch/multinode_gpu.sh" \
      "on machines without SLURM." >&2
    exit 1
  fi
  # sbatch copies this script to a spool directory, so $0 does not point
  # into the repository; the submit directory does (submit from the root).
  local repo=${REPO_DIR:-${SLURM_SUBMIT_DIR:-$(pwd)}}
  if [[ ! -f $repo/kflow_jax/main.py ]]; then
    echo "slurm_gpu.sh: error: $repo is not the kflow_jax repository." \
      "Fix: run sbatch from the repository root or set REPO_DIR." >&2
    exit 1
  fi
  local workdir
  workdir=$(bash "$repo/launch/shared_workdir.sh" --workdir-of "$@")
  if [[ -z $workdir ]]; then
    echo "slurm_gpu.sh: error: no --workdir=... among the flags." >&2
    exit 1
  fi
  local coord_host coord_port python=${PYTHON:-python}
  # sed, not head: head would exit early, scontrol get SIGPIPE and
  # pipefail end the job (141) on large allocations.
  coord_host=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)
  coord_port=${COORD_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
  cd "$repo"
  echo "kflow slurm job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0})" \
    "on ${SLURM_NNODES} node(s), coordinator $coord_host:$coord_port"
  # One bash per task: the shared-workdir check has to run on every node,
  # then exec hands the task (and the TERM that --signal above sends 120 s
  # before the time limit, which srun forwards to every task) to python,
  # which writes a checkpoint and exits so that the job can be requeued.
  local check=":"
  if [[ $check_shared -eq 1 ]]; then
    check="bash launch/shared_workdir.sh $(printf '%q' "$workdir") \
\${SLURM_PROCID} ${SLURM_NNODES}"
  fi
  srun --kill-on-bad-exit=1 bash -c "set -e; $check
    exec $(printf '%q' "$python") -m kflow_jax.main \
      --coordinator_address=${coord_host}:${coord_port} \
      --num_processes=${SLURM_NNODES} --process_id=\${SLURM_PROCID} \
      $(printf ' %q' "$@")"
}

main "$@"
