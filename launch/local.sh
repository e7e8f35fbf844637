#!/usr/bin/env bash
# Local run on this machine's devices (CPU, or every local GPU as one data-parallel mesh).
#   launch/local.sh configs/default.py runs/default [--config.x=v ...]
set -euo pipefail
config="${1:?usage: launch/local.sh CONFIG WORKDIR [--config.x=v ...]}"
workdir="${2:?usage: launch/local.sh CONFIG WORKDIR [--config.x=v ...]}"
shift 2
cd "$(dirname "$0")/.."
exec python -m launch.train --config "$config" --workdir "$workdir" "$@"
