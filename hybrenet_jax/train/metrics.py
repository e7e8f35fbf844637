"""Metric output: JSON lines and TensorBoard scalars in the workdir (process 0 only).

TensorBoard event files are written with the ``tensorboard`` package alone (its event protos,
scalar summary builder and record framing); TensorFlow is never imported, so the scalars are
written whether or not TensorFlow is installed.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import pathlib
import socket
import time
from typing import Mapping

log = logging.getLogger(__name__)

_FILE_IDS = itertools.count()  # distinguishes two writers opened in the same second


class ScalarEventWriter:
    """One TensorBoard event file in ``logdir`` holding scalar summaries (no TensorFlow).

    Scalars are stored the way ``tf.summary.scalar`` stores them (a float32 tensor with the
    ``scalars`` plugin metadata), so TensorBoard and its readers see ordinary scalar curves.
    Every :meth:`scalars` call is flushed to disk before it returns.
    """

    def __init__(self, logdir: str | os.PathLike[str]):
        # Imported here: these modules pull in protobuf, which plain JSON-lines runs skip.
        from tensorboard.compat.proto import event_pb2
        from tensorboard.plugins.scalar.summary_v2 import scalar_pb
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event_pb2, self._scalar_pb = event_pb2, scalar_pb
        self.logdir = pathlib.Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.path = self.logdir / (f"events.out.tfevents.{int(time.time()):010d}."
                                   f"{socket.gethostname()}.{os.getpid()}.{next(_FILE_IDS)}")
        self._records = RecordWriter(self.path.open("wb"))
        self._write(event_pb2.Event(
            wall_time=time.time(), file_version="brain.Event:2",
            source_metadata=event_pb2.SourceMetadata(writer="hybrenet_jax")))
        self._records.flush()

    def _write(self, event) -> None:
        self._records.write(event.SerializeToString())

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Append one scalar event per ``tag: value`` at ``step`` and flush."""
        now = time.time()
        for tag, value in values.items():
            self._write(self._event_pb2.Event(wall_time=now, step=int(step),
                                              summary=self._scalar_pb(tag, float(value))))
        self._records.flush()

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        if not self._records.closed:
            self._records.flush()
            self._records.close()


class MetricWriter:
    """Append ``{"step": s, "split": ..., **scalars}`` to ``metrics.jsonl``; mirror to TensorBoard.

    TensorBoard scalars go to ``workdir/tensorboard`` as ``SPLIT/NAME`` tags.
    """

    def __init__(self, workdir: pathlib.Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = pathlib.Path(workdir) / "metrics.jsonl"
        self.tb: ScalarEventWriter | None = None
        if enabled and tensorboard:
            try:
                self.tb = ScalarEventWriter(pathlib.Path(workdir) / "tensorboard")
            except (ImportError, OSError) as err:  # TensorBoard is a nice-to-have
                log.warning("TensorBoard summaries disabled: %s", err)

    def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
        """Record ``scalars`` of ``split`` (``train``, ``eval``) at ``step``."""
        if not self.enabled:
            return
        clean = {k: (float(v) if math.isfinite(float(v)) else str(float(v)))
                 for k, v in scalars.items()}
        with self.path.open("a") as f:
            f.write(json.dumps({"step": int(step), "split": split, **clean}) + "\n")
        if self.tb is not None:
            self.tb.scalars(step, {f"{split}/{key}": float(v) for key, v in scalars.items()})

    def close(self) -> None:
        """Flush and close the TensorBoard file."""
        if self.tb is not None:
            self.tb.close()
