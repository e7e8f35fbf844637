"""Shared test helpers."""

from __future__ import annotations

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
    """The read-only ``../shared`` folder beside the checkout (spec, reference data)."""
    if not SHARED.is_dir():
        pytest.skip("../shared (reference data) is not beside this checkout")
    return SHARED
