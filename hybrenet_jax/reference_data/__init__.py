"""Published facts the product ships with: comparison points and Delphi/GC measurements.

Copies of the reference data the project was built against (numbers are facts), so that
``hybrenet pareto`` and the cost-model calibration work from an installed package with nothing
beside it. ``delphi/README.md`` says where each measurement comes from.
"""

from __future__ import annotations

import pathlib

#: The folder holding the data files (package data of ``hybrenet_jax``).
DATA_DIR = pathlib.Path(__file__).resolve().parent


def published_points_path() -> pathlib.Path:
    """The DeepReShape paper's published (ReLUs, FLOPs, accuracy) points, one CSV."""
    return DATA_DIR / "published_points.csv"


def delphi_dir() -> pathlib.Path:
    """Delphi per-layer HE timings and garbled-circuit benchmarks (JSON + README)."""
    return DATA_DIR / "delphi"
