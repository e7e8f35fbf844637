"""Errors raised by the exporter (all :class:`~hybrenet_jax.errors.HybrenetError`: CLI exit 2)."""

from __future__ import annotations

from hybrenet_jax.errors import HybrenetError, VariablesMismatchError


class ExportError(HybrenetError):
    """An export cannot be produced (missing model string, unusable checkpoint, bad output)."""


class BundleError(ExportError):
    """A bundle is unreadable, incomplete, or written in an unknown format version."""


__all__ = ["BundleError", "ExportError", "VariablesMismatchError"]
