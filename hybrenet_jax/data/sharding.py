"""Place a host-local batch onto a device mesh as a global array sharded over ``data``."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hybrenet_jax.data.errors import DatasetError


def batch_sharding(mesh: Mesh, axis: str = "data") -> NamedSharding:
    """Sharding that splits the leading (batch) axis over mesh axis ``axis``."""
    if axis not in mesh.axis_names:
        raise DatasetError(f"mesh has axes {mesh.axis_names}, not {axis!r}")
    return NamedSharding(mesh, P(axis))


def shard_batch(
    batch: Mapping[str, np.ndarray], mesh: Mesh, axis: str = "data"
) -> dict[str, jax.Array]:
    """Assemble every process's local rows into global arrays sharded over ``axis``.

    Args:
      batch: this process's rows (e.g. from ``train_batches``), equal counts on every process.
      mesh: the device mesh.
      axis: mesh axis that the batch dimension is split over.

    Returns:
      Dict of global ``jax.Array`` with ``process_count * local_rows`` rows each.
    """
    sharding = batch_sharding(mesh, axis)
    shards = mesh.shape[axis]
    out = {}
    for key, local in batch.items():
        rows = local.shape[0] * jax.process_count()
        if rows % shards:
            raise DatasetError(
                f"global batch of {rows} rows cannot be split over the {shards} devices of "
                f"mesh axis {axis!r}"
            )
        out[key] = jax.make_array_from_process_local_data(sharding, local)
    return out
