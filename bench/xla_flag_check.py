"""Does ``hybrenet_jax.runtime``'s XLA:CPU flag still help on the installed jaxlib?

    python -m bench.xla_flag_check                          # hrn-2x5x3x:m=16, batch 128
    python -m bench.xla_flag_check --networks resnet18 hrn-2x5x3x:m=16 --steps 8 --json
    python -m bench.xla_flag_check --min-speedup 1.1        # the bar a jaxlib must clear

Times our real training step (``bench/worker.py``, one process per setting, interleaved
rounds) on the CPU with ``EIGEN_CONVOLUTIONS`` and without it (neither run gets the project's
other defaults), and compares the result with what ``configure_xla`` decides for this jaxlib:

* the flag makes XLA abort: the runtime must not add it here;
* every network trains at least ``--min-speedup`` times faster with it: the runtime must add it
  (else: add this jaxlib to ``_FLAG_JAXLIB``);
* some network trains slower with it: the runtime must not add it (else: take this jaxlib out
  of ``_FLAG_JAXLIB``); in between, either is fine.

How much the flag brings depends on the CPU (YNNPACK's convolutions are relatively better on
some): see docs/benchmarks.md.

Exit status 0 when the runtime's choice matches the measurement, 1 when it does not. This is a
benchmark, run by hand or by a benchmark job on a quiet machine, not a unit test: on a shared
2-core machine a speed-up can be off by tens of percent.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

from bench.timing import median
from bench.worker import Worker
from hybrenet_jax import runtime
from hybrenet_jax.runtime import EIGEN_CONVOLUTIONS, OPT_OUT, configure_xla

DEFAULT_NETWORKS = ("hrn-2x5x3x:m=16",)
DEFAULT_MIN_SPEEDUP = 1.05
SETTINGS = ("flag", "no_flag")


def runtime_adds_flag() -> bool:
    """Whether ``configure_xla`` adds the flag on this jaxlib when JAX runs on the CPU."""
    env = {"JAX_PLATFORMS": "cpu"}
    return configure_xla(env) and EIGEN_CONVOLUTIONS in env["XLA_FLAGS"]


def setting_env(setting: str, base_flags: str = "") -> dict[str, str]:
    """Worker environment: the CPU, no project defaults, the flag only for ``"flag"``."""
    flags = f"{base_flags} {EIGEN_CONVOLUTIONS}" if setting == "flag" else base_flags
    return {"JAX_PLATFORMS": "cpu", OPT_OUT: "0", "XLA_FLAGS": flags.strip()}


def verdict(adds_flag: bool, rejected: bool, speedups: list[float | None],
            min_speedup: float) -> tuple[bool, str]:
    """``(ok, message)``: does the runtime's choice match what was measured?

    The flag helps when every network is at least ``min_speedup`` times faster with it and
    hurts when any is slower; in between, either choice is fine.
    """
    version = ".".join(map(str, runtime._jaxlib_version() or ("?",)))
    if rejected:
        if adds_flag:
            return False, (f"jaxlib {version} rejects the flag but hybrenet_jax.runtime adds "
                           "it: remove this version from _FLAG_JAXLIB")
        return True, f"jaxlib {version} rejects the flag; hybrenet_jax.runtime leaves it off"
    if not speedups or any(s is None for s in speedups):
        return False, "no speed-up measured (a worker failed)"
    shown = ", ".join(f"{s:.2f}x" for s in speedups)
    state = "adds it" if adds_flag else "leaves it off"
    if min(speedups) >= min_speedup and not adds_flag:
        return False, (f"the flag speeds our step up {shown} on jaxlib {version} (bar "
                       f"{min_speedup}x) but hybrenet_jax.runtime leaves it off: add "
                       f"{runtime._jaxlib_version()} to _FLAG_JAXLIB")
    if min(speedups) < 1.0 and adds_flag:
        return False, (f"the flag slows our step down ({shown}) on jaxlib {version} but "
                       "hybrenet_jax.runtime adds it: re-measure on a quiet machine, then take "
                       "this version out of _FLAG_JAXLIB")
    if min(speedups) < min_speedup and max(speedups) >= 1.0:
        return True, (f"speed-up {shown} on jaxlib {version}, below the {min_speedup}x bar "
                      f"on some network; hybrenet_jax.runtime {state}")
    return True, f"speed-up {shown} on jaxlib {version}; hybrenet_jax.runtime {state}"


def _rejected(message: dict) -> bool:
    error = str(message.get("error", ""))
    return "xla_cpu_experimental_ynn_fusion_type" in error or "Unknown flag" in error


def check_network(network: str, batch: int, steps: int, rounds: int, warmup: int,
                  base_flags: str, timeout: float, log) -> dict[str, Any]:
    """Time one network with and without the flag in interleaved rounds."""
    config = {"impl": "ours", "network": network, "batch": batch, "dtype": "float32",
              "device": "cpu", "warmup": warmup}
    workers: dict[str, Worker] = {}
    record: dict[str, Any] = {"network": network, "batch": batch}
    try:
        for setting in SETTINGS:  # one at a time: compiles do not compete for the cores
            log(f"[{network} b{batch}] compiling {setting}")
            worker = Worker(setting, config, setting_env(setting, base_flags))
            ready = worker.receive(timeout=timeout)
            if not ready.get("ready"):
                worker.kill()
                record[f"{setting}_error"] = ready.get("error")
                record["flag_rejected"] = setting == "flag" and _rejected(ready)
                return record
            workers[setting] = worker
            record[f"{setting}_compile_seconds"] = ready["compile_seconds"]
        walls: dict[str, list[float]] = {s: [] for s in SETTINGS}
        cpus: dict[str, list[float]] = {s: [] for s in SETTINGS}
        per_round = max(1, math.ceil(steps / rounds))
        for r in range(rounds):
            for setting in SETTINGS[r % 2:] + SETTINGS[:r % 2]:
                answer = workers[setting].run(per_round, timeout=timeout)
                if "wall" not in answer:
                    record[f"{setting}_error"] = answer.get("error")
                    return record
                walls[setting] += answer["wall"]
                cpus[setting] += answer["cpu"]
            log(f"  round {r + 1}/{rounds}: " + ", ".join(
                f"{s} {batch / median(walls[s]):.1f} img/s" for s in SETTINGS))
    finally:
        for worker in workers.values():
            worker.close()
    record["flag_rejected"] = False
    for setting in SETTINGS:
        record[f"{setting}_step_seconds_median"] = median(walls[setting])
        record[f"{setting}_cpu_seconds_per_step"] = median(cpus[setting])
        record[f"{setting}_images_per_second"] = batch / median(walls[setting])
    record["speedup"] = median(walls["no_flag"]) / median(walls["flag"])
    record["cpu_speedup"] = median(cpus["no_flag"]) / median(cpus["flag"])
    return record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.xla_flag_check", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", nargs="+", default=list(DEFAULT_NETWORKS),
                        metavar="MODEL")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per setting")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps after compiling")
    parser.add_argument("--min-speedup", type=float, default=DEFAULT_MIN_SPEEDUP,
                        help="speed-up on every network that calls for the flag "
                             f"(default {DEFAULT_MIN_SPEEDUP}); below 1.0 it must be off")
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds a worker may take to compile or answer")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.rounds < 1 or args.batch < 1 or args.min_speedup <= 0:
        parser.error("--steps, --rounds, --batch and --min-speedup must be positive")
    args.rounds = min(args.rounds, args.steps)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in base:
        print("XLA_FLAGS already sets the YNNPACK flag: unset it to measure", file=sys.stderr)
        return 2
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    records = [check_network(n, args.batch, args.steps, args.rounds, args.warmup, base,
                             args.timeout, log) for n in args.networks]
    adds = runtime_adds_flag()
    rejected = any(r.get("flag_rejected") for r in records)
    ok, message = verdict(adds, rejected, [r.get("speedup") for r in records],
                          args.min_speedup)
    report = {"jaxlib": runtime._jaxlib_version(), "flag": EIGEN_CONVOLUTIONS,
              "runtime_adds_flag": adds, "min_speedup": args.min_speedup,
              "networks": records, "ok": ok, "verdict": message}
    if args.json:
        print(json.dumps(report))
    else:
        for r in records:
            if r.get("speedup") is None:
                print(f"{r['network']:<24} b{r['batch']}  failed: "
                      f"{r.get('flag_error') or r.get('no_flag_error')}")
                continue
            print(f"{r['network']:<24} b{r['batch']}  with flag "
                  f"{r['flag_images_per_second']:6.1f} img/s, without "
                  f"{r['no_flag_images_per_second']:6.1f} img/s: {r['speedup']:.2f}x "
                  f"(CPU s/step {r['cpu_speedup']:.2f}x)")
        print(("ok: " if ok else "MISMATCH: ") + message)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
