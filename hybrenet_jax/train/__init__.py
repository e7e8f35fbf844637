"""Training: sharded jit steps, KD/DKD, orbax checkpoints, metrics (see ``loop.py``).

``train_and_evaluate`` is loaded on first use (it imports JAX), so the light modules of this
package (``rundir``, ``storage``, ``workdir_lock``: what ``hybrenet pareto`` writes its report
through) do not pull in JAX.
"""

from hybrenet_jax.errors import ConfigError
from hybrenet_jax.train.rundir import TrainingError
from hybrenet_jax.train.workdir_lock import WorkdirBusyError

__all__ = ["ConfigError", "RunIdentityError", "TrainingError", "WorkdirBusyError",
           "train_and_evaluate"]


def __getattr__(name: str):
    if name == "train_and_evaluate":
        from hybrenet_jax.train.loop import train_and_evaluate  # noqa: PLC0415 (imports JAX)
        return train_and_evaluate
    if name == "RunIdentityError":
        from hybrenet_jax.train.run_identity import RunIdentityError  # noqa: PLC0415
        return RunIdentityError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
