#!/usr/bin/env bash
#SBATCH --job-name=trialrun
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=12:00:00
#SBATCH --requeue
#SBATCH --output=trialrun-%A_%a.log
#
# A trialrun sweep on a SLURM job array, synced to a bucket, merged by a dependent job.
#
#   bash slurm-sweep.sh sweep.yaml s3://my-bucket/sweeps/my-sweep 8 [KEY=VALUE...]
#
# Run on the login node, it submits (1) an array of 8 tasks, each `trialrun run sweep.yaml
# --shard auto` syncing to s3://my-bucket/sweeps/my-sweep/shard-I (a requeued task resumes
# its shard from the bucket: shards.sh), and (2) a merge job that starts once every task
# has ended (afterany: a failed shard shows as missing trials in the merge report) and
# writes runs/my-sweep-merged in the submit folder. Jobs run in the environment sbatch is
# called from (--export=ALL): activate the virtualenv with trialrun[sync] first; keys and
# AWS_* / GOOGLE_APPLICATION_CREDENTIALS come from there too, and are written nowhere.
set -euo pipefail

step=${TRIALRUN_STEP:-submit}
case $step in
  submit)
    if (($# < 3)); then
      echo "usage: bash slurm-sweep.sh CONFIG SYNC_PREFIX SHARDS [KEY=VALUE...]" >&2
      exit 2
    fi
    config=$(realpath "$1") prefix=$2 shards=$3
    shift 3
    # Under sbatch this script runs from a spool copy: tell the jobs where shards.sh is.
    TRIALRUN_DEPLOY=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    export TRIALRUN_DEPLOY
    array=$(sbatch --parsable --array="0-$((shards - 1))" \
      --export="ALL,TRIALRUN_STEP=shard" "$0" "$config" "$prefix" "$@")
    array=${array%%;*}  # --parsable prints JOBID or JOBID;CLUSTER
    merge=$(sbatch --parsable --dependency="afterany:$array" --job-name=trialrun-merge \
      --time=01:00:00 --export="ALL,TRIALRUN_STEP=merge" "$0" "$prefix" "$shards")
    echo "array job $array ($shards shards), merge job ${merge%%;*}"
    ;;
  shard)
    exec "$TRIALRUN_DEPLOY/shards.sh" run "$@"
    ;;
  merge)
    prefix=$1 shards=$2
    exec "$TRIALRUN_DEPLOY/shards.sh" merge "$prefix" "$shards" \
      "runs/$(basename "${prefix%/}")-merged"
    ;;
  *)
    echo "slurm-sweep.sh: unknown TRIALRUN_STEP=$step" >&2
    exit 2
    ;;
esac
