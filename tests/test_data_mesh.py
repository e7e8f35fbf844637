"""Placing host-local batches on a mesh as global arrays sharded over the ``data`` axis."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from hybrenet_jax.data import (
    DatasetError,
    batch_sharding,
    load_dataset,
    prefetch,
    shard_batch,
    train_batches,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_shard_batch_on_local_devices():
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    data = load_dataset("digits", "train")
    local = next(train_batches(data, 8 * jax.device_count(), seed=0, epoch=0))
    placed = shard_batch(local, mesh)
    assert set(placed) == {"image", "label"}
    for key, arr in placed.items():
        assert isinstance(arr, jax.Array)
        assert arr.sharding == NamedSharding(mesh, P("data"))
        assert arr.shape == local[key].shape and arr.dtype == local[key].dtype
        np.testing.assert_array_equal(np.asarray(arr), local[key])


def test_shard_batch_through_prefetch():
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    data = load_dataset("digits", "test")
    batches = train_batches(data, 4 * jax.device_count(), seed=1, epoch=0)
    placed = list(prefetch(shard_batch(b, mesh) for b in batches))
    assert len(placed) == len(data) // (4 * jax.device_count())
    assert all(isinstance(b["image"], jax.Array) for b in placed)


def test_unknown_mesh_axis():
    mesh = jax.make_mesh((jax.device_count(),), ("batch",))
    with pytest.raises(DatasetError, match="not 'data'"):
        batch_sharding(mesh)


EIGHT_DEVICES = textwrap.dedent(
    """
    import jax, numpy as np, pytest
    from hybrenet_jax.data import DatasetError, load_dataset, shard_batch, train_batches
    assert jax.device_count() == 8, jax.devices()
    mesh = jax.make_mesh((8,), ("data",))
    local = next(train_batches(load_dataset("digits", "train"), 128, seed=0, epoch=0))
    placed = shard_batch(local, mesh)
    image = placed["image"]
    assert image.shape == (128, 32, 32, 3)
    assert len(image.sharding.device_set) == 8
    shards = sorted(image.addressable_shards, key=lambda s: s.index[0].start)
    assert [s.data.shape[0] for s in shards] == [16] * 8
    assert len({s.device for s in shards}) == 8
    for s in shards:
        np.testing.assert_array_equal(np.asarray(s.data), local["image"][s.index])
    bad = {"label": np.zeros(12, np.int32)}
    with pytest.raises(DatasetError, match="cannot be split over the 8 devices"):
        shard_batch(bad, mesh)
    print("OK")
    """
)


def test_global_array_is_sharded_over_eight_fake_devices():
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
    }
    out = subprocess.run(
        [sys.executable, "-c", EIGHT_DEVICES], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")
