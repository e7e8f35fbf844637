"""Background batch preparation: :func:`prefetch` runs an iterator in one thread with a bounded
queue, :func:`ordered_map` maps a function over items in a thread pool and yields the results
in order; both let batch preparation overlap the training step (numpy releases the GIL in its
copy, gather and arithmetic loops)."""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")

#: More threads did not help on a 16-core H200 host (32x32 images, batch 128 and 512): with
#: 8 the feed was 8-20% slower than with 4 (GIL and the single placing thread).
MAX_DEFAULT_WORKERS = 4

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
      Closing this generator (or dropping it) stops the thread at its next item; the
      thread then closes the source if it has ``close`` (a generator, an ``ordered_map``).
    """
    if size < 1:
        raise ValueError(f"prefetch size must be >= 1, got {size}")
    q: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    source = iter(iterable)

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
            for item in source:
                if not put(item):
                    return
        except BaseException as e:  # noqa: BLE001 -- forwarded to the consumer
            put(_Raised(e))
            return
        finally:
            close = getattr(source, "close", None)
            if close is not None:  # e.g. stop the worker threads of an ordered_map
                close()
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


def default_workers() -> int:
    """Threads that prepare batches when none are configured: ``min(4, usable cores)``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_WORKERS, cores))


def ordered_map(fn: Callable[[T], U], items: Iterable[T], workers: int,
                ahead: int | None = None) -> Iterator[U]:
    """Yield ``fn(item)`` for every item, in order, computed by ``workers`` threads.

    Args:
      fn: the function; it runs in the pool's threads, so it must be safe to call
        concurrently (a pure function of its item is).
      items: the inputs, read lazily in the consumer's thread.
      workers: pool threads, >= 1.
      ahead: most items submitted but not yet yielded (default ``2 * workers``; below
        ``workers`` some threads idle); bounds the memory held by finished results.

    Yields:
      The results in the order of ``items``. An exception raised by ``fn`` is re-raised here
      when its result is due. Closing this generator (or dropping it) cancels what has not
      started and joins the threads (a running call finishes first).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    ahead = 2 * workers if ahead is None else ahead
    if ahead < 1:
        raise ValueError(f"ahead must be >= 1, got {ahead}")
    source = iter(items)
    pending: collections.deque[concurrent.futures.Future] = collections.deque()
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="hybrenet-data")
    try:
        for item in itertools.islice(source, ahead):
            pending.append(pool.submit(fn, item))
        while pending:
            result = pending.popleft().result()
            for item in itertools.islice(source, 1):  # keep the pool busy while we yield
                pending.append(pool.submit(fn, item))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
