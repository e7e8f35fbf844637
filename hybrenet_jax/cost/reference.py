"""Reading the Delphi reference measurements shipped in :mod:`hybrenet_jax.reference_data`.

The measured networks are Delphi "plain stacks" listed layer by layer; each record becomes a
:class:`ReferenceLayer` whose :meth:`~ReferenceLayer.ops` come from :mod:`.packing`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib

from hybrenet_jax import reference_data
from hybrenet_jax.cost.packing import CostModelError, HeOps, LayerShape

#: Measured per-layer times to calibrate on (the artifact's means re-parsed from raw logs).
TIMING_KEY = "he_eval_seconds_logs_corrected"
TIMINGS_FILE = "delphi_layer_timings.json"
GC_FILE = "gc_benchmarks.json"


def default_delphi_dir() -> pathlib.Path:
    """The Delphi measurements shipped with the package (``hybrenet_jax/reference_data/delphi``)."""
    return reference_data.delphi_dir()


@dataclasses.dataclass(frozen=True)
class ReferenceLayer(LayerShape):
    """One measured linear layer of a Delphi run (its geometry: :class:`LayerShape`)."""

    network: str
    dataset: str
    index: int
    seconds: float
    encrypt_seconds: float
    decrypt_seconds: float
    client_write_bytes: int
    server_write_bytes: int

    @property
    def run(self) -> str:
        """``network/dataset``, the unit the per-network errors are reported for."""
        return f"{self.network}/{self.dataset}"

    def ops(self) -> HeOps:
        """Delphi's operation counts for this layer."""
        return self.dense_ops()


def _read_json(path: pathlib.Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CostModelError(f"reference file {path} not found; pass the folder holding "
                             f"{TIMINGS_FILE} and {GC_FILE}") from None
    except json.JSONDecodeError as err:
        raise CostModelError(f"reference file {path} is not valid JSON: {err}") from None


def load_layer_timings(delphi_dir: pathlib.Path | None = None) -> list[ReferenceLayer]:
    """The 132 measured layers of ``delphi_layer_timings.json``, in file order."""
    path = pathlib.Path(delphi_dir or default_delphi_dir()) / TIMINGS_FILE
    layers = []
    for rec in _read_json(path)["layers"]:
        fc = rec["kind"] == "fc"
        layers.append(ReferenceLayer(
            network=rec["network"], dataset=rec["dataset"], index=rec["layer_index"],
            kind=rec["kind"],
            in_ch=rec["fc_in_features"] if fc else rec["in_channels"],
            out_ch=rec["fc_out_features"] if fc else rec["out_channels"],
            kernel=1 if fc else rec["kernel"], stride=1 if fc else rec["stride"],
            in_hw=1 if fc else rec["in_hw"],
            seconds=rec[TIMING_KEY],
            encrypt_seconds=rec["client_encrypt_seconds_logs_corrected"],
            decrypt_seconds=rec["client_decrypt_seconds_logs_corrected"],
            client_write_bytes=rec["client_write_bytes"],
            server_write_bytes=rec["server_write_bytes"],
        ))
    return layers


def load_gc_benchmarks(delphi_dir: pathlib.Path | None = None) -> dict:
    """The parsed ``gc_benchmarks.json``."""
    return _read_json(pathlib.Path(delphi_dir or default_delphi_dir()) / GC_FILE)


def file_digests(delphi_dir: pathlib.Path | None = None) -> dict[str, str]:
    """SHA-256 of the two reference files (recorded as calibration provenance)."""
    folder = pathlib.Path(delphi_dir or default_delphi_dir())
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
            for name in (TIMINGS_FILE, GC_FILE)}
