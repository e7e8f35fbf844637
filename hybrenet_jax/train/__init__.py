"""Training: sharded jit steps, KD/DKD, orbax checkpoints, metrics (see ``loop.py``)."""

from hybrenet_jax.train.loop import TrainingError, train_and_evaluate

__all__ = ["TrainingError", "train_and_evaluate"]
