"""Measure input-pipeline throughput on this machine.

    PYTHONPATH=. python -m hybrenet_jax.data.benchmark            # digits and synthetic 32x32
    PYTHONPATH=. python -m hybrenet_jax.data.benchmark --size 64  # synthetic 64x64

Prints images per second of ``train_batches`` (augmentation + normalisation) for one process.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hybrenet_jax.data.arrays import ArraySplit
from hybrenet_jax.data.normalization import CIFAR100
from hybrenet_jax.data.pipeline import train_batches
from hybrenet_jax.data.registry import load_dataset


def images_per_second(data: ArraySplit, batch_size: int, min_images: int, **kwargs) -> float:
    """Throughput of ``train_batches`` over whole epochs until ``min_images`` are produced."""
    done, epoch = 0, 0
    start = time.perf_counter()
    while done < min_images:
        for batch in train_batches(data, batch_size, seed=0, epoch=epoch, **kwargs):
            done += batch["label"].shape[0]
        epoch += 1
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
    args = parser.parse_args()
    digits = load_dataset("digits", "train")
    synth = synthetic(50_000, args.size)
    for label, data, kw in (
        ("digits 32x32", digits, {}),
        (f"synthetic {args.size}x{args.size}", synth, {"normalization": CIFAR100}),
    ):
        ips = images_per_second(data, args.batch, args.images, **kw)
        print(f"{label:>20}  batch {args.batch}: {ips:,.0f} img/s")


if __name__ == "__main__":
    main()
