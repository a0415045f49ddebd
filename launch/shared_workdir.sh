#!/usr/bin/env bash
# Checks that a multi-node run's workdir is one directory all nodes share.
#
#   launch/shared_workdir.sh WORKDIR NODE_RANK NUM_NODES
#   launch/shared_workdir.sh --workdir-of KFLOW_FLAGS...   (prints --workdir)
#
# Every node of the run calls it (slurm_gpu.sh and multinode_gpu.sh do,
# before starting python); it exits 0 once it has seen the workdir shared,
# 1 with the reason and the fix otherwise.
#
# Why a marker exchange and not a path rule: whether /scratch or /data is
# shared differs per cluster, and the file system type (nfs, lustre, ext4,
# ...) does not say it either (a node-local NVMe and a shared GPFS both look
# "local" to heuristics). What the run needs is exactly that a file one node
# writes is seen by the others, so that is what is tested: each node writes
# WORKDIR/.kflow_nodes/rank<R> holding its host name, then waits until it
# sees the files of all NUM_NODES ranks, those of the other ranks written by
# other hosts. On node-local disks a node only ever sees its own file(s), so
# it times out with an error instead of each node writing its own half of
# every checkpoint. A stale file left by an earlier run on a shared workdir
# proves the same thing (another host wrote it, we see it), so it needs no
# cleanup; a stale file on a local disk names this host and is ignored.
#
# Object-store URLs (gs://, s3://, ...) are shared by construction and pass
# at once, as does a single-node run. Well-known node-local paths (/tmp,
# /var/tmp, /dev/shm, /run) are refused without waiting, as most mistakes
# are these. Set SHARED_CHECK_TIMEOUT (seconds, default 300: nodes started
# by hand may come up minutes apart) and KFLOW_HOSTNAME (default: hostname;
# tests set it to simulate several hosts on one machine).
set -euo pipefail

die() {
  echo "shared_workdir.sh: error: $*" >&2
  exit 1
}

# Prints the value of --workdir in kflow_jax flags (either spelling): the
# launchers find the workdir to check with it.
workdir_of() {
  while [[ $# -gt 0 ]]; do
    case $1 in
      --workdir=*) echo "${1#--workdir=}"; return 0 ;;
      --workdir) echo "${2:-}"; return 0 ;;
    esac
    shift
  done
}

main() {
  if [[ ${1:-} == --workdir-of ]]; then
    shift
    workdir_of "$@"
    return 0
  fi
  [[ $# -eq 3 ]] || die "usage: $0 WORKDIR NODE_RANK NUM_NODES"
  local workdir=$1 rank=$2 nodes=$3
  [[ $rank =~ ^[0-9]+$ && $nodes =~ ^[0-9]+$ && $rank -lt $nodes ]] ||
    die "NODE_RANK=$rank must be an integer in [0, NUM_NODES=$nodes)."
  if [[ $nodes -le 1 || $workdir == *://* ]]; then
    return 0
  fi
  [[ $workdir == /* ]] ||
    die "workdir '$workdir' is a relative path: every node would resolve it" \
      "against its own current directory. Fix: give an absolute path on" \
      "the shared file system, e.g. --workdir=/shared/runs/NAME."
  local p
  for p in /tmp /var/tmp /dev/shm /run; do
    if [[ $workdir == "$p" || $workdir == "$p"/* ]]; then
      die "workdir '$workdir' is under $p, which is local to each node:" \
        "every node would write its own part of each checkpoint and the" \
        "run could not resume. Fix: --workdir=/path/on/shared/storage" \
        "(NFS, Lustre, GPFS, ...), or skip this check with" \
        "--i-know-workdir-is-shared if $p really is shared here."
    fi
  done
  local dir=$workdir/.kflow_nodes host=${KFLOW_HOSTNAME:-$(hostname)}
  local timeout=${SHARED_CHECK_TIMEOUT:-300}
  mkdir -p "$dir" || die "cannot create $dir (is the workdir writable?)"
  # Written under a temporary name and renamed: a reader never sees a
  # half-written host name.
  echo "$host" >"$dir/rank$rank.tmp.$host.$$"
  mv -f "$dir/rank$rank.tmp.$host.$$" "$dir/rank$rank"
  local start=$SECONDS missing r other
  while true; do
    missing=()
    for ((r = 0; r < nodes; r++)); do
      [[ $r -eq $rank ]] && continue
      other=$(cat "$dir/rank$r" 2>/dev/null || true)
      if [[ -z $other || $other == "$host" ]]; then
        missing+=("$r")
      fi
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if ((SECONDS - start >= timeout)); then
      die "node $rank ($host) waited ${timeout}s for the marker files of" \
        "node(s) ${missing[*]} in $dir and did not see them. Either those" \
        "nodes did not start (check their logs), or '$workdir' is not" \
        "shared storage (each node sees only its own files): use a" \
        "directory on a file system mounted on all nodes. If it is shared" \
        "and the nodes just start far apart, raise SHARED_CHECK_TIMEOUT."
    fi
    sleep 1
  done
}

main "$@"
