"""Data-parallel scaling over simulated CPU devices (correctness of the mesh path, not speed).

``run_scaling`` starts one process per device count N with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``; each builds our training step over
``make_mesh()`` (batch sharded over N devices, sync BatchNorm over the global batch) and runs
the same sequence of global batches from the same initial state. The losses must agree across
N (they are the same function of the same data; only the reduction order differs), and the
step must be traced once. Images/s on simulated devices share the same cores: they show the
overhead of the sharded program, not a speed-up.

Child mode: ``python -m bench.scaling --child --devices N --network NET --batch B --steps K``
prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from bench.worker import PREFIX

DEVICE_COUNTS = (1, 2, 4, 8)
#: The check: the losses of the first EARLY_STEPS steps (the initial forward pass, then the
#: loss after one sharded gradient update) must agree to float32 rounding on every device count.
#: Later steps are reported as drift, not checked: on random labels at lr 0.1 a rounding
#: difference (another reduction order of the sharded gradients and BN statistics) grows
#: several-fold per step (1e-6 after one update, ~1e-3 after three).
EARLY_STEPS = 2
EARLY_RTOL = 1e-5


def _child(network: str, batch: int, steps: int) -> dict:
    from hybrenet_jax.runtime import configure_xla

    configure_xla()
    import jax

    from bench.ours import build_step, synthetic_batch
    from bench.timing import median, timed_steps

    step = build_step(network, batch)
    losses, walls = [], []
    for i in range(steps):
        step.set_batch(synthetic_batch(batch, step.spec, seed=100 + i))
        wall, _ = timed_steps(step.run, 1)
        walls.append(wall[0])
        losses.append(step.loss())
    timed = walls[1:]  # the first step compiles
    sharding = step.batch["image"].sharding
    return {
        "devices": jax.device_count(),
        "batch_devices": len(sharding.device_set),
        "per_device_batch": batch // jax.device_count(),
        "losses": losses,
        "traces": step.step_fn.traces,
        "compile_seconds": walls[0],
        "step_seconds": timed,
        "images_per_second": batch / median(timed) if timed else None,
    }


def _with_device_count(flags: str, n: int) -> str:
    kept = [f for f in flags.split() if not f.startswith("--xla_force_host_platform_device_count")]
    return " ".join(kept + [f"--xla_force_host_platform_device_count={n}"])


def run_scaling(network: str, batch: int, steps: int = 4,
                counts: tuple[int, ...] = DEVICE_COUNTS, timeout: float = 900) -> dict:
    """Run the step on 1..8 simulated CPU devices; report images/s and loss agreement."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runs = []
    for n in counts:
        env = {**os.environ, "JAX_PLATFORMS": "cpu",
               "XLA_FLAGS": _with_device_count(os.environ.get("XLA_FLAGS", ""), n),
               "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", ""))
                                             if p)}
        cmd = [sys.executable, "-m", "bench.scaling", "--child", "--devices", str(n),
               "--network", network, "--batch", str(batch), "--steps", str(steps)]
        try:
            done = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            runs.append({"devices": n, "error": f"timed out after {timeout:.0f} s"})
            continue
        lines = [l for l in done.stdout.splitlines() if l.startswith(PREFIX)]
        if done.returncode or not lines:
            runs.append({"devices": n, "error": done.stderr.strip()[-1500:]})
            continue
        runs.append(json.loads(lines[-1][len(PREFIX):]))
    return {"network": network, "batch": batch, "steps": steps, "runs": runs,
            **agreement(runs)}


def agreement(runs: list[dict]) -> dict:
    """Whether the runs on different device counts computed the same losses."""
    ok = [r for r in runs if "losses" in r]
    base = ok[0]["losses"] if ok else []

    def rel(a: float, b: float) -> float:
        return abs(a - b) / max(abs(a), 1e-12)

    worst = max((rel(a, b) for r in ok for a, b in zip(base, r["losses"])), default=0.0)
    early = max((rel(a, b) for r in ok for a, b in zip(base[:EARLY_STEPS],
                                                          r["losses"][:EARLY_STEPS])),
                default=0.0)
    return {"max_relative_loss_difference": worst if len(ok) > 1 else None,
            "early_relative_difference": early if len(ok) > 1 else None,
            "losses_agree": (len(ok) == len(runs) and len(ok) > 1
                             and all(len(r["losses"]) >= EARLY_STEPS for r in ok)
                             and early <= EARLY_RTOL
                             and all(r["traces"] == 1 for r in ok)
                             and all(r["batch_devices"] == r["devices"] for r in ok)),
            "early_steps": EARLY_STEPS, "early_rtol": EARLY_RTOL}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--network", default="hrn-2x2x2x:m=8")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args(argv)
    if args.child:
        print(PREFIX + json.dumps(_child(args.network, args.batch, args.steps)), flush=True)
        return 0
    print(json.dumps(run_scaling(args.network, args.batch, args.steps), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
