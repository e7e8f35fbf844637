"""Process-wide XLA settings that our entry points apply before JAX starts a backend.

XLA:CPU (jaxlib 0.10-0.12) hands convolutions to YNNPACK by default, whose convolution *weight
gradients* are several times slower than its forward pass; Eigen's convolutions train our
networks 1.4-2.0x faster on a 2-core Xeon (jaxlib 0.10) and 1.1-1.8x faster on a 2-core AMD
EPYC (jaxlib 0.10, 0.11 and 0.12; ``docs/benchmarks.md``, ``python -m bench.xla_flag_check``
re-measures). ``configure_xla`` routes convolutions to Eigen by appending one flag to
``XLA_FLAGS``. It is added only where JAX will run on the
CPU: not when ``JAX_PLATFORMS`` names no ``cpu``, nor (unless ``JAX_PLATFORMS`` names ``cpu``)
when a GPU/TPU plugin of JAX is installed, whose XLA build need not know the flag.

Where JAX runs on a GPU, ``configure_xla`` asks for deterministic kernels
(``--xla_gpu_deterministic_ops=true``), so that a killed-and-resumed run reproduces the
uninterrupted one bit for bit there too (``HYBRENET_DETERMINISTIC=0`` opts out).

Opt out with ``HYBRENET_XLA_DEFAULTS=0``; a user who sets the flag in ``XLA_FLAGS`` keeps theirs.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import sys
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
#: YNNPACK keeps dots and elementwise fusions (worth ~5%) but no longer takes convolutions.
EIGEN_CONVOLUTIONS = f"{_YNN_FLAG}=-individual_convolution"
#: jaxlib (major, minor) versions measured to accept the flag and to train faster with it
#: (``python -m bench.xla_flag_check``); an unknown XLA flag aborts the process, so a jaxlib
#: outside this set gets no flag until it is measured.
_FLAG_JAXLIB = frozenset({(0, 10), (0, 11), (0, 12)})
OPT_OUT = "HYBRENET_XLA_DEFAULTS"


def _jaxlib_version() -> tuple[int, int] | None:
    """(major, minor) of the installed jaxlib, without importing it; None if unknown."""
    try:
        major, minor = importlib.metadata.version("jaxlib").split(".")[:2]
        return int(major), int(minor)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


#: distributions that bring JAX a GPU or TPU back end
_ACCELERATOR_PLUGINS = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm", "libtpu")


def _accelerator_plugin_installed() -> bool:
    return any((dist.metadata["Name"] or "").lower().startswith(_ACCELERATOR_PLUGINS)
               for dist in importlib.metadata.distributions())


def _runs_on_cpu(environ: MutableMapping[str, str]) -> bool:
    platforms = [p.strip().lower() for p in environ.get("JAX_PLATFORMS", "").split(",")
                 if p.strip()]
    if platforms:
        return "cpu" in platforms
    return not _accelerator_plugin_installed()


def _backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # private API moved: assume the worst
        return True


#: GPU: deterministic reductions and convolution algorithms. Without it, XLA's default GPU
#: kernels make a killed-and-resumed run (or a rerun) differ from the uninterrupted one in the
#: last bits (seen on an H200, docs/accelerators.md); the cost is measured in docs/benchmarks.md.
DETERMINISTIC_GPU = "--xla_gpu_deterministic_ops=true"
_DETERMINISM_FLAG = "--xla_gpu_deterministic_ops"
#: ``HYBRENET_DETERMINISTIC=0`` keeps XLA's (faster, nondeterministic) default GPU kernels.
DETERMINISM_OPT_OUT = "HYBRENET_DETERMINISTIC"
_GPU_PLUGINS = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm")


def _runs_on_gpu(environ: MutableMapping[str, str]) -> bool:
    platforms = [p.strip().lower() for p in environ.get("JAX_PLATFORMS", "").split(",")
                 if p.strip()]
    if platforms:
        return any(p in ("cuda", "gpu", "rocm") for p in platforms)
    return _gpu_plugin_installed()


def _gpu_plugin_installed() -> bool:
    return any((dist.metadata["Name"] or "").lower().startswith(_GPU_PLUGINS)
               for dist in importlib.metadata.distributions())


def _off(environ: MutableMapping[str, str], name: str) -> bool:
    return environ.get(name, "1").strip().lower() in ("0", "false", "no", "off")


def _cpu_flag(environ: MutableMapping[str, str], flags: str) -> str | None:
    if _YNN_FLAG in flags or not _runs_on_cpu(environ):
        return None
    return EIGEN_CONVOLUTIONS


def _gpu_flag(environ: MutableMapping[str, str], flags: str) -> str | None:
    if _off(environ, DETERMINISM_OPT_OUT) or _DETERMINISM_FLAG in flags:
        return None
    return DETERMINISTIC_GPU if _runs_on_gpu(environ) else None


def configure_xla(environ: MutableMapping[str, str] | None = None) -> bool:
    """Add our default XLA flags to ``environ`` (default ``os.environ``); True if it changed.

    Where JAX runs on the CPU: Eigen convolutions (module docstring). Where it runs on a GPU:
    deterministic kernels (:data:`DETERMINISTIC_GPU`; ``HYBRENET_DETERMINISTIC=0`` opts out).
    A flag the user already set in ``XLA_FLAGS`` is left as it is. Nothing is added when the
    user opted out of all (``HYBRENET_XLA_DEFAULTS=0``), the installed jaxlib is not one known
    to accept the flags, or a JAX backend already exists (XLA reads its flags once, when the
    first backend starts).
    """
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "")
    if _off(environ, OPT_OUT) or _jaxlib_version() not in _FLAG_JAXLIB:
        return False
    extra = [f for f in (_cpu_flag(environ, flags), _gpu_flag(environ, flags)) if f]
    if not extra:
        return False
    if environ is os.environ and _backend_started():
        log.debug("JAX backend already started; XLA_FLAGS left unchanged")
        return False
    environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()
    return True
