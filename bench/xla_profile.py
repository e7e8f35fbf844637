"""Where XLA:CPU spends our training step: a per-category profile.

    python -m bench.xla_profile --network hrn-2x5x3x:m=16 --batch 128 [--fast-conv]
                                [--xla-flags '...'] [--steps 2] [--top 15] [--json]

Runs our real step (bench/ours.py) in this process with the XLA dump of the optimised step
module and a ``jax.profiler`` trace of ``--steps`` steps after warm-up, then joins the two:
every thunk of the trace is an instruction of the optimised HLO, classified as

* ``conv forward``, ``conv input-grad``: convolutions with a kernel-sized window (the input
  gradient carries ``transpose(jvp(...))`` in its op name);
* ``conv weight-grad``: convolutions whose window is a whole feature map (how XLA expresses a
  kernel gradient; their op names are dropped by XLA, so the window decides: > 3x3);
* ``dot``: matrix products (the classifier; with ``--fast-conv`` the per-tap weight gradients);
* ``transpose/copy``, ``reduce`` (BatchNorm statistics, loss) and ``elementwise/other``.

Times are per step. Thunks may overlap (XLA:CPU runs independent thunks concurrently), so
their sum can exceed the wall time; ``busy`` is the union of their intervals. Eigen
convolutions (used when YNNPACK fusions are off) run asynchronously and their thunk events
end at launch: their time appears as ``unattributed`` (wall minus busy).

Pass XLA flags as ``--xla-flags='--flag=value'`` (with ``=``: the value starts with ``--``).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

CATEGORIES = ("conv forward", "conv input-grad", "conv weight-grad", "dot", "transpose/copy",
              "reduce", "elementwise/other")


def parse_hlo(text: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Computations (name -> lines) and instructions (name -> defining line) of an HLO dump."""
    computations: dict[str, list[str]] = {}
    instructions: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
        if head and not line.startswith(" "):
            current = head.group(1)
            computations[current] = []
            continue
        if current is None:
            continue
        computations[current].append(line)
        inst = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = ", line)
        if inst:
            instructions[inst.group(1)] = line
    return computations, instructions


def classify(line: str, computations: dict[str, list[str]]) -> str:
    """Category of one instruction (a fusion is classified by what it calls)."""
    called = re.search(r"calls=%([\w.\-]+)", line)
    body = [line] + (computations.get(called.group(1), []) if called else [])
    convs = [b for b in body if " convolution(" in b]
    if convs:
        window = re.search(r"window=\{size=(\d+)x(\d+)", convs[0])
        size = int(window.group(1)) * int(window.group(2)) if window else 1
        if size > 9:
            return "conv weight-grad"
        return "conv input-grad" if "transpose(" in convs[0] or "transpose(" in line \
            else "conv forward"
    if any(" dot(" in b for b in body):
        return "dot"
    name = line.split("=", 1)[0]
    if "transpose" in name or "copy" in name:
        return "transpose/copy"
    if any(" reduce(" in b or " reduce-window(" in b for b in body):
        return "reduce"
    return "elementwise/other"


def _union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def summarize(hlo_text: str, trace_events: list[dict], steps: int, wall_seconds: float,
              top: int = 15) -> dict:
    """Per-category milliseconds per step from a trace and its HLO module."""
    computations, instructions = parse_hlo(hlo_text)
    per_category: dict[str, float] = collections.defaultdict(float)
    per_thunk: dict[str, float] = collections.defaultdict(float)
    intervals = []
    for event in trace_events:
        name = event.get("name")
        if event.get("ph") != "X" or name not in instructions:
            continue
        ms = event.get("dur", 0) / 1e3 / steps
        per_category[classify(instructions[name], computations)] += ms
        per_thunk[name] += ms
        intervals.append((event["ts"], event["ts"] + event.get("dur", 0)))
    busiest = sorted(per_thunk.items(), key=lambda kv: -kv[1])[:top]

    def shape(name: str) -> str:
        m = re.search(r"= (\S+) ", instructions[name])
        return m.group(1) if m else "?"

    busy = _union(intervals) / 1e3 / steps
    return {
        "wall_ms_per_step": 1e3 * wall_seconds / steps,
        "busy_ms_per_step": busy,
        # Eigen (non-YNNPACK) convolutions run asynchronously: their thunk events end at launch,
        # so their time shows up here, as wall time no thunk accounts for.
        "unattributed_ms_per_step": max(0.0, 1e3 * wall_seconds / steps - busy),
        "thunk_sum_ms_per_step": sum(per_category.values()),
        "categories": {c: per_category.get(c, 0.0) for c in CATEGORIES},
        "top": [{"thunk": n, "ms": ms, "category": classify(instructions[n], computations),
                 "shape": shape(n)} for n, ms in busiest],
    }


def markdown(result: dict, title: str) -> str:
    lines = [f"**{title}**: wall {result['wall_ms_per_step']:.0f} ms/step, thunks busy "
             f"{result['busy_ms_per_step']:.0f} ms, sum of thunk times "
             f"{result['thunk_sum_ms_per_step']:.0f} ms", "",
             "| category | ms / step | share |", "|---|---|---|"]
    rows = dict(result["categories"])
    rows["unattributed (wall - busy)"] = result["unattributed_ms_per_step"]
    total = sum(rows.values()) or 1.0
    for category, ms in sorted(rows.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {category} | {ms:.0f} | {100 * ms / total:.0f}% |")
    return "\n".join(lines)


def profile(network: str, batch: int, steps: int, fast_conv: bool, top: int) -> dict:
    """Profile ``steps`` steps of our training step (call in a fresh process: see main)."""
    import time

    import jax

    from bench.ours import build_step

    step = build_step(network, batch, fast_conv=fast_conv)
    step.run()
    step.run()
    logdir = tempfile.mkdtemp(prefix="xla_profile_")
    jax.profiler.start_trace(logdir, create_perfetto_trace=True)
    start = time.perf_counter()
    for _ in range(steps):
        step.run()
    wall = time.perf_counter() - start
    jax.profiler.stop_trace()
    trace_file = glob.glob(os.path.join(logdir, "**", "perfetto_trace.json.gz"), recursive=True)
    with gzip.open(trace_file[0], "rt", encoding="utf-8") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    dumps = sorted(glob.glob(os.path.join(os.environ["BENCH_HLO_DUMP"],
                                          "*jit_step*after_optimizations.txt")))
    dumps = [d for d in dumps if "buffer-assignment" not in d and "memory-usage" not in d]
    with open(dumps[-1], encoding="utf-8") as f:
        hlo = f.read()
    return summarize(hlo, events, steps, wall, top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", default="hrn-2x5x3x:m=16")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--fast-conv", action="store_true")
    parser.add_argument("--xla-flags", default=os.environ.get("XLA_FLAGS", ""))
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if "jax" in sys.modules and "BENCH_HLO_DUMP" not in os.environ:
        parser.error("run as a fresh process: python -m bench.xla_profile")
    dump = tempfile.mkdtemp(prefix="xla_dump_")
    os.environ["BENCH_HLO_DUMP"] = dump
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = (f"{args.xla_flags} --xla_dump_to={dump} "
                               "--xla_dump_hlo_module_re=.*jit_step.*").strip()
    from hybrenet_jax.runtime import configure_xla

    configure_xla()  # profile the step as the project runs it (HYBRENET_XLA_DEFAULTS=0: plain)
    result = profile(args.network, args.batch, args.steps, args.fast_conv, args.top)
    flags = " ".join(f for f in os.environ["XLA_FLAGS"].split() if not f.startswith("--xla_dump"))
    result.update(network=args.network, batch=args.batch, fast_conv=args.fast_conv,
                  xla_flags=flags)
    if args.json:
        print(json.dumps(result))
        return 0
    title = f"{args.network}, batch {args.batch}" + (", fastconv" if args.fast_conv else "") + \
        (f", XLA_FLAGS `{flags}`" if flags else "")
    print(markdown(result, title))
    print("\nbusiest thunks:")
    for t in result["top"]:
        print(f"  {t['ms']:7.1f} ms  {t['category']:<18} {t['thunk']:<28} {t['shape']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
