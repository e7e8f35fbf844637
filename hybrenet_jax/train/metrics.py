"""Metric output: JSON lines and TensorBoard scalars in the workdir (process 0 only).

``metrics.jsonl`` is append-only and survives tears: a writer opening an existing file cuts
a torn last line (a run killed mid-write) back to the last complete record, and skips records
of a ``(split, step)`` at or below the last one already logged, so a resumed run (which
retrains the steps after its checkpoint, bit for bit) never logs a step twice. On cloud
storage (``gs://``…), which cannot append, records are kept in memory and the file is
rewritten whole at most every :data:`OBJECT_STORE_FLUSH_S` seconds, on every eval record and
on close (a crash loses at most that many seconds of training records there; the
checkpoints and the summary are written at once as always).

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
import socket
import time
from typing import Mapping


from hybrenet_jax.schema import MAX_STEPS
from hybrenet_jax.train.rundir import loads_record
from hybrenet_jax.train.storage import is_local, workdir_path, write_text_atomically

log = logging.getLogger(__name__)

_FILE_IDS = itertools.count()  # distinguishes two writers opened in the same second
#: On storage that cannot append, ``metrics.jsonl`` is rewritten at most this often (and on
#: eval records and close): a rewrite per record would cost quadratic time over a long run.
OBJECT_STORE_FLUSH_S = 60.0


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
        self.logdir = workdir_path(logdir)
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

    def __init__(self, workdir: str | os.PathLike, enabled: bool = True,
                 tensorboard: bool = True):
        self.enabled = enabled
        workdir = workdir_path(workdir)
        self.path = workdir / "metrics.jsonl"
        self.tb: ScalarEventWriter | None = None
        self._local = is_local(self.path)
        self._text = ""  # the whole file, kept only where it cannot be appended to
        self._unflushed = False
        self._flushed_at = time.monotonic()
        #: the last step logged per split (records at or below it are skipped)
        self.last_step: dict[str, int] = {}
        if not enabled:
            return
        self._recover()
        if tensorboard:
            try:
                self.tb = ScalarEventWriter(workdir / "tensorboard")
            except (ImportError, OSError) as err:  # TensorBoard is a nice-to-have
                log.warning("TensorBoard summaries disabled: %s", err)

    def _recover(self) -> None:
        """Read what earlier runs logged, line by line: cut a torn last line (the file then
        ends with the last complete record) and drop damaged lines in the middle (one
        warning naming them; the file as found is kept in ``corrupt/`` beside it)."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good: list[bytes] = []
        damaged: list[int] = []
        torn = 0
        lines = data.splitlines(keepends=True)
        for number, line in enumerate(lines, 1):
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("no newline")
                record = loads_record(line)
                step, split = record["step"], str(record["split"])
                if isinstance(step, bool) or not isinstance(step, int) \
                        or not 0 <= step <= MAX_STEPS:
                    raise ValueError(f"step {str(step)[:20]} is not a step")
            except (ValueError, KeyError, TypeError):
                if number == len(lines):
                    torn = len(line)  # a damaged last line is a tear (the writer died)
                else:
                    damaged.append(number)
                continue
            good.append(line)
            self.last_step[split] = max(self.last_step.get(split, step), step)
        kept = b"".join(good)
        if torn and not damaged:
            log.warning("metrics.jsonl: dropped a torn last line (%d bytes) left by an "
                        "interrupted run", torn)
            if self._local:
                with open(os.fspath(self.path), "r+b") as f:
                    f.truncate(len(kept))
            else:
                write_text_atomically(self.path, kept.decode("utf-8", "replace"))
        elif damaged:
            copy = self.path.parent / "corrupt" / f"metrics.jsonl-{time.strftime('%Y%m%d-%H%M%S')}"
            copy.parent.mkdir(exist_ok=True)
            copy.write_bytes(data)
            write_text_atomically(self.path, kept.decode("utf-8", "replace"))
            log.warning("metrics.jsonl: dropped %d damaged line(s) (line %s%s); the file as "
                        "found is kept in %s", len(damaged) + bool(torn),
                        ", ".join(map(str, damaged[:5])), ", ..." if len(damaged) > 5 else "",
                        copy)
        if not self._local:
            self._text = kept.decode("utf-8", "replace")

    def rewind(self, step: int) -> None:
        """Drop the records after ``step``, the step a run resumes from (or 0: it starts
        over): what a run logged after its last checkpoint is logged again by the rerun,
        which need not repeat it (another learning rate after a divergence, say)."""
        if not self.enabled or all(last <= step for last in self.last_step.values()):
            return
        text = self._text if not self._local else (
            self.path.read_text() if self.path.exists() else "")
        kept = [line for line in text.splitlines(keepends=True)
                if json.loads(line)["step"] <= step]
        dropped = len(text.splitlines()) - len(kept)
        self._text = "".join(kept)
        write_text_atomically(self.path, self._text)
        if not self._local:
            self._unflushed = False
        else:
            self._text = ""
        self.last_step = {split: min(last, step) for split, last in self.last_step.items()}
        log.info("metrics.jsonl: dropped %d record(s) after step %d, where this run resumes",
                 dropped, step)

    def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
        """Record ``scalars`` of ``split`` (``train``, ``eval``) at ``step`` (skipped if that
        split already logged this step or a later one)."""
        if not self.enabled:
            return
        if int(step) <= self.last_step.get(split, -1):
            return  # logged before an interruption: a resumed run repeats it bit for bit
        clean = {k: (float(v) if math.isfinite(float(v)) else str(float(v)))
                 for k, v in scalars.items()}
        line = json.dumps({"step": int(step), "split": split, **clean}) + "\n"
        if self._local:
            with open(os.fspath(self.path), "a") as f:
                f.write(line)
        else:
            self._text += line
            self._unflushed = True
            if split != "train" or time.monotonic() - self._flushed_at >= OBJECT_STORE_FLUSH_S:
                self.flush()
        self.last_step[split] = int(step)
        if self.tb is not None:
            self.tb.scalars(step, {f"{split}/{key}": float(v) for key, v in scalars.items()})

    def flush(self) -> None:
        """Write the records held in memory (storage that cannot append; no-op otherwise)."""
        if self._unflushed:
            write_text_atomically(self.path, self._text)
            self._unflushed = False
            self._flushed_at = time.monotonic()

    def close(self) -> None:
        """Write what is held in memory; flush and close the TensorBoard file."""
        self.flush()
        if self.tb is not None:
            self.tb.close()
