"""Delphi private-inference cost model (HE for linear layers, garbled circuits for ReLUs).

* :mod:`.packing`: Delphi's ciphertext packing and per-layer operation counts;
* :mod:`.calibrate`: fits per-operation costs on the measured reference data
  (``python -m hybrenet_jax.cost.calibrate`` writes ``calibration.json``);
* :mod:`.gc`: garbled-circuit time/bytes per ReLU, thread count, device profiles;
* :mod:`.network`: :func:`estimate` for a whole network.

See ``docs/cost_model.md`` for the assumptions and the calibration results.
"""

from hybrenet_jax.cost.constants import Calibration, DeviceProfile, load_calibration
from hybrenet_jax.cost.gc import GcCost, gc_cost
from hybrenet_jax.cost.network import NetworkCost, estimate
from hybrenet_jax.cost.packing import CostModelError, HeOps, conv_ops, conv_packing, fc_ops

__all__ = ["Calibration", "CostModelError", "DeviceProfile", "GcCost", "HeOps", "NetworkCost",
           "conv_ops", "conv_packing", "estimate", "fc_ops", "gc_cost", "load_calibration"]
