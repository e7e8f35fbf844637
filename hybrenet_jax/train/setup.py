"""The training core every loop runs on: mesh, data splits, batch stream, restore, evaluation.

:class:`Setup` is built once per run from a :class:`~hybrenet_jax.schema.TrainConfig`
(:meth:`Setup.create`: the mesh, both splits loaded once — process 0 prepares them while the
others wait — and the steps per epoch). The loops differ only in their objective
(:mod:`hybrenet_jax.train.steps`): the training loop's cross-entropy/KD/DKD
(:func:`hybrenet_jax.train.loop.train_and_evaluate`) and SNL's mask search and masked
fine-tuning (:mod:`hybrenet_jax.snl`) all take their batches from :meth:`Setup.feed` (through
:meth:`Setup.steps`, or per search epoch), restore with :meth:`Setup.restore` and evaluate
with :meth:`Setup.evaluate`.

The batch stream is one deterministic ``(seed, epoch)`` order over all steps: step ``s`` is
batch ``s % S`` of epoch ``s // S`` whatever the worker count, so a resumed loop sees the
batches it would have seen without the interruption.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp

from hybrenet_jax import data as data_lib
from hybrenet_jax import distributed
from hybrenet_jax.data.pipeline import train_stream
from hybrenet_jax.data.prefetch import default_workers
from hybrenet_jax.model_string import spec_from_model_string
from hybrenet_jax.models import build_model
from hybrenet_jax.schema import DTYPE_NAMES, TrainConfig, stream_seed
from hybrenet_jax.train.checkpoint import Checkpointer, CheckpointError, load_variables
from hybrenet_jax.train.rundir import TrainingError
from hybrenet_jax.train.steps import Teacher, make_eval_step, replicated
from hybrenet_jax.variables import validate_variables

DTYPES = dict(zip(DTYPE_NAMES, (jnp.float32, jnp.bfloat16)))


def make_mesh(model_axis: int = 1) -> jax.sharding.Mesh:
    """A ``(data, model)`` mesh over all devices; the model axis is reserved (size 1 today)."""
    n = jax.device_count()
    if model_axis < 1 or n % model_axis:
        raise TrainingError(f"mesh_model_axis={model_axis} must divide the {n} devices")
    # Auto axes: XLA's sharding propagation (pjit style) places every intermediate, so
    # gradients contracted over the sharded batch need no per-op annotations.
    auto = jax.sharding.AxisType.Auto
    return jax.make_mesh((n // model_axis, model_axis), ("data", "model"),
                         axis_types=(auto, auto))


def data_workers(config: TrainConfig) -> int:
    """Threads preparing training batches: ``config.data_workers``, or automatic when 0."""
    return config.data_workers or default_workers()


def train_feed(train: data_lib.ArraySplit, config: TrainConfig, mesh,
               start_step: int, stop_step: int,
               normalization: data_lib.Normalization | None = None
               ) -> Iterator[dict[str, jax.Array]]:
    """The placed training batches of steps ``start_step .. stop_step - 1``.

    ``data_workers(config)`` threads make the batches (``train_stream``); one thread takes
    them in order, puts each on the mesh (``shard_batch``) and keeps ``config.prefetch`` of
    them ready. The batches are those of one thread, whatever the worker count.
    """
    local = train_stream(
        train, config.batch_size, seed=stream_seed(config), start_step=start_step,
        stop_step=stop_step, process_index=jax.process_index(),
        process_count=jax.process_count(), normalization=normalization,
        crop_padding=config.crop_padding, flip=config.flip, augment=config.augment,
        workers=data_workers(config))

    def placed() -> Iterator[dict[str, jax.Array]]:
        with contextlib.closing(local):  # stops the workers when the feed is closed
            for batch in local:
                yield data_lib.shard_batch(batch, mesh)

    return data_lib.prefetch(placed(), config.prefetch)


def load_splits(config: TrainConfig) -> tuple[data_lib.ArraySplit, data_lib.ArraySplit]:
    """Both splits; process 0 downloads and prepares them first while the others wait, then
    the others read (one writer of ``data_dir``); a failure anywhere stops every process."""
    main_process = jax.process_index() == 0

    def load() -> tuple[data_lib.ArraySplit, data_lib.ArraySplit]:
        train = data_lib.load_dataset(config.dataset, "train", config.data_dir or None,
                                      config.manual_dir or None)
        test = data_lib.load_dataset(config.dataset, data_lib.eval_split(config.dataset),
                                     config.data_dir or None, config.manual_dir or None)
        return train, test

    first = distributed.agree("data-prepare", load if main_process else lambda: None,
                              timeout_s=6 * 3600.0)
    rest = distributed.agree("data-read", (lambda: None) if main_process else load,
                             timeout_s=6 * 3600.0)
    return first if main_process else rest


def load_teacher(config: TrainConfig, mesh) -> Teacher:
    """The frozen teacher ``config.distill`` names, from one of our run directories."""
    tdir = config.distill.teacher_workdir
    variables, meta = load_variables(tdir, config.distill.teacher_checkpoint)
    model_string = config.distill.teacher_model or meta.get("model")
    if not model_string:
        raise CheckpointError(f"teacher checkpoint in {tdir} does not record its model string; "
                              "set distill.teacher_model")
    spec = spec_from_model_string(model_string, config.dataset)
    teacher = build_model(spec, DTYPES[config.dtype])
    variables = validate_variables(spec, variables, f"teacher checkpoint in {tdir}",
                                   "Set distill.teacher_model to the teacher's model string.")
    variables = jax.device_put(variables, replicated(mesh))
    return Teacher(teacher, variables)


@dataclasses.dataclass
class Setup:
    """Mesh and data of one run, shared by its loops (training, SNL search, fine-tuning)."""

    config: TrainConfig
    mesh: jax.sharding.Mesh
    train: data_lib.ArraySplit
    test: data_lib.ArraySplit
    steps_per_epoch: int

    @classmethod
    def create(cls, config: TrainConfig) -> "Setup":
        """Mesh, both splits (loaded once, agreed over the processes) and steps per epoch.

        Raises:
          TrainingError: the batch is larger than the training split.
        """
        mesh = make_mesh(config.mesh_model_axis)
        train, test = load_splits(config)
        spe = data_lib.steps_per_epoch(len(train), config.batch_size)
        if spe == 0:
            raise TrainingError(f"batch_size={config.batch_size} exceeds the {len(train)} "
                                f"training examples of {config.dataset}")
        return cls(config, mesh, train, test, spe)

    @property
    def dtype(self):
        """The compute dtype of the models (``config.dtype``)."""
        return DTYPES[self.config.dtype]

    def replicate(self, tree: Any) -> Any:
        """``tree`` with a full copy on every device of the mesh."""
        return jax.device_put(tree, replicated(self.mesh))

    def feed(self, start_step: int, stop_step: int) -> Iterator[dict[str, jax.Array]]:
        """The placed batches of steps ``start_step .. stop_step - 1`` (:func:`train_feed`)."""
        return train_feed(self.train, self.config, self.mesh, start_step, stop_step)

    def steps(self, step_fn: Callable, state: Any, stop_step: int, *args: Any
              ) -> Iterator[tuple[int, Any, dict]]:
        """Run ``state, metrics = step_fn(state, batch, *args)`` up to ``stop_step``, yielding
        ``(step, state, metrics)`` after each step; the data threads stop when the loop ends
        or is left early."""
        step = int(state.step)
        if step >= stop_step:
            return
        with contextlib.closing(self.feed(step, stop_step)) as feed:
            for batch in feed:
                state, metrics = step_fn(state, batch, *args)
                step += 1
                yield step, state, metrics

    def restore(self, checkpointer: Checkpointer, init_fn: Callable[[], Any]
                ) -> tuple[Any, dict | None]:
        """The newest intact checkpoint of ``checkpointer`` shaped like ``init_fn()`` and its
        meta, or ``(init_fn(), None)`` placed on the mesh when there is none."""
        rep = replicated(self.mesh)
        abstract = jax.eval_shape(init_fn)
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                                abstract)
        found = checkpointer.restore_latest(abstract)
        if found is None:
            return jax.jit(init_fn, out_shardings=rep)(), None
        return found

    def eval_step(self, model) -> Callable:
        """The jitted eval step of ``model`` on this mesh (build once, evaluate often)."""
        return make_eval_step(model, self.mesh)

    def evaluate(self, eval_step: Callable, variables) -> dict[str, float]:
        """Exact metrics of ``eval_step`` with ``variables`` (any collections) over the whole
        eval split (padded last batch, masked)."""
        sums = None
        batches = data_lib.eval_batches(self.test, self.config.batch_size,
                                        process_index=jax.process_index(),
                                        process_count=jax.process_count())
        for batch in batches:
            out = eval_step(variables, data_lib.shard_batch(batch, self.mesh))
            sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
        sums = jax.device_get(sums)
        n = float(sums["count"])
        return {"loss": float(sums["loss"]) / n, "accuracy": float(sums["top1"]) / n,
                "top5": float(sums["top5"]) / n, "examples": n}
