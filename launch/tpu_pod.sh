#!/usr/bin/env bash
# Runs one kflow_jax command on every worker of a Cloud TPU VM pod slice.
#
#   launch/tpu_pod.sh TPU_NAME ZONE --config=configs/imagenet_fourier.py \
#       --config.input.path=gs://BUCKET/imagenet256_latents \
#       --workdir=gs://BUCKET/runs/imagenet_fourier
#
# Every host runs the same command; jax.distributed.initialize() finds the
# pod topology itself (--distributed). The workdir must be shared storage
# (gs://) so that all hosts see the same checkpoints. Relaunching the same
# command resumes from the newest checkpoint; preempted (SIGTERM) runs save
# one first. Set REPO_DIR to where the repository lives on the workers and
# VENV to its virtual environment (both are assumed to exist on all
# workers, e.g. from a startup script: git clone + pip install -e .).
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 TPU_NAME ZONE --config=... --workdir=gs://... [flags]" >&2
  exit 2
fi
TPU_NAME=$1; ZONE=$2; shift 2
REPO_DIR=${REPO_DIR:-\$HOME/kflow_jax}
VENV=${VENV:-\$HOME/venv}
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
ARGS=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG \
  --worker=all \
  --command="cd $REPO_DIR && source $VENV/bin/activate && \
    python -m kflow_jax.main --distributed $ARGS 2>&1 | tee -a \$HOME/kflow_jax.log"
