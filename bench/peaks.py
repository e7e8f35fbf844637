"""Dense peak TFLOP/s of common accelerators per compute dtype, for MFU.

float32 rows run their convolutions and matrix products as TF32 on NVIDIA GPUs from Ampere on
(JAX's default precision; PyTorch's ``cudnn.allow_tf32`` default), so their peak is the TF32
tensor-core peak. Numbers are the vendors' published dense (no sparsity) figures.
"""

from __future__ import annotations

#: (name fragment, {dtype: TFLOP/s}); the first fragment found in the device name wins.
PEAKS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"bfloat16": 989.4, "float32": 494.7}),
    ("H100 PCIe", {"bfloat16": 756.5, "float32": 378.0}),
    ("H100 NVL", {"bfloat16": 835.5, "float32": 417.5}),
    ("H100", {"bfloat16": 989.4, "float32": 494.7}),  # SXM / "H100 80GB HBM3"
    ("B200", {"bfloat16": 2250.0, "float32": 1100.0}),
    ("A100", {"bfloat16": 312.0, "float32": 156.0}),
    ("L40S", {"bfloat16": 362.1, "float32": 183.2}),
    ("L4", {"bfloat16": 121.0, "float32": 60.0}),
    ("A10", {"bfloat16": 125.0, "float32": 62.5}),
)


def peak_for(device_name: str | None) -> dict[str, float]:
    """The peaks of the device called ``device_name`` (empty if unknown)."""
    if not device_name:
        return {}
    for fragment, peaks in PEAKS:
        if fragment.lower() in device_name.lower():
            return dict(peaks)
    return {}
