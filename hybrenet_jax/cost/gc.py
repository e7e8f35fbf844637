"""Garbled-circuit cost of ReLUs in Delphi (server garbles offline, client evaluates online).

Times are single-thread per-ReLU slopes from the criterion benchmarks, divided by the thread
count (the linear speed-up the Garimella et al. simulator assumes; not a measurement). Bytes
per ReLU come from Delphi's own end-to-end runs.
"""

from __future__ import annotations

import dataclasses

from hybrenet_jax.cost.constants import Calibration, load_calibration
from hybrenet_jax.cost.packing import CostModelError

DEFAULT_THREADS = 4
DEFAULT_CLIENT_DEVICE = "atom"
#: Device profiles calibration.json defines (listed here so the CLI need not load it).
DEVICE_NAMES = ("atom", "epyc")


@dataclasses.dataclass(frozen=True)
class GcCost:
    """GC time and bytes for ``relus`` ReLUs with ``threads`` threads on each side."""

    relus: int
    threads: int
    garble_seconds: float  # offline, server
    evaluate_seconds: float  # online, client
    storage_bytes: float  # garbled circuits the client stores between phases
    offline_bytes: float  # garbled circuits + OT extension
    online_bytes: float  # the server's input labels

    @property
    def seconds(self) -> float:
        return self.garble_seconds + self.evaluate_seconds


def check_threads(threads: int) -> int:
    """Validate a thread count (a positive integer)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise CostModelError(f"threads={threads!r}: must be a positive integer")
    return threads


def gc_cost(relus: int, threads: int = DEFAULT_THREADS,
            client_device: str = DEFAULT_CLIENT_DEVICE, server_device: str | None = None,
            calibration: Calibration | None = None) -> GcCost:
    """Garble (server) + evaluate (client) cost of ``relus`` ReLUs; linear in ``relus``."""
    cal = calibration or load_calibration()
    check_threads(threads)
    if isinstance(relus, bool) or not isinstance(relus, int) or relus < 0:
        raise CostModelError(f"relus={relus!r}: must be a non-negative integer")
    server = cal.device(server_device or cal.server_device)
    client = cal.device(client_device)
    return GcCost(
        relus=relus,
        threads=threads,
        garble_seconds=relus * server.garble_seconds_per_relu / threads,
        evaluate_seconds=relus * client.evaluate_seconds_per_relu / threads,
        storage_bytes=relus * cal.gc_bytes_per_relu,
        offline_bytes=relus * (cal.gc_bytes_per_relu + cal.ot_bytes_per_relu),
        online_bytes=relus * cal.online_bytes_per_relu,
    )
