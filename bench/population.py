"""Population training throughput: K members in one jitted step vs the same K runs one by one.

    python -m bench.population                      # CPU: K = 1, 2, 4, 8; batch 128; float32
    python -m bench.population --ks 1 2 4 8 16 --batches 128 512 --dtypes bfloat16 float32 \\
        --peak-tflops 989                           # GPU (MFU needs the chip's peak)
    python -m bench.population --cpu-smoke --json   # seconds: what CI runs

Members are the HRN-2x5x3x:m=16 variants the pipelines pack (the base network, Stage1
culled, the rest thinned, both), cycled to K, and optionally ResNet18 students; every member
distils (KD) from one ResNet18 teacher with random weights (the cost is what matters). Per K:

* ``packed``: :func:`hybrenet_jax.train.steps.make_population_step` — one program, the
  teacher's forward pass once per batch, each member's own step body;
* ``sequential``: the K single-run steps (:func:`~hybrenet_jax.train.steps.make_step`, each
  with its own teacher pass), called one after the other — how a sweep runs today.

Rounds of the two alternate (same background load); member-images/s = K x batch / the median
time of one round. MFU counts member FLOPs only (forward + backward = 3 x the forward MACs x
2, plus the teacher's forward once per batch is *not* counted: it is the overhead packing
removes). The first-step losses of packed and sequential members are compared: packing must
not change what is computed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bench.environment import cpu_model
from bench.timing import median
from hybrenet_jax import models
from hybrenet_jax.counts import count
from hybrenet_jax.data import shard_batch
from hybrenet_jax.model_string import spec_from_model_string
from hybrenet_jax.runtime import configure_xla
from hybrenet_jax.train.setup import DTYPES, make_mesh
from hybrenet_jax.train.state import create_state, learning_rate_schedule, make_optimizer
from hybrenet_jax.train.steps import (LossConfig, Teacher, make_population_step, make_step,
                                      replicated, step_body, supervised_objective)

HRN_VARIANTS = ("hrn-2x5x3x:m=16", "hrn-2x5x3x:m=16,cull=S1",
                "hrn-2x5x3x:m=16,thin=S2+S3+S4", "hrn-2x5x3x:m=16,cull=S1,thin=S2+S3+S4")
TEACHER = "resnet18"
SMOKE_VARIANTS = ("hrn-2x2x2x:m=4", "hrn-2x2x2x:m=4,cull=S1")


def members_of(family: str, k: int) -> list[str]:
    """``k`` model strings: the HRN variants cycled, or ResNet18 ``k`` times."""
    if family == "resnet18":
        return ["resnet18"] * k
    variants = SMOKE_VARIANTS if family == "smoke" else HRN_VARIANTS
    return [variants[i % len(variants)] for i in range(k)]


def _member(network: str, dtype: str, seed: int, mesh) -> tuple[Any, Any, Any, Any]:
    """(objective, optimizer, schedule, initial state) of one KD student."""
    spec = spec_from_model_string(network, "cifar100")
    schedule = learning_rate_schedule(0.05, 10_000, 0, "constant")
    optimizer = make_optimizer(schedule, 0.9, 5e-4)
    model = models.build_model(spec, DTYPES[dtype])

    def init(rng):
        return create_state(model.init(rng, jnp.zeros(models.input_shape(spec, 1))), optimizer)

    state = jax.jit(init, out_shardings=replicated(mesh))(jax.random.PRNGKey(seed))
    objective = supervised_objective(model, LossConfig(distill="kd"))
    return objective, optimizer, schedule, state


def _teacher(dtype: str, mesh, network: str = TEACHER) -> Teacher:
    spec = spec_from_model_string(network, "cifar100")
    model = models.build_model(spec, DTYPES[dtype])
    variables = jax.jit(lambda r: model.init(r, jnp.zeros(models.input_shape(spec, 1))),
                        out_shardings=replicated(mesh))(jax.random.PRNGKey(99))
    return Teacher(model, variables)


def member_flops(network: str) -> float:
    """Training FLOPs of one image of a member: 3 x forward (forward + backward), 2 per MAC."""
    return 6.0 * count(spec_from_model_string(network, "cifar100")).macs


def measure(networks: list[str], batch: int, dtype: str, rounds: int, teacher_network: str
            ) -> dict[str, Any]:
    """Packed vs sequential member-images/s (and first-step losses) for one population."""
    mesh = make_mesh()
    rng = np.random.default_rng(0)
    spec = spec_from_model_string(networks[0], "cifar100")
    host = {"image": rng.standard_normal(models.input_shape(spec, batch), dtype=np.float32),
            "label": rng.integers(0, spec.classes, batch).astype(np.int32)}
    placed = shard_batch(host, mesh)
    teacher = _teacher(dtype, mesh, teacher_network)
    built = [_member(n, dtype, i, mesh) for i, n in enumerate(networks)]
    packed_step = make_population_step([step_body(o, opt, s) for o, opt, s, _ in built], mesh,
                                       teacher)
    single_steps = [make_step(o, opt, mesh, teacher, s) for o, opt, s, _ in built]
    copy = jax.jit(lambda t: jax.tree.map(jnp.copy, t))
    packed_states = tuple(copy(st) for *_, st in built)
    single_states = [copy(st) for *_, st in built]

    def packed() -> Any:
        nonlocal packed_states
        packed_states, metrics = packed_step(packed_states, placed, teacher.variables)
        jax.block_until_ready(packed_states)
        return metrics

    def sequential() -> Any:
        out = []
        for i, step in enumerate(single_steps):
            single_states[i], metrics = step(single_states[i], placed, teacher.variables)
            out.append(metrics)
        jax.block_until_ready(single_states)
        return out

    start = time.perf_counter()
    first_packed = packed()
    compile_packed = time.perf_counter() - start
    start = time.perf_counter()
    first_single = sequential()
    compile_sequential = time.perf_counter() - start
    losses = [(float(p["loss"]), float(s["loss"])) for p, s in zip(first_packed, first_single)]
    times: dict[str, list[float]] = {"packed": [], "sequential": []}
    for r in range(rounds):  # alternate, so both see the same background load
        for name in (("packed", "sequential") if r % 2 == 0 else ("sequential", "packed")):
            start = time.perf_counter()
            (packed if name == "packed" else sequential)()
            times[name].append(time.perf_counter() - start)
    k = len(networks)
    flops = sum(member_flops(n) for n in networks) * batch
    stats = jax.local_devices()[0].memory_stats() or {}
    out = {"k": k, "batch": batch, "dtype": dtype, "members": networks,
           "teacher": teacher_network, "rounds": rounds,
           "compile_seconds": {"packed": compile_packed, "sequential": compile_sequential},
           "first_step_losses": losses,
           "max_first_loss_difference": max(abs(a - b) for a, b in losses),
           "member_flops_per_round": flops,
           "peak_bytes": stats.get("peak_bytes_in_use")}
    for name, values in times.items():
        t = median(values)
        out[name] = {"seconds_per_round": t, "member_images_per_second": k * batch / t,
                     "tflops": flops / t / 1e12}
    out["speedup"] = out["packed"]["member_images_per_second"] / \
        out["sequential"]["member_images_per_second"]
    return out


def run(ks: list[int], batches: list[int], dtypes: list[str], families: list[str],
        rounds: int, peak_tflops: float | None, teacher: str = TEACHER,
        log=print) -> dict[str, Any]:
    """Every (family, dtype, batch, K) cell, with machine facts."""
    configure_xla()
    rows = []
    for family in families:
        for dtype in dtypes:
            for batch in batches:
                for k in ks:
                    row = measure(members_of(family, k), batch, dtype, rounds, teacher)
                    row["family"] = family
                    if peak_tflops:
                        for name in ("packed", "sequential"):
                            row[name]["mfu"] = row[name]["tflops"] / peak_tflops
                    rows.append(row)
                    log(f"{family:9s} {dtype:8s} b{batch:<4d} K={k:<2d} packed "
                        f"{row['packed']['member_images_per_second']:9.1f} img/s, sequential "
                        f"{row['sequential']['member_images_per_second']:9.1f} img/s: "
                        f"{row['speedup']:.2f}x (first-step loss diff "
                        f"{row['max_first_loss_difference']:.1e})")
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
            "cpu": cpu_model(), "python": platform.python_version(), "jax": jax.__version__,
            "peak_tflops": peak_tflops, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.population",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--batches", type=int, nargs="+", default=[128])
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=sorted(DTYPES))
    parser.add_argument("--families", nargs="+", default=["hrn"],
                        choices=["hrn", "resnet18", "smoke"])
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds of each mode")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the chip's peak for MFU (e.g. 989 for an H100/H200 in bf16)")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny members and teacher, K = 1, 2, batch 16, 2 rounds")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--out", default=None, help="also write the JSON report here")
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        report = run([1, 2], [16], ["float32"], ["smoke"], 2, None, teacher="hrn-2x2x2x:m=4",
                     log=(lambda *_: None) if args.json else print)
    else:
        report = run(args.ks, args.batches, args.dtypes, args.families, args.rounds,
                     args.peak_tflops, log=(lambda *_: None) if args.json else print)
    text = json.dumps(report, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if args.json:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
