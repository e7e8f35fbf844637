"""Filesystem-safe run directory names derived from model strings."""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


def run_dir_name(model: str, dataset: str, distill: str = "none") -> str:
    """``hrn-2x5x3x_m_16_cull_S1-kd-1a2b3c4d``: readable model, distillation and a hash.

    Characters other than letters, digits, ``.`` and ``-`` (``:`` ``,`` ``=`` ``+``) become
    ``_``; the 8-hex-digit hash of ``model|dataset|distill`` keeps names that map to the same
    text (and the same model trained differently) apart.
    """
    safe = _UNSAFE.sub("_", model.strip()).strip("_") or "model"
    digest = hashlib.sha256(f"{model.strip()}|{dataset}|{distill}".encode()).hexdigest()[:8]
    return f"{safe}-{distill}-{digest}"
