#!/usr/bin/env bash
# Build a wheelhouse (a folder of wheels) for installing on a node without network access.
#
#   launch/wheelhouse.sh [--dry-run] [--jax cpu|cuda12|cuda13|tpu] [--no-tfds]
#                        PYTHON_VERSION PLATFORM [WHEELHOUSE]
#
#   launch/wheelhouse.sh 3.12 manylinux_2_28_x86_64                 # CPU node, Python 3.12
#   launch/wheelhouse.sh --jax cuda13 --no-tfds 3.12 manylinux_2_28_x86_64 /shared/wh
#
# PYTHON_VERSION is the offline node's Python (major.minor: 3.11 gets requirements.txt's 3.11
# pins, 3.12 and later the current stack); PLATFORM a pip platform tag of the node
# (manylinux_2_28_x86_64, manylinux_2_28_aarch64, ...). WHEELHOUSE defaults to
# wheelhouse-py<VERSION>-<PLATFORM>. The wheelhouse gets requirements.txt with its
# environment markers resolved for PYTHON_VERSION (pip would resolve them for the Python that
# runs it), every wheel that file needs (binary wheels only, for that Python and platform; a
# manylinux_2_X platform also takes the older manylinux wheels), and this project's build
# backend. --jax picks JAX's back end (default cpu); --no-tfds
# leaves out TensorFlow and tensorflow-datasets (needed only for the tfds datasets).
# --dry-run prints the resolved requirements and the pip commands, and runs none of them.
#
# pip runs with $PYTHON, else python<VERSION> when that works, else python3: pip evaluates
# the dependencies' own environment markers with the Python that runs it, so a Python of the
# target version gives the most faithful wheelhouse.
set -euo pipefail

usage() {
  cat >&2 <<'EOF'
usage: launch/wheelhouse.sh [--dry-run] [--jax cpu|cuda12|cuda13|tpu] [--no-tfds]
                            PYTHON_VERSION PLATFORM [WHEELHOUSE]
  e.g. launch/wheelhouse.sh 3.12 manylinux_2_28_x86_64
EOF
  exit 2
}

dry_run=0
jax_extra=cpu
tfds=1
positional=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --no-tfds) tfds=0 ;;
    --jax)
      [ $# -ge 2 ] || usage
      jax_extra="$2"
      shift ;;
    --jax=*) jax_extra="${1#--jax=}" ;;
    -h|--help) usage ;;
    --) shift; positional+=("$@"); break ;;
    -*) echo "wheelhouse.sh: unknown option $1" >&2; usage ;;
    *) positional+=("$1") ;;
  esac
  shift
done
if [ "${#positional[@]}" -lt 2 ] || [ "${#positional[@]}" -gt 3 ]; then
  usage
fi
version="${positional[0]}"
platform="${positional[1]}"
wheelhouse="${positional[2]:-wheelhouse-py${version}-${platform}}"

if ! [[ "$version" =~ ^3\.[0-9]+$ ]]; then
  echo "wheelhouse.sh: PYTHON_VERSION must look like 3.12, not '$version'" >&2
  exit 2
fi
if [ "${version#3.}" -lt 11 ]; then
  echo "wheelhouse.sh: hybrenet_jax needs Python >= 3.11, not $version" >&2
  exit 2
fi
if ! [[ "$platform" =~ ^[a-z0-9_]+$ ]]; then
  echo "wheelhouse.sh: PLATFORM must be a pip platform tag such as manylinux_2_28_x86_64, not '$platform'" >&2
  exit 2
fi
case "$jax_extra" in
  cpu|cuda12|cuda13|tpu) ;;
  *) echo "wheelhouse.sh: --jax must be cpu, cuda12, cuda13 or tpu, not '$jax_extra'" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "${PYTHON:-}" ]; then
  python="$PYTHON"
elif command -v "python$version" >/dev/null 2>&1 && "python$version" -c "" >/dev/null 2>&1; then
  python="python$version"
else
  python=python3
fi

# requirements.txt for the target: markers resolved, JAX's back end chosen, tfds optional
resolved="$("$python" - "$root/requirements.txt" "$version" "$jax_extra" "$tfds" <<'EOF'
import sys

try:
    from packaging.requirements import Requirement
except ImportError:  # pip vendors packaging
    from pip._vendor.packaging.requirements import Requirement

path, version, jax_extra, tfds = sys.argv[1:]
target = {"python_version": version, "python_full_version": f"{version}.0"}
for raw in open(path, encoding="utf-8"):
    line = raw.split("#", 1)[0].strip()
    if not line:
        continue
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate(target):
        continue
    if tfds == "0" and req.name in ("tensorflow-cpu", "tensorflow-datasets"):
        continue
    if req.name == "jax":
        req.extras = {jax_extra}
    req.marker = None
    print(req)
EOF
)"
build_requires="$("$python" - "$root/pyproject.toml" <<'EOF'
import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    print(" ".join(tomllib.load(f)["build-system"]["requires"]))
EOF
)"

# pip matches --platform exactly: a manylinux_2_X node also takes every older manylinux wheel
platforms=("$platform")
if [[ "$platform" =~ ^manylinux_2_([0-9]+)_(.+)$ ]]; then
  glibc="${BASH_REMATCH[1]}"
  arch="${BASH_REMATCH[2]}"
  platforms=()
  for ((minor = glibc; minor >= 17; minor--)); do
    platforms+=("manylinux_2_${minor}_${arch}")
  done
  [ "$glibc" -ge 17 ] && platforms+=("manylinux2014_${arch}")
  if [ "$arch" = x86_64 ] || [ "$arch" = i686 ]; then
    [ "$glibc" -ge 12 ] && platforms+=("manylinux_2_12_${arch}" "manylinux2010_${arch}")
    [ "$glibc" -ge 5 ] && platforms+=("manylinux_2_5_${arch}" "manylinux1_${arch}")
  fi
fi
target=(--only-binary=:all: --python-version "$version" --implementation cp)
for p in "${platforms[@]}"; do
  target+=(--platform "$p")
done
target+=(--dest "$wheelhouse")
show() { printf '%q ' "$@" | sed 's/ $//'; printf '\n'; }

if [ "$dry_run" -eq 1 ]; then
  echo "# $wheelhouse/requirements.txt (Python $version, $platform, jax[$jax_extra]):"
  printf '%s\n' "$resolved" | sed 's/^/#   /'
  echo "# commands:"
  echo "mkdir -p $(printf '%q' "$wheelhouse")"
  show "$python" -m pip download "${target[@]}" -r "$wheelhouse/requirements.txt"
  # shellcheck disable=SC2086
  show "$python" -m pip download "${target[@]}" $build_requires
else
  if [ "$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "$version" ]; then
    echo "wheelhouse.sh: note: $python is not Python $version; dependencies' own environment" \
         "markers are evaluated for it (set PYTHON=python$version if you have one)" >&2
  fi
  mkdir -p "$wheelhouse"
  printf '%s\n' "$resolved" > "$wheelhouse/requirements.txt"
  "$python" -m pip download "${target[@]}" -r "$wheelhouse/requirements.txt"
  # shellcheck disable=SC2086
  "$python" -m pip download "${target[@]}" $build_requires
  echo "wheelhouse: $wheelhouse ($(find "$wheelhouse" -name '*.whl' | wc -l) wheels)"
fi

echo "# on the offline node (Python $version, $platform), in a checkout of this repository:"
echo "python3 -m venv .venv && . .venv/bin/activate && pip install --no-index --find-links $(printf '%q' "$wheelhouse") -r $(printf '%q' "$wheelhouse/requirements.txt") -e ."
