"""Errors of the ReLU-optimization pipelines (bad input: CLI exit code 2)."""

from __future__ import annotations

from hybrenet_jax.errors import HybrenetError


class PipelineError(HybrenetError):
    """A pipeline request is impossible or inconsistent (bad order, budget, teacher, config)."""
