"""Input-pipeline throughput alone (what the training step can be fed with).

    python -m bench.pipeline BATCH MIN_IMAGES [WORKERS]   # prints measure()'s JSON

``WORKERS`` is ``config.data_workers`` (0, the default: automatic, as in training).
"""

from __future__ import annotations

import time

import numpy as np

from hybrenet_jax.data.arrays import ArraySplit
from hybrenet_jax.data.normalization import CIFAR100
from hybrenet_jax.data.pipeline import train_stream
from hybrenet_jax.data.prefetch import default_workers
from hybrenet_jax.data.registry import load_dataset


def images_per_second(data: ArraySplit, batch_size: int, min_images: int, **kwargs) -> float:
    """Throughput of ``train_stream`` (augmentation + normalisation, across epochs) over
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


def feed_images_per_second(batch: int, min_images: int, num: int = 10_000,
                           workers: int = 0) -> float:
    """Steady-state images/s of ``train_feed``, the training loop's feed (``train_stream`` in
    ``workers`` threads, 0: automatic; each batch put on the mesh by ``shard_batch`` and kept
    ready by ``prefetch``), with the base config at this batch size, on synthetic
    CIFAR-shaped data, over ``ceil(min_images / batch)`` steps.

    A short untimed feed first pays the one-off costs of a fresh process (the first
    host->device copies on a GPU take most of a second), as a training run does in its first,
    untimed step."""
    import jax

    from hybrenet_jax.config import base_config
    from hybrenet_jax.train.setup import make_mesh, train_feed

    config = base_config()
    config.batch_size = batch
    config.data_workers = workers
    data = synthetic(num, 32)
    mesh = make_mesh()
    for placed in train_feed(data, config, mesh, 0, 8, normalization=CIFAR100):
        jax.block_until_ready(placed)
    steps = -(-min_images // batch)
    done = 0
    start = time.perf_counter()
    for placed in train_feed(data, config, mesh, 0, steps, normalization=CIFAR100):
        jax.block_until_ready(placed)
        done += placed["label"].shape[0]
    return done / (time.perf_counter() - start)


def measure(batch: int, min_images: int = 20_000, workers: int = 0) -> dict:
    """Images/s of the numpy pipeline (synthetic CIFAR-shaped data and the embedded digits;
    ``workers`` threads, and one) and of the full feed path onto the mesh as training runs
    it, one process, while nothing else of ours runs. ``workers`` 0: automatic, as in
    training; the result's ``workers`` says how many that was."""
    workers = workers or default_workers()
    synth = synthetic(10_000, 32)
    digits = load_dataset("digits", "train")
    return {
        "batch": batch,
        "workers": workers,
        "synthetic_images_per_second": images_per_second(synth, batch, min_images,
                                                         normalization=CIFAR100,
                                                         workers=workers),
        "synthetic_images_per_second_one_worker": images_per_second(
            synth, batch, min_images, normalization=CIFAR100, workers=1),
        "digits_images_per_second": images_per_second(digits, batch, min_images,
                                                      workers=workers),
        "feed_images_per_second": feed_images_per_second(batch, min_images, workers=workers),
    }


def measure_in_child(batch: int, min_images: int, env: dict[str, str] | None = None,
                     timeout: float = 600, workers: int = 0) -> dict:
    """:func:`measure` in a child process (``python -m bench.pipeline``).

    The feed path places batches on a device, which starts a JAX backend; in the child, the
    benchmark's parent never starts one (on a GPU it would hold 75% of the memory).
    """
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (root, full_env.get("PYTHONPATH", ""))
                                             if p)
    done = subprocess.run([sys.executable, "-m", "bench.pipeline", str(batch), str(min_images),
                           str(workers)],
                          cwd=root, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"batch": batch, "error": f"exit {done.returncode}: {tail[0][:500]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    import json
    import sys

    from hybrenet_jax.runtime import configure_xla

    configure_xla()
    print(json.dumps(measure(int(sys.argv[1]), int(sys.argv[2]),
                             int(sys.argv[3]) if len(sys.argv) > 3 else 0)))
