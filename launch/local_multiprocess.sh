#!/usr/bin/env bash
# Several processes on this machine as a multi-host run (CPU, gloo
# collectives): the same code path as a pod, for testing and debugging.
#
#   launch/local_multiprocess.sh 2 --config=configs/digits.py:runlocal \
#       --workdir=/tmp/kflow_mp
#
# NUM_PROCS processes with CPU_DEVICES (default 2) CPU devices each; process
# 0 is the coordinator on 127.0.0.1:PORT (default: a free port). Logs go to
# WORKDIR-independent files kflow_proc<i>.log in LOG_DIR (default .).
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 NUM_PROCS --config=... --workdir=... [flags]" >&2
  exit 2
fi
NUM_PROCS=$1; shift
CPU_DEVICES=${CPU_DEVICES:-2}
LOG_DIR=${LOG_DIR:-.}
PYTHON=${PYTHON:-python}
PORT=${PORT:-$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export JAX_PLATFORMS=cpu
unset XLA_FLAGS
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM
for ((i = 0; i < NUM_PROCS; i++)); do
  "$PYTHON" -m kflow_jax.main --num_processes="$NUM_PROCS" --process_id="$i" \
    --coordinator_address="127.0.0.1:$PORT" --cpu_devices="$CPU_DEVICES" \
    "$@" >"$LOG_DIR/kflow_proc$i.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
if [[ $status -ne 0 ]]; then
  echo "a process failed (exit $status); see $LOG_DIR/kflow_proc*.log" >&2
  tail -n 20 "$LOG_DIR"/kflow_proc*.log >&2
fi
exit $status
