"""Errors of SNL (bad input: CLI exit code 2)."""

from __future__ import annotations

from hybrenet_jax.errors import HybrenetError


class SNLError(HybrenetError):
    """Bad SNL input: budget, granularity, model, masks file or pretrained/teacher run."""
