"""Measure input-pipeline throughput on this machine.

    PYTHONPATH=. python -m hybrenet_jax.data.benchmark            # digits and synthetic 32x32
    PYTHONPATH=. python -m hybrenet_jax.data.benchmark --size 64  # synthetic 64x64
    PYTHONPATH=. python -m hybrenet_jax.data.benchmark --workers 1  # one thread

Prints images per second of ``train_batches`` (augmentation + normalisation) for one process,
with ``--workers`` threads (0, the default: ``min(4, cores)``, as in training).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hybrenet_jax.data.arrays import ArraySplit
from hybrenet_jax.data.normalization import CIFAR100
from hybrenet_jax.data.pipeline import train_stream
from hybrenet_jax.data.prefetch import default_workers
from hybrenet_jax.data.registry import load_dataset


def images_per_second(data: ArraySplit, batch_size: int, min_images: int, **kwargs) -> float:
    """Throughput of ``train_stream`` (``train_batches`` across epochs) over
    ``ceil(min_images / batch_size)`` steps; ``kwargs`` go to it (e.g. ``workers``)."""
    done = 0
    start = time.perf_counter()
    for batch in train_stream(data, batch_size, seed=0, stop_step=-(-min_images // batch_size),
                              **kwargs):
        done += batch["label"].shape[0]
    return done / (time.perf_counter() - start)


def synthetic(num: int, size: int) -> ArraySplit:
    """Random ``uint8`` images of ``size x size x 3`` with 100 classes."""
    rng = np.random.default_rng(0)
    return ArraySplit(
        images=rng.integers(0, 256, (num, size, size, 3), dtype=np.uint8),
        labels=rng.integers(0, 100, num, dtype=np.int32),
        num_classes=100,
        name="synthetic",
        split="train",
    )


def main() -> None:
    """Parse flags and print the throughput table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=0, help="0: min(4, cores)")
    args = parser.parse_args()
    workers = args.workers or default_workers()
    digits = load_dataset("digits", "train")
    synth = synthetic(50_000, args.size)
    for label, data, kw in (
        ("digits 32x32", digits, {}),
        (f"synthetic {args.size}x{args.size}", synth, {"normalization": CIFAR100}),
    ):
        ips = images_per_second(data, args.batch, args.images, workers=workers, **kw)
        print(f"{label:>20}  batch {args.batch}, {workers} workers: {ips:,.0f} img/s")


if __name__ == "__main__":
    main()
