"""What machine an accelerator run ran on: ``python -m bench.environment`` prints it as JSON.

Run as a child of the benchmark (it starts a JAX backend and, when installed, initializes
CUDA through torch), with ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` so it holds no GPU memory
for long. Every probe is best-effort: a missing tool becomes ``None``, never an error.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from typing import Any

PACKAGES = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "libtpu", "flax", "optax",
            "orbax-checkpoint", "numpy", "ml-collections", "onnx", "onnxruntime", "torch",
            "tensorflow", "tensorflow-datasets")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a run depends on (``None``: not installed)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def nvidia_smi() -> dict[str, Any] | None:
    """GPU names, driver and the driver's CUDA version from ``nvidia-smi`` (None without it)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        query = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=30, check=True)
        header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = []
    for line in query.stdout.strip().splitlines():
        name, driver, memory, clock = (part.strip() for part in line.split(",")[:4])
        gpus.append({"name": name, "driver": driver, "memory": memory, "max_sm_clock": clock})
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", header.stdout)
    return {"gpus": gpus, "driver_cuda": cuda.group(1) if cuda else None}


def jax_facts() -> dict[str, Any]:
    """JAX's backend and devices, as a training run sees them."""
    try:
        import jax

        devices = jax.devices()
        return {"backend": jax.default_backend(), "device_count": len(devices),
                "device_kinds": sorted({d.device_kind for d in devices}),
                "platform_version": getattr(devices[0].client, "platform_version", None)}
    except Exception as err:  # noqa: BLE001 -- reported, not raised
        return {"error": f"{type(err).__name__}: {err}"}


def torch_facts() -> dict[str, Any] | None:
    """torch's CUDA and cuDNN versions and device name (None: torch not installed)."""
    try:
        import torch
    except ImportError:
        return None
    facts: dict[str, Any] = {"cuda": torch.version.cuda, "cuda_available": False}
    try:
        if torch.cuda.is_available():
            facts.update(cuda_available=True, device=torch.cuda.get_device_name(0),
                         cudnn=torch.backends.cudnn.version(),
                         capability=".".join(map(str, torch.cuda.get_device_capability(0))))
    except Exception as err:  # noqa: BLE001
        facts["error"] = f"{type(err).__name__}: {err}"
    return facts


def cpu_model() -> str:
    """The host CPU's model name."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict[str, Any]:
    """Everything above plus Python, host and the XLA flags in force."""
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpu": cpu_model(), "cores": os.cpu_count(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "packages": package_versions(),
            "nvidia_smi": nvidia_smi(), "jax": jax_facts(), "torch": torch_facts()}


if __name__ == "__main__":
    from hybrenet_jax.runtime import configure_xla

    configure_xla()  # the flags our entry points run with
    print(json.dumps(describe()))
    sys.exit(0)
