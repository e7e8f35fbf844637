"""Training: sharded jit steps, KD/DKD, orbax checkpoints, metrics (see ``loop.py``)."""

from hybrenet_jax.errors import ConfigError
from hybrenet_jax.train.loop import train_and_evaluate
from hybrenet_jax.train.run_identity import RunIdentityError
from hybrenet_jax.train.rundir import TrainingError
from hybrenet_jax.train.workdir_lock import WorkdirBusyError

__all__ = ["ConfigError", "RunIdentityError", "TrainingError", "WorkdirBusyError",
           "train_and_evaluate"]
