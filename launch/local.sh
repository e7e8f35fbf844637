#!/usr/bin/env bash
# Train on this machine's devices (the CPU, or every local GPU as one data-parallel mesh):
# one process, `python -m launch.train --config CONFIG --workdir WORKDIR [overrides]`.
#   launch/local.sh configs/default.py runs/default [--config.x=v ...]
# Works from any directory: CONFIG and WORKDIR are taken from the current directory, and a
# CONFIG not found there is looked up in the repository (configs/default.py works anywhere).
# WORKDIR may also be a gs:// or file:// URL. $PYTHON picks the interpreter (default python).
set -euo pipefail
usage="usage: launch/local.sh CONFIG[:ARG] WORKDIR [--config.x=v ...]"
if [ $# -lt 2 ]; then
  echo "$usage" >&2
  exit 2
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
config="$1"
workdir="$2"
shift 2
if [ ! -f "${config%%:*}" ] && [ -f "$root/${config%%:*}" ]; then
  config="$root/$config"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" -m launch.train --config "$config" --workdir "$workdir" "$@"
