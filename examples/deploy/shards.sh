#!/usr/bin/env bash
# One shard of a sweep on a job array, made safe to run again, and the merge at the end.
#
#   shards.sh run CONFIG SYNC_PREFIX [KEY=VALUE...]
#       Run this task's shard (`--shard auto`: SLURM_ARRAY_TASK_ID/COUNT or Google Cloud
#       Batch's BATCH_TASK_INDEX/COUNT), syncing to SYNC_PREFIX/shard-I/<run id>. When that
#       place already holds the shard's run (a requeued SLURM task, a retried Cloud Batch
#       task after a Spot VM was taken back), resume it instead: only trials after its last
#       snapshot are done again, and its provider batch jobs are collected, not resubmitted.
#   shards.sh merge SYNC_PREFIX SHARDS INTO
#       Merge the runs synced under SYNC_PREFIX/shard-0 .. shard-(SHARDS-1) into the run
#       folder INTO; a shard with no run shows up as missing trials in merge's report.
#
# Needs trialrun with the sync extra (pip install 'trialrun[sync]') on PATH, and python3
# (or $PYTHON) from the same environment. TRIALRUN_RUNS_DIR: local run folders (runs).
set -euo pipefail

usage="usage: shards.sh run CONFIG SYNC_PREFIX [KEY=VALUE...] | merge SYNC_PREFIX SHARDS INTO"
runs_dir=${TRIALRUN_RUNS_DIR:-runs}

# The URL of the run synced under $1 (the newest by name), or nothing when there is none.
synced_run() {
  "${PYTHON:-python3}" - "$1" <<'PY'
import sys

import fsspec

url = sys.argv[1].rstrip("/")
fs, root = fsspec.core.url_to_fs(url)
found = fs.ls(root, detail=False) if fs.exists(root) else []
names = sorted(str(p).rstrip("/").rsplit("/", 1)[-1] for p in found)
if names:
    print(f"{url}/{names[-1]}")
PY
}

run_shard() {
  local config=$1 prefix=$2
  shift 2
  local index=${SLURM_ARRAY_TASK_ID:-${BATCH_TASK_INDEX:-}}
  if [[ -z $index ]]; then
    echo "shards.sh: not a task of a SLURM array or a Cloud Batch job" >&2
    exit 2
  fi
  local sync="${prefix%/}/shard-${index}" synced
  synced=$(synced_run "$sync")
  if [[ -z $synced ]]; then
    exec trialrun run "$config" --shard auto -q "output.sync=$sync" "output.dir=$runs_dir" "$@"
  elif [[ -d $runs_dir/${synced##*/} ]]; then  # requeued on the same machine
    exec trialrun resume "$runs_dir/${synced##*/}" -q
  else
    exec trialrun resume "$synced" --dir "$runs_dir" -q
  fi
}

merge_shards() {
  local prefix=$1 shards=$2 into=$3 i synced
  local runs=()
  for ((i = 0; i < shards; i++)); do
    synced=$(synced_run "${prefix%/}/shard-$i")
    if [[ -n $synced ]]; then
      runs+=("$synced")
    else
      echo "shards.sh: shard $i has no synced run" >&2
    fi
  done
  if ((${#runs[@]} == 0)); then
    echo "shards.sh: no shard synced under $prefix" >&2
    exit 1
  fi
  exec trialrun merge "${runs[@]}" --into "$into" --dir "$runs_dir"
}

case ${1:-} in
  run) (($# >= 3)) || { echo "$usage" >&2; exit 2; }; shift; run_shard "$@" ;;
  merge) (($# == 4)) || { echo "$usage" >&2; exit 2; }; shift; merge_shards "$@" ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
