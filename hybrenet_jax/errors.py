"""Error types raised for user mistakes.

Every error raised for bad input derives from :class:`HybrenetError`, so the CLI can turn it
into a one-line message with exit code 2 instead of a traceback.
"""

from __future__ import annotations


class HybrenetError(ValueError):
    """Base class for errors caused by bad user input (exit code 2 in the CLI)."""


class DescriptionError(HybrenetError):
    """A network description has an invalid field (the message names field and accepted values)."""


class ModelStringError(HybrenetError):
    """A model string such as ``hrn-5x5x3x:m=16`` could not be parsed."""


class DesignError(HybrenetError):
    """A design request (equalization, plan) is impossible or malformed."""


class VariablesMismatchError(HybrenetError):
    """Variables (checkpoint, teacher, bundle) do not fit the model their description builds."""


class ConfigError(HybrenetError):
    """A config file, an override or a config field is wrong (the message names each one)."""
