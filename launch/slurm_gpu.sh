#!/usr/bin/env bash
# Multi-node GPU training under SLURM: one process per node, all local GPUs
# per process.
#
#   sbatch --nodes=4 --gpus-per-node=8 launch/slurm_gpu.sh \
#       --config=configs/imagenet_fourier.py \
#       --config.input.path=/shared/imagenet256_latents \
#       --workdir=/shared/runs/imagenet_fourier
#
# The first node of the allocation is the coordinator; each task passes its
# SLURM_PROCID as --process_id. The workdir must be on a file system all
# nodes share. Requeue (sbatch --requeue) after preemption resumes exactly.
#SBATCH --job-name=kflow
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
#SBATCH --signal=TERM@120
#SBATCH --output=kflow-%j.out
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: sbatch [sbatch flags] $0 --config=... --workdir=... [flags]" >&2
  exit 2
fi
REPO_DIR=${REPO_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
COORD_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
COORD_PORT=${COORD_PORT:-12345}
cd "$REPO_DIR"
# --signal above sends SIGTERM 120 s before the time limit: a checkpoint is
# written and the job can be requeued. srun forwards it to every task.
srun --kill-on-bad-exit=1 bash -c "
  python -m kflow_jax.main \
    --coordinator_address=${COORD_HOST}:${COORD_PORT} \
    --num_processes=${SLURM_NNODES} --process_id=\${SLURM_PROCID} \
    $(printf ' %q' "$@")"
