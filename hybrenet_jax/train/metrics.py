"""Metric output: JSON lines and TensorBoard scalars in the workdir (process 0 only)."""

from __future__ import annotations

import json
import logging
import math
import pathlib
from typing import Mapping

log = logging.getLogger(__name__)


class MetricWriter:
    """Append ``{"step": s, "split": ..., **scalars}`` to ``metrics.jsonl``; mirror to TensorBoard."""

    def __init__(self, workdir: pathlib.Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = workdir / "metrics.jsonl"
        self.tb = None
        if enabled and tensorboard:
            try:
                from flax.metrics.tensorboard import SummaryWriter  # imports TensorFlow

                self.tb = SummaryWriter(str(workdir / "tensorboard"))
            except Exception as err:  # noqa: BLE001 - TensorBoard is optional
                log.warning("TensorBoard summaries disabled: %s", err)

    def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if math.isfinite(float(v)) else str(float(v)))
                 for k, v in scalars.items()}
        with self.path.open("a") as f:
            f.write(json.dumps({"step": int(step), "split": split, **clean}) + "\n")
        if self.tb is not None:
            for key, value in scalars.items():
                self.tb.scalar(f"{split}/{key}", float(value), int(step))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
