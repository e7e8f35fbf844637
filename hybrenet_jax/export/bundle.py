"""Portable bundles: description JSON + safetensors weights, no pickle anywhere.

A bundle is a directory, or the same three files in one ``.zip`` archive (chosen by the
output path's suffix):

* ``model.json``: format and version, model string, dataset, the full network description
  (``spec``: every :class:`~hybrenet_jax.netspec.NetSpec` field), input layout and
  normalisation constants, the ReLU layout per site, the analytic counts, the Delphi cost
  estimate, the folded graph (ops and tensor names), where the weights came from;
* ``variables.safetensors``: the unfolded Flax variables, keys ``params/<layer>/kernel``,
  ``batch_stats/<bn>/mean`` ... (Flax layouts: HWIO kernels);
* ``folded.safetensors``: the BatchNorm-folded tensors of :mod:`.folding`
  (``<conv>/kernel``, ``<conv>/bias``, ``<conv>/<group>/kernel``, ``<bn>/scale`` ...; HWIO).

:func:`load_bundle` rebuilds the spec from the description, validates the variables' keys,
shapes and dtypes against ``build_model(spec)`` and the folded tensors against a fresh fold
before returning them.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import io
import json
import pathlib
import zipfile
from typing import Any, Mapping

import numpy as np
import safetensors.numpy

from hybrenet_jax.architecture import expand
from hybrenet_jax.counts import count
from hybrenet_jax.errors import HybrenetError
from hybrenet_jax.export.errors import BundleError
from hybrenet_jax.export.folding import FoldedNetwork, fold
from hybrenet_jax.variables import flatten, unflatten, validate_variables
from hybrenet_jax.models import BN_EPSILON, Network, build_model
from hybrenet_jax.netspec import NetSpec
from hybrenet_jax.train.storage import write_text_atomically

FORMAT = "hybrenet-bundle"
VERSION = 1
DESCRIPTION = "model.json"
VARIABLES = "variables.safetensors"
FOLDED = "folded.safetensors"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: identical inputs give identical archives


@dataclasses.dataclass(frozen=True, eq=False)
class Bundle:
    """A loaded bundle: the spec, validated Flax variables, folded tensors, the description."""

    spec: NetSpec
    variables: dict[str, Any]
    folded: dict[str, np.ndarray]
    description: dict[str, Any]

    @property
    def dataset(self) -> str:
        return self.description["dataset"]

    def model(self) -> Network:
        """The Flax model of the description (apply it with :attr:`variables`)."""
        return build_model(self.spec)


# -- description ------------------------------------------------------------------------------
def spec_to_json(spec: NetSpec) -> dict[str, Any]:
    """Every NetSpec field as plain JSON (stage sets as sorted lists)."""
    d = dataclasses.asdict(spec)
    d.update(widths=list(spec.widths), depths=list(spec.depths), culled=sorted(spec.culled),
             thinned=sorted(spec.thinned))
    return d


def spec_from_json(d: Mapping[str, Any]) -> NetSpec:
    """Inverse of :func:`spec_to_json`, with a clear error for unknown or invalid fields."""
    if not isinstance(d, Mapping):
        raise BundleError("description field 'spec' must be an object")
    known = {f.name for f in dataclasses.fields(NetSpec)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise BundleError(f"description 'spec' has unknown fields {unknown} (written by a newer "
                          "hybrenet_jax?)")
    try:
        return NetSpec(**d)
    except (TypeError, HybrenetError) as err:
        raise BundleError(f"description 'spec' is not a valid network: {err}") from None


def relu_layout(spec: NetSpec) -> list[dict[str, Any]]:
    """Per ReLU site: name, stage, channels, hw, state (kept/culled/thinned), reuse, ReLUs."""
    return [{"name": s.name, "stage": s.stage, "channels": s.channels, "hw": s.hw,
             "state": s.state, "reuse": s.reuse, "relus": s.relus}
            for s in expand(spec).relu_sites()]


def _normalization(dataset: str) -> dict[str, list[float]] | None:
    from hybrenet_jax.data import normalization_for  # noqa: PLC0415 (digits loads sklearn)

    try:
        norm = normalization_for(dataset)
    except HybrenetError:
        return None
    return {"mean": list(norm.mean), "std": list(norm.std)}


def _cost(spec: NetSpec, dataset: str) -> dict[str, Any]:
    from hybrenet_jax.cost import estimate  # noqa: PLC0415

    try:
        return estimate(spec, dataset=dataset).as_dict()
    except HybrenetError as err:
        return {"error": str(err)}


def _versions() -> dict[str, str]:
    out = {}
    for package in ("hybrenet_jax", "jax", "flax", "numpy", "safetensors"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "unknown"
    return out


def describe(spec: NetSpec, dataset: str, folded: FoldedNetwork,
             source: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``model.json`` content of a bundle (see the module docstring)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": spec.name,
        "dataset": dataset,
        "family": spec.family,
        "widths": list(spec.widths),
        "depths": list(spec.depths),
        "spec": spec_to_json(spec),
        "input": {"layout": "NHWC", "shape": [spec.input_size, spec.input_size,
                                              spec.in_channels],
                  "dtype": "float32", "normalization": _normalization(dataset),
                  "note": "images / 255, then (x - mean) / std per channel"},
        "bn_epsilon": BN_EPSILON,
        "relu_layout": relu_layout(spec),
        "counts": count(spec).as_dict(),
        "cost": _cost(spec, dataset),
        "files": {
            "variables": {"file": VARIABLES, "content": "unfolded Flax variables",
                          "layout": "'/'-joined Flax paths; conv kernels HWIO, dense (in, out)"},
            "folded": {"file": FOLDED, "content": "BatchNorm-folded inference tensors",
                       "layout": "conv kernels HWIO; dense (in, out) in NHWC flatten order"},
        },
        "folded_graph": folded.describe(),
        "source": dict(source or {}),
        "versions": _versions(),
    }


# -- writing ----------------------------------------------------------------------------------
def _tensor_bytes(tensors: Mapping[str, np.ndarray], content: str) -> bytes:
    arrays = {k: np.ascontiguousarray(v) for k, v in sorted(tensors.items())}
    # one metadata key: safetensors writes several in arbitrary order (non-reproducible bytes)
    return safetensors.numpy.save(arrays, metadata={"format": f"{FORMAT}/{content}"})


def save_bundle(path: str | pathlib.Path, spec: NetSpec, variables: Mapping[str, Any],
                dataset: str, source: Mapping[str, Any] | None = None) -> pathlib.Path:
    """Write a bundle of ``spec`` with trained ``variables`` (a ``.zip`` path gives an archive).

    Args:
      path: output directory, or a file name ending in ``.zip``.
      spec: the network description.
      variables: Flax variables; validated against ``build_model(spec)`` first.
      dataset: the dataset the network was trained on (input size, classes, normalisation).
      source: provenance recorded in the description (workdir, step, digest, ...).

    Raises:
      VariablesMismatchError: the variables do not fit the spec.
      BundleError: the output cannot be written.
    """
    path = pathlib.Path(path)
    variables = validate_variables(spec, variables, "the export")
    folded = fold(spec, variables)
    files = {
        DESCRIPTION: (json.dumps(describe(spec, dataset, folded, source), indent=2) + "\n"
                      ).encode(),
        VARIABLES: _tensor_bytes(flatten(variables), "variables"),
        FOLDED: _tensor_bytes(folded.tensors(), "folded"),
    }
    try:
        # each file through a temporary sibling and a rename: a full disk never leaves a
        # partial file where an earlier export was (write_text_atomically)
        if path.suffix.lower() == ".zip":
            path.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as archive:
                for name, data in files.items():
                    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
                    # float weights barely compress: store them, deflate only the JSON
                    info.compress_type = (zipfile.ZIP_DEFLATED if name == DESCRIPTION
                                          else zipfile.ZIP_STORED)
                    archive.writestr(info, data)
            write_text_atomically(path, buffer.getvalue())
        else:
            path.mkdir(parents=True, exist_ok=True)
            for name, data in files.items():
                write_text_atomically(path / name, data)
    except OSError as err:
        raise BundleError(f"cannot write bundle {path}: {err.strerror or err}") from None
    return path


# -- reading ----------------------------------------------------------------------------------
def _read_files(path: pathlib.Path) -> dict[str, bytes]:
    names = (DESCRIPTION, VARIABLES, FOLDED)
    try:
        if path.is_dir():
            missing = [n for n in names if not (path / n).is_file()]
            if missing:
                raise BundleError(f"bundle {path} lacks {', '.join(missing)}")
            return {n: (path / n).read_bytes() for n in names}
        if not path.exists():
            raise BundleError(f"no bundle at {path}")
        if not zipfile.is_zipfile(path):
            raise BundleError(f"{path} is neither a bundle directory nor a .zip bundle")
        with zipfile.ZipFile(path) as archive:
            present = set(archive.namelist())
            missing = [n for n in names if n not in present]
            if missing:
                raise BundleError(f"bundle {path} lacks {', '.join(missing)}")
            return {n: archive.read(n) for n in names}
    except (OSError, zipfile.BadZipFile) as err:
        raise BundleError(f"cannot read bundle {path}: {err}") from None


def _load_tensors(data: bytes, what: str) -> dict[str, np.ndarray]:
    try:
        return dict(safetensors.numpy.load(data))
    except Exception as err:  # noqa: BLE001 - any parse failure means a damaged file
        raise BundleError(f"{what} is not a readable safetensors file: {err}") from None


def _check_folded(spec: NetSpec, variables: Mapping[str, Any],
                  folded: Mapping[str, np.ndarray], where: str) -> None:
    expected = fold(spec, variables).tensors()
    missing = sorted(set(expected) - set(folded))
    extra = sorted(set(folded) - set(expected))
    wrong = [k for k in sorted(set(expected) & set(folded))
             if folded[k].shape != expected[k].shape or folded[k].dtype != expected[k].dtype]
    if missing or extra or wrong:
        raise BundleError(
            f"{where}/{FOLDED} does not match the description: missing {missing[:3]}, "
            f"unexpected {extra[:3]}, wrong shape/dtype {wrong[:3]}")


def load_bundle(path: str | pathlib.Path) -> Bundle:
    """Read and validate a bundle written by :func:`save_bundle`.

    Raises:
      BundleError: unreadable or incomplete bundle, unknown format/version, inconsistent
        description, or folded tensors that do not match the description.
      VariablesMismatchError: variables that do not fit the model the description builds.
    """
    path = pathlib.Path(path)
    files = _read_files(path)
    try:
        description = json.loads(files[DESCRIPTION])
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path}/{DESCRIPTION} is not valid JSON: {err}") from None
    if not isinstance(description, dict):
        raise BundleError(f"{path}/{DESCRIPTION} must hold a JSON object")
    if description.get("format") != FORMAT:
        raise BundleError(f"{path} is not a {FORMAT} (format field: "
                          f"{description.get('format')!r})")
    if description.get("version") != VERSION:
        raise BundleError(f"{path} has bundle version {description.get('version')!r}; this "
                          f"hybrenet_jax reads version {VERSION}")
    for key in ("spec", "dataset", "relu_layout"):
        if key not in description:
            raise BundleError(f"{path}/{DESCRIPTION} lacks the field {key!r}")
    spec = spec_from_json(description["spec"])
    if description["relu_layout"] != relu_layout(spec):
        raise BundleError(f"{path}/{DESCRIPTION}: 'relu_layout' disagrees with 'spec' (edited "
                          "by hand?)")
    variables = validate_variables(
        spec, unflatten(_load_tensors(files[VARIABLES], f"{path}/{VARIABLES}")),
        f"bundle {path}", "The bundle's weights do not belong to its model.json description.")
    folded = _load_tensors(files[FOLDED], f"{path}/{FOLDED}")
    _check_folded(spec, variables, folded, str(path))
    return Bundle(spec, variables, folded, description)
