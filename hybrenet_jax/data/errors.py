"""Error type raised by the data package for bad names, splits, folders and batch sizes."""

from __future__ import annotations

from hybrenet_jax.errors import HybrenetError


class DatasetError(HybrenetError):
    """A dataset request cannot be served (unknown name or split, missing or corrupt files,
    a batch size that does not fit); the message says what was expected and where."""


class TfdsUnavailableError(DatasetError):
    """A tfds dataset was requested but TensorFlow / tensorflow-datasets cannot be imported;
    the message names the missing module and the install command."""
