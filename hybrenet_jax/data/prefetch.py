"""Run an iterator in a background thread with a bounded queue, so batch preparation overlaps
the training step (numpy releases the GIL in its copy and gather loops)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


class _Raised:
    """Carries an exception from the producer thread to the consumer."""

    def __init__(self, error: BaseException):
        self.error = error


def prefetch(iterable: Iterable[T], size: int = 2) -> Iterator[T]:
    """Yield the items of ``iterable``, produced up to ``size`` items ahead in a thread.

    Args:
      iterable: the source (e.g. ``train_batches(...)``, or batches already placed with
        ``shard_batch``); it is consumed in the background thread only.
      size: bound of the queue (items kept ready ahead of the consumer), >= 1.

    Yields:
      The items in their original order. An exception in the source is re-raised here.
      Closing this generator (or dropping it) stops the thread at its next item.
    """
    if size < 1:
        raise ValueError(f"prefetch size must be >= 1, got {size}")
    q: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in iterable:
                if not put(item):
                    return
        except BaseException as e:  # noqa: BLE001 -- forwarded to the consumer
            put(_Raised(e))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name="hybrenet-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join(timeout=5.0)
