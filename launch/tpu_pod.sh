#!/usr/bin/env bash
# TPU pod slice: the same command on every worker; jax.distributed.initialize() auto-detects.
#   launch/tpu_pod.sh my-tpu us-central2-b configs/cifar100_hrn.py:hrn-5x5x3x gs://bucket/runs/hrn553
# The repository must be checked out (and requirements installed) at ~/hybrenet_jax on every
# worker; the workdir should be a GCS path or a shared disk.
set -euo pipefail
tpu="${1:?usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.x=v ...]}"
zone="${2:?zone}"
config="${3:?config}"
workdir="${4:?workdir}"
shift 4
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command \
  "cd ~/hybrenet_jax && python3 -m launch.train --distributed --config '$config' --workdir '$workdir' $*"
