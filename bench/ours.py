"""Our side of the benchmark: the real jit-compiled training step of ``hybrenet_jax``.

Nothing here imports torch. The step is :func:`hybrenet_jax.train.steps.make_train_step` over
the mesh of :func:`hybrenet_jax.train.setup.make_mesh`, with the optimizer of the training loop
(SGD, momentum 0.9, coupled weight decay 5e-4) and a plain cross-entropy loss.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from hybrenet_jax import models
from hybrenet_jax.data.sharding import shard_batch
from hybrenet_jax.model_string import spec_from_model_string
from hybrenet_jax.netspec import NetSpec
from hybrenet_jax.train.setup import make_mesh
from hybrenet_jax.train.state import create_state, learning_rate_schedule, make_optimizer
from hybrenet_jax.train.steps import LossConfig, make_train_step, replicated

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
LEARNING_RATE = 0.1
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4


@contextlib.contextmanager
def fast_conv_patch(enabled: bool = True) -> Iterator[None]:
    """Make :func:`hybrenet_jax.models.build_model` use :mod:`hybrenet_jax.fastconv`.

    A monkeypatch of ``models._conv`` for measuring only: the models themselves would take a
    ``conv_general_dilated=`` hook (see docs/benchmarks.md). The patch must be active while the
    step is traced (the first call).
    """
    if not enabled:
        yield
        return
    from bench import fastconv

    original = models._conv

    def patched(features, kernel, stride, dtype, name):
        pad = kernel // 2
        return models.nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                              padding=((pad, pad), (pad, pad)), use_bias=False, dtype=dtype,
                              name=name, conv_general_dilated=fastconv.conv_general_dilated)

    models._conv = patched
    try:
        yield
    finally:
        models._conv = original


def synthetic_batch(batch: int, spec: NetSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """A fixed random batch of CIFAR-shaped (normalised) images and labels."""
    rng = np.random.default_rng(seed)
    shape = models.input_shape(spec, batch)
    return {"image": rng.standard_normal(shape, dtype=np.float32),
            "label": rng.integers(0, spec.classes, batch).astype(np.int32)}


@dataclasses.dataclass
class OurStep:
    """A ready-to-run training step: ``run()`` does one step and waits for it."""

    spec: NetSpec
    batch_size: int
    step_fn: Callable
    state: Any
    batch: Any
    fast_conv: bool
    _metrics: Any = None

    def run(self) -> None:
        with fast_conv_patch(self.fast_conv):  # only matters while the first call traces
            self.state, metrics = self.step_fn(self.state, self.batch)
            jax.block_until_ready(self.state)
        self._metrics = metrics

    def loss(self) -> float:
        return float(self._metrics["loss"])

    def peak_bytes(self) -> int | None:
        """Peak device memory in use so far (the allocator's statistic; None on XLA:CPU)."""
        stats = jax.local_devices()[0].memory_stats()
        return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None

    def set_batch(self, host: dict[str, np.ndarray]) -> None:
        """Use another (host) batch from the next step on."""
        self.batch = shard_batch(host, make_mesh())


def build_step(network: str, batch: int, dtype: str = "float32", fast_conv: bool = False,
               dataset: str = "cifar100", seed: int = 0,
               batches: list[dict[str, np.ndarray]] | None = None) -> OurStep:
    """Build our training step for ``network`` (a model string) on CIFAR-shaped input.

    ``batches`` (host arrays) overrides the synthetic batch; only the first is used here.
    """
    spec = spec_from_model_string(network, dataset)
    mesh = make_mesh()
    schedule = learning_rate_schedule(LEARNING_RATE, 10_000, 0, "constant")
    optimizer = make_optimizer(schedule, MOMENTUM, WEIGHT_DECAY)
    model = models.build_model(spec, DTYPES[dtype])

    def init(rng):  # as the training loop does: replicated from the start, so no retrace
        return create_state(model.init(rng, jnp.zeros(models.input_shape(spec, 1))), optimizer)

    with fast_conv_patch(fast_conv):
        state = jax.jit(init, out_shardings=replicated(mesh))(jax.random.PRNGKey(seed))
    step = make_train_step(model, optimizer, schedule, LossConfig(), mesh)
    host = batches[0] if batches else synthetic_batch(batch, spec, seed)
    return OurStep(spec, batch, step, state, shard_batch(host, mesh), fast_conv)
