"""The calibrated constants of the cost model (``calibration.json``) and how they are applied.

The JSON is written by ``python -m hybrenet_jax.cost.calibrate`` from the reference data; see
that module for the fit. Nothing here is a hand-set number.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib

from hybrenet_jax.cost.packing import CostModelError, HeOps

CALIBRATION_PATH = pathlib.Path(__file__).with_name("calibration.json")

#: Operation counts the server HE time is fitted on (seconds per unit each).
HE_FEATURES: tuple[str, ...] = ("multiplies", "key_switches", "additions", "layers")


@dataclasses.dataclass(frozen=True)
class DeviceProfile:
    """Single-thread garbled-circuit speed of one machine."""

    name: str
    description: str
    garble_seconds_per_relu: float
    evaluate_seconds_per_relu: float


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Per-operation costs (server HE, client HE, GC) and byte sizes."""

    he_seconds_per: dict[str, float]
    encrypt_seconds_per_ciphertext: float
    decrypt_seconds_per_ciphertext: float
    ciphertext_bytes: float
    devices: dict[str, DeviceProfile]
    gc_bytes_per_relu: float
    ot_bytes_per_relu: float
    online_bytes_per_relu: float
    server_device: str
    raw: dict

    def he_seconds(self, ops: HeOps) -> float:
        """Single-thread server HE evaluation time of ``ops`` (Delphi offline phase)."""
        return sum(self.he_seconds_per[f] * getattr(ops, f) for f in HE_FEATURES)

    def client_he_seconds(self, ops: HeOps) -> float:
        """Client time to encrypt the inputs and decrypt the results of ``ops``."""
        return (self.encrypt_seconds_per_ciphertext * ops.input_ciphertexts
                + self.decrypt_seconds_per_ciphertext * ops.output_ciphertexts)

    def he_bytes(self, ops: HeOps) -> float:
        """Offline bytes the ciphertexts of ``ops`` take on the wire (both directions)."""
        return self.ciphertext_bytes * (ops.input_ciphertexts + ops.output_ciphertexts)

    def device(self, name: str) -> DeviceProfile:
        """A device profile by name, with an error listing the known ones."""
        try:
            return self.devices[name]
        except KeyError:
            raise CostModelError(f"unknown device profile {name!r}; accepted: "
                                 + ", ".join(sorted(self.devices))) from None


def calibration_from_dict(data: dict) -> Calibration:
    """Build a :class:`Calibration` from the JSON written by the calibration script."""
    try:
        he, client, gc = data["he"], data["client_he"], data["gc"]
        devices = {name: DeviceProfile(name, d["description"], d["garble_seconds_per_relu"],
                                       d["evaluate_seconds_per_relu"])
                   for name, d in gc["devices"].items()}
        return Calibration(
            he_seconds_per={f: he["seconds_per"][f] for f in HE_FEATURES},
            encrypt_seconds_per_ciphertext=client["encrypt_seconds_per_ciphertext"],
            decrypt_seconds_per_ciphertext=client["decrypt_seconds_per_ciphertext"],
            ciphertext_bytes=data["ciphertext_bytes"],
            devices=devices,
            gc_bytes_per_relu=gc["gc_bytes_per_relu"],
            ot_bytes_per_relu=gc["ot_bytes_per_relu"],
            online_bytes_per_relu=gc["online_label_bytes_per_relu"],
            server_device=he["device"],
            raw=data,
        )
    except (KeyError, TypeError) as err:
        raise CostModelError(f"calibration data is missing field {err}; regenerate it with "
                             "python -m hybrenet_jax.cost.calibrate") from None


@functools.lru_cache(maxsize=4)
def load_calibration(path: str | None = None) -> Calibration:
    """Load ``calibration.json`` (the packaged one unless ``path`` is given)."""
    target = pathlib.Path(path) if path else CALIBRATION_PATH
    try:
        data = json.loads(target.read_text())
    except FileNotFoundError:
        raise CostModelError(f"calibration file {target} not found; create it with "
                             "python -m hybrenet_jax.cost.calibrate") from None
    except json.JSONDecodeError as err:
        raise CostModelError(f"calibration file {target} is not valid JSON: {err}") from None
    return calibration_from_dict(data)
