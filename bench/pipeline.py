"""Input-pipeline throughput alone (what the training step can be fed with)."""

from __future__ import annotations

import time

from hybrenet_jax.data.benchmark import images_per_second, synthetic
from hybrenet_jax.data.normalization import CIFAR100
from hybrenet_jax.data.pipeline import train_batches
from hybrenet_jax.data.registry import load_dataset


def feed_images_per_second(batch: int, min_images: int, num: int = 10_000) -> float:
    """``train_batches -> shard_batch -> prefetch`` as the training loop feeds the step."""
    import jax

    from hybrenet_jax.data.prefetch import prefetch
    from hybrenet_jax.data.sharding import shard_batch
    from hybrenet_jax.train.loop import make_mesh

    data = synthetic(num, 32)
    mesh = make_mesh()
    done, epoch = 0, 0
    start = time.perf_counter()
    while done < min_images:
        local = train_batches(data, batch, seed=0, epoch=epoch, normalization=CIFAR100)
        for placed in prefetch(shard_batch(b, mesh) for b in local):
            jax.block_until_ready(placed)
            done += placed["label"].shape[0]
        epoch += 1
    return done / (time.perf_counter() - start)


def measure(batch: int, min_images: int = 20_000) -> dict:
    """Images/s of the numpy pipeline (synthetic CIFAR-shaped data and the embedded digits)
    and of the full feed path onto the mesh, one process, while nothing else of ours runs."""
    synth = synthetic(10_000, 32)
    digits = load_dataset("digits", "train")
    return {
        "batch": batch,
        "synthetic_images_per_second": images_per_second(synth, batch, min_images,
                                                         normalization=CIFAR100),
        "digits_images_per_second": images_per_second(digits, batch, min_images),
        "feed_images_per_second": feed_images_per_second(batch, min_images),
    }


def measure_in_child(batch: int, min_images: int, env: dict[str, str] | None = None,
                     timeout: float = 600) -> dict:
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
    done = subprocess.run([sys.executable, "-m", "bench.pipeline", str(batch), str(min_images)],
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
    print(json.dumps(measure(int(sys.argv[1]), int(sys.argv[2]))))
