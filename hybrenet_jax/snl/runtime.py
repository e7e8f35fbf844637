"""What the SNL loops share: mesh, data splits, an endless batch stream, resumable state."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections

from hybrenet_jax import data as data_lib
from hybrenet_jax.train.checkpoint import Checkpointer
from hybrenet_jax.train.loop import DTYPES, evaluate, make_mesh
from hybrenet_jax.train.steps import make_eval_step, replicated


@dataclasses.dataclass
class Runtime:
    """Mesh and data of one SNL run (built once, shared by search and fine-tuning)."""

    config: ml_collections.ConfigDict
    mesh: Any
    train: Any
    test: Any
    steps_per_epoch: int

    @classmethod
    def create(cls, config: ml_collections.ConfigDict) -> "Runtime":
        mesh = make_mesh(config.mesh_model_axis)
        train = data_lib.load_dataset(config.dataset, "train", config.data_dir or None,
                                      config.manual_dir or None)
        test = data_lib.load_dataset(config.dataset, data_lib.eval_split(config.dataset),
                                     config.data_dir or None, config.manual_dir or None)
        spe = data_lib.steps_per_epoch(len(train), config.batch_size)
        return cls(config, mesh, train, test, spe)

    @property
    def dtype(self):
        return DTYPES[self.config.dtype]

    def batches(self, start_step: int) -> Iterator[dict]:
        """Sharded training batches from global step ``start_step`` on, epoch after epoch.

        The same ``(seed, epoch)`` order as the training loop, so a resumed loop sees the
        batches it would have seen without the interruption.
        """
        c = self.config
        step = start_step
        while True:
            epoch, start = divmod(step, self.steps_per_epoch)
            for batch in data_lib.train_batches(
                    self.train, c.batch_size, seed=c.seed, epoch=epoch,
                    process_index=jax.process_index(), process_count=jax.process_count(),
                    crop_padding=c.crop_padding, flip=c.flip, augment=c.augment,
                    start_batch=start):
                yield data_lib.shard_batch(batch, self.mesh)
                step += 1

    def evaluate(self, model, variables) -> dict[str, float]:
        """Exact test metrics of ``model`` with ``variables`` (any collections)."""
        return evaluate(make_eval_step(model, self.mesh), variables, self.test,
                        self.config.batch_size, self.mesh)

    def replicate(self, tree):
        return jax.device_put(tree, replicated(self.mesh))


def restore(directory: pathlib.Path, init_fn, mesh) -> tuple[Any, dict | None, Checkpointer]:
    """Newest intact checkpoint under ``directory`` (or ``init_fn()``), and its checkpointer."""
    rep = replicated(mesh)
    abstract = jax.eval_shape(init_fn)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                            abstract)
    checkpointer = Checkpointer(directory, max_to_keep=1, keep_best=0, use_async=False)
    found = checkpointer.restore_latest(abstract)
    if found is None:
        return jax.jit(init_fn, out_shardings=rep)(), None, checkpointer
    return found[0], found[1], checkpointer


def as_float32(tree):
    """Host numpy tree -> float32 jax arrays (mask values, loaded variables)."""
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)
