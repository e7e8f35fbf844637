#!/usr/bin/env bash
# TPU pod slice: the same command on every worker over `gcloud compute tpus tpu-vm ssh
# --worker=all`; each runs `python3 -m launch.train --distributed`, whose
# jax.distributed.initialize() detects the pod (one process per TPU VM, all its chips).
#   launch/tpu_pod.sh my-tpu us-central2-b configs/cifar100_hrn.py:hrn-5x5x3x gs://bucket/runs/x
# The repository must be checked out (and its requirements installed) on every worker, in
# $HYBRENET_REMOTE_DIR (default: hybrenet_jax in the worker's home); CONFIG is relative to it.
# The workdir must be a gs:// URL or a disk every worker sees. Every argument is passed on
# quoted, so overrides with spaces or quotes arrive intact. HYBRENET_DRY_RUN=1 prints the
# gcloud command instead of running it. Runs from any directory.
set -euo pipefail
usage="usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG[:ARG] WORKDIR [--config.x=v ...]"
if [ $# -lt 4 ]; then
  echo "$usage" >&2
  exit 2
fi
tpu="$1"
zone="$2"
config="$3"
workdir="$4"
shift 4
remote_dir="${HYBRENET_REMOTE_DIR:-hybrenet_jax}"
printf -v extra ' %q' "$@"
[ $# -gt 0 ] || extra=""
remote="cd $(printf '%q' "$remote_dir") && ${REMOTE_PYTHON:-python3} -m launch.train --distributed"
remote+=" --config $(printf '%q' "$config") --workdir $(printf '%q' "$workdir")$extra"
cmd=(gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "$remote")
if [ "${HYBRENET_DRY_RUN:-0}" = 1 ]; then
  printf '%q ' "${cmd[@]}" | sed 's/ $//'
  printf '\n'
  exit 0
fi
exec "${cmd[@]}"
