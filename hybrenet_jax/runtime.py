"""Process-wide XLA settings that our entry points apply before JAX starts a backend.

XLA:CPU (jaxlib 0.10) hands convolutions to YNNPACK by default, whose convolution *weight
gradients* are several times slower than its forward pass; Eigen's convolutions train our
networks 1.4-2.0x faster on CPU (``docs/benchmarks.md``). ``configure_xla`` routes convolutions
to Eigen by appending one flag to ``XLA_FLAGS``. It is added only where JAX will run on the
CPU: not when ``JAX_PLATFORMS`` names no ``cpu``, nor (unless ``JAX_PLATFORMS`` names ``cpu``)
when a GPU/TPU plugin of JAX is installed, whose XLA build need not know the flag.

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
#: jaxlib versions known to accept the flag (an unknown XLA flag aborts the process).
_FLAG_JAXLIB = ((0, 10), (0, 11))
OPT_OUT = "HYBRENET_XLA_DEFAULTS"


def _jaxlib_version() -> tuple[int, int] | None:
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


def configure_xla(environ: MutableMapping[str, str] | None = None) -> bool:
    """Add our default XLA flags to ``environ`` (default ``os.environ``); True if it changed.

    Leaves everything alone when the user opted out, already chose the YNNPACK setting, JAX
    will not run on the CPU (see the module docstring), the installed jaxlib is not one known
    to accept the flag, or a JAX backend already exists (XLA reads its flags once, when the
    first backend starts).
    """
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "")
    if environ.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if _YNN_FLAG in flags or not _runs_on_cpu(environ):
        return False
    version = _jaxlib_version()
    if version is None or not _FLAG_JAXLIB[0] <= version < _FLAG_JAXLIB[1]:
        return False
    if environ is os.environ and _backend_started():
        log.debug("JAX backend already started; XLA_FLAGS left unchanged")
        return False
    environ["XLA_FLAGS"] = f"{flags} {EIGEN_CONVOLUTIONS}".strip()
    return True
