"""Training throughput of our jit-compiled step against a PyTorch reference, on one machine.

    python -m bench.throughput                        # CPU: all networks, batch 128
    python -m bench.throughput --networks resnet18 --steps 10 --json
    python -m bench.throughput --fast-conv            # also our step with hybrenet_jax.fastconv
    python -m bench.throughput --no-plain-xla         # skip our step without our XLA flags
    python -m bench.throughput --variant 'noynn=--xla_cpu_experimental_ynn_fusion_type='
    python -m bench.throughput --device gpu --peak-tflops 989   # bf16 and f32, batch 128/512/1024
    python -m bench.throughput --write-docs           # regenerate docs/benchmarks.md

Every implementation of a network runs in its own worker process (bench/worker.py); after
each worker compiled and warmed up, timing rounds are interleaved between them (the order
rotates every round) so all see the same background load. Images/s = batch / median step
time over all timed steps; compile time (first step) is reported separately. Also measured:
the input pipeline alone (bench/pipeline.py) and the data-parallel step on 1-8 simulated CPU
devices (bench/scaling.py). torch is optional (``pip install -e .[bench]``): without it the
torch columns are null.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shlex
import sys
import time
from typing import Any

from bench.environment import cpu_model
from bench.timing import median, spread
from bench.worker import Worker
from hybrenet_jax.runtime import OPT_OUT, configure_xla

CPU_NETWORKS = (
    "resnet18",
    "hrn-5x5x3x",
    "hrn-2x5x3x:m=16",
    "hrn-2x5x3x:m=16,cull=S1,thin=S2+S3+S4",
    "hrn-2x5x3x:m=16,cull=S1,thin=S2+S3+S4,reuse=4",
)
GPU_NETWORKS = ("resnet18", "wrn22x8") + CPU_NETWORKS[1:]
DEFAULT_DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "docs", "benchmarks.md")


# -- machine facts --------------------------------------------------------------------------
def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average_start": load_average(),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in ("jax", "jaxlib", "flax", "optax", "torch")},
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "ours_xla_flags": _ours_xla_flags(),
    }


def accelerator_info(device: str) -> dict[str, Any] | None:
    """GPU name, driver, CUDA/cuDNN and package versions (bench.environment in a child)."""
    if device == "cpu":
        return None
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, **worker_env(device)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    try:
        done = subprocess.run([sys.executable, "-m", "bench.environment"], cwd=root, env=env,
                              capture_output=True, text=True, timeout=300)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as err:
        return {"error": f"{type(err).__name__}: {err}"}


def _ours_xla_flags() -> str:
    """XLA_FLAGS our workers run with: this run's plus hybrenet_jax.runtime's defaults."""
    env = dict(os.environ)
    configure_xla(env)
    return env.get("XLA_FLAGS", "")


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


# -- one network ----------------------------------------------------------------------------
def _parse_variant(text: str) -> tuple[str, bool, str]:
    label, sep, flags = text.partition("=")
    if not sep or not label:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: expected LABEL[+fastconv]=FLAGS")
    fast = label.endswith("+fastconv")
    return label, fast, flags


def worker_env(device: str) -> dict[str, str]:
    """Environment of every worker: one GPU for ours and torch alike, no JAX preallocation."""
    if device == "cpu":
        return {"JAX_PLATFORMS": "cpu"}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
    return {"CUDA_VISIBLE_DEVICES": visible, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}


def implementations(args, network: str, batch: int, dtype: str,
                     torch_compile: bool | None = None) -> list[tuple[str, dict, dict]]:
    """``(label, worker config, extra env)`` of every implementation to time."""
    common = {"network": network, "batch": batch, "dtype": dtype, "device": args.device,
              "warmup": args.warmup}
    base_env = worker_env(args.device)
    jax_env = {**base_env, "XLA_FLAGS": args.xla_flags}
    impls = [("ours", {**common, "impl": "ours"}, jax_env)]
    if args.fast_conv:
        impls.append(("ours_fastconv", {**common, "impl": "ours", "fast_conv": True}, jax_env))
    if args.device == "cpu" and args.plain_xla:
        impls.append(("plain_xla", {**common, "impl": "ours"},
                      {**jax_env, OPT_OUT: "0"}))
    for label, fast, flags in args.variant:
        impls.append((label, {**common, "impl": "ours", "fast_conv": fast},
                      {**jax_env, "XLA_FLAGS": f"{args.xla_flags} {flags}".strip()}))
    if args.torch and torch_available():
        # on a GPU, PyTorch runs the way its users tune it: channels_last (+ cudnn.benchmark)
        torch_common = {**common, "torch_threads": args.torch_threads,
                        "channels_last": args.device == "gpu"}
        impls.append(("torch_eager", {**torch_common, "impl": "torch-eager"}, base_env))
        if args.torch_compile if torch_compile is None else torch_compile:
            impls.append(("torch_compile", {**torch_common, "impl": "torch-compile"}, base_env))
    return impls


def _log(args, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


def build_workers(impls: list[tuple[str, dict, dict]], timeout: float, log, tag: str = "",
                  parallel: bool = False, on_start=None
                  ) -> tuple[dict[str, Worker], dict[str, dict]]:
    """Start every implementation's worker; wait until each compiled or failed.

    ``parallel``: all start at once and their compiles overlap (on a GPU host the compile is
    CPU work beside an idle GPU); else one after the other, so on a small CPU the reported
    compile times are not inflated. Timing comes later, in :func:`interleave`.
    ``on_start(worker)`` is called as each worker process starts.
    """
    workers: dict[str, Worker] = {}
    ready: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    started = []
    for label, config, env in impls:
        log(f"{tag} starting {label}")
        started.append((label, Worker(label, config, env)))
        if on_start is not None:
            on_start(started[-1][1])
        if not parallel:
            _await(started[-1], workers, ready, deadline, log)
    if parallel:
        for item in started:
            _await(item, workers, ready, deadline, log)
    return workers, ready


def _await(item: tuple[str, Worker], workers: dict[str, Worker], ready: dict[str, dict],
           deadline: float, log) -> None:
    label, worker = item
    message = worker.receive(timeout=max(1.0, deadline - time.monotonic()))
    ready[label] = message
    if message.get("ready"):
        workers[label] = worker
        log(f"  {label}: compiled in {message['compile_seconds']:.1f} s")
    else:
        worker.kill()
        log(f"  {label}: unavailable: {message.get('error')}")


def interleave(workers: dict[str, Worker], ready: dict[str, dict], steps: int, rounds: int,
               batch: int, timeout: float, log) -> dict[str, dict[str, list]]:
    """Timed steps of every ready worker, split into rounds whose order rotates."""
    times: dict[str, dict[str, Any]] = {l: {"wall": [], "cpu": [], "loss": []} for l in workers}
    labels = list(workers)
    per_round = max(1, math.ceil(steps / rounds))
    for r in range(rounds):
        order = labels[r % len(labels):] + labels[:r % len(labels)] if labels else []
        for label in order:
            if label not in workers:
                continue
            answer = workers[label].run(per_round, timeout=timeout)
            if "wall" not in answer:
                ready[label] = {"ready": False, "error": answer.get("error")}
                workers.pop(label).kill()
                continue
            times[label]["wall"] += answer["wall"]
            times[label]["cpu"] += answer["cpu"]
            times[label]["loss"].append(answer["loss"])
            times[label]["extra"] = answer.get("extra") or {}
            times[label]["peak_bytes"] = answer.get("peak_bytes")
        log(f"  round {r + 1}/{rounds}: " + ", ".join(
            f"{l} {batch / median(times[l]['wall']):.1f} img/s" for l in labels
            if times[l]["wall"]))
    return times


def bench_network(args, network: str, batch: int, dtype: str) -> dict[str, Any]:
    """Time every implementation of one network with interleaved rounds."""
    impls = implementations(args, network, batch, dtype)
    log = lambda message: _log(args, message)  # noqa: E731
    workers, ready = build_workers(impls, args.build_timeout, log,
                                   f"[{network} b{batch} {dtype}]",
                                   parallel=args.device == "gpu")
    try:
        times = interleave(workers, ready, args.steps, args.rounds, batch, args.build_timeout,
                           log)
    finally:
        for worker in workers.values():
            worker.close()
    torch_reason = None
    if not (args.torch and torch_available()):
        torch_reason = "torch not installed" if args.torch else "--no-torch"
    elif not args.torch_compile:
        torch_reason = "--no-torch-compile"
    return make_record(network, batch, dtype, args.device, impls, ready, times,
                       peak_tflops(args, dtype), torch_reason)


def make_record(network: str, batch: int, dtype: str, device: str,
                impls: list[tuple[str, dict, dict]], ready: dict[str, dict],
                times: dict[str, dict[str, Any]], peak: float | None,
                torch_reason: str | None) -> dict[str, Any]:
    """One report row: images/s, step/compile seconds, MFU, peak memory per implementation."""
    from hybrenet_jax.counts import count
    from hybrenet_jax.model_string import spec_from_model_string

    counts = count(spec_from_model_string(network))

    def ips(label: str) -> float | None:
        wall = times.get(label, {}).get("wall")
        return batch / median(wall) if wall and ready.get(label, {}).get("ready") else None

    record: dict[str, Any] = {
        "network": network, "batch": batch, "dtype": dtype, "device": device,
        "params": counts.params, "macs": counts.macs, "relus": counts.relus,
        "steps_timed": {l: len(t["wall"]) for l, t in times.items()},
    }
    for label, _, _ in impls:
        key = label if label.startswith(("ours", "torch")) else f"variant_{label}"
        info = ready.get(label, {})
        record[f"{key}_images_per_second"] = ips(label)
        record[f"{key}_compile_seconds"] = info.get("compile_seconds")
        if label in times and times[label]["wall"]:
            record[f"{key}_step_seconds_median"] = median(times[label]["wall"])
            record[f"{key}_cpu_seconds_per_step"] = median(times[label]["cpu"])
            record[f"{key}_spread"] = spread(times[label]["wall"])
            record[f"{key}_last_loss"] = times[label]["loss"][-1]
        peak_bytes = times.get(label, {}).get("peak_bytes") or info.get("peak_bytes")
        if peak_bytes is not None:
            record[f"{key}_peak_bytes"] = peak_bytes
        if not info.get("ready"):
            record[f"{key}_error"] = info.get("error")
        if label.startswith("torch") and info.get("params") is not None:
            record["torch_params"] = info["params"]
        if info.get("extra") or times.get(label, {}).get("extra"):
            record[f"{key}_extra"] = {"after_warmup": info.get("extra"),
                                      "at_end": times.get(label, {}).get("extra")}
    record.setdefault("torch_eager_images_per_second", None)
    record.setdefault("torch_compile_images_per_second", None)
    if torch_reason:
        for key in ("torch_eager", "torch_compile"):
            if record.get(f"{key}_images_per_second") is None:
                record.setdefault(f"{key}_error", torch_reason)
    ours = record.get("ours_images_per_second")
    for key, name in (("torch_eager", "ratio_vs_torch_eager"),
                      ("torch_compile", "ratio_vs_torch_compile")):
        other = record.get(f"{key}_images_per_second")
        record[name] = ours / other if ours and other else None
    fast = record.get("ours_fastconv_images_per_second")
    if fast is not None:
        eager = record.get("torch_eager_images_per_second")
        record["fastconv_speedup"] = fast / ours if ours else None
        record["ours_fastconv_ratio_vs_torch_eager"] = fast / eager if eager else None
    for label, _, _ in impls:
        if not label.startswith(("ours", "torch")):
            v = record.get(f"variant_{label}_images_per_second")
            record[f"variant_{label}_speedup"] = v / ours if v and ours else None
    if peak:
        record["peak_tflops"] = peak
        for label, _, _ in impls:
            key = label if label.startswith(("ours", "torch")) else f"variant_{label}"
            v = record.get(f"{key}_images_per_second")
            record[f"{key}_mfu"] = mfu(counts.macs, v, peak) if v else None
    record["load_average_end"] = load_average()
    return record


def peak_tflops(args, dtype: str) -> float | None:
    """The peak for ``dtype`` from ``--peak-tflops`` (DTYPE=TFLOPS or one number for all)."""
    return (args.peak_tflops or {}).get(dtype)


def _parse_peak(text: str) -> tuple[str, float]:
    dtype, sep, value = text.rpartition("=")
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if number <= 0 or (sep and dtype not in ("float32", "bfloat16")):
        raise argparse.ArgumentTypeError(
            f"--peak-tflops {text!r}: expected TFLOPS or float32=TFLOPS / bfloat16=TFLOPS")
    return dtype or "*", number


def mfu(macs_per_image: int, images_per_second: float, peak_tflops: float) -> float:
    """Model FLOP utilisation: 3 x MACs x 2 FLOPs per image (forward + 2x backward)."""
    return 3 * macs_per_image * 2 * images_per_second / (peak_tflops * 1e12)


# -- the run --------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", nargs="+", metavar="MODEL",
                        help="model strings (space-separated; default: the issue's list, "
                             "WRN22x8 only on GPU)")
    parser.add_argument("--steps", type=int, default=20,
                        help="timed steps per implementation after warm-up (default 20)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="interleaved rounds the timed steps are split into (default 4)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps after the compiling first step (default 2)")
    parser.add_argument("--batch", type=int, nargs="+",
                        help="global batch sizes (default 128 on CPU; 128 512 1024 on GPU)")
    parser.add_argument("--dtype", nargs="+", choices=("float32", "bfloat16"),
                        help="compute dtypes (default float32 on CPU; both on GPU)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--peak-tflops", type=_parse_peak, action="append", default=[],
                        metavar="[DTYPE=]TFLOPS",
                        help="dense peak of the device per dtype in TFLOP/s, for MFU "
                             "(e.g. float32=494.7 bfloat16=989.4 on an H100 SXM: float32 "
                             "convolutions run as TF32); one bare number applies to both")
    parser.add_argument("--no-plain-xla", dest="plain_xla", action="store_false",
                        help="skip the baseline of our step without hybrenet_jax.runtime's "
                             "XLA flags (timed as variant 'plain_xla' on CPU by default)")
    parser.add_argument("--fast-conv", action="store_true",
                        help="also time our step with hybrenet_jax.fastconv (monkeypatched)")
    parser.add_argument("--variant", action="append", type=_parse_variant, default=[],
                        metavar="LABEL[+fastconv]=XLA_FLAGS",
                        help="also time our step with extra XLA flags (repeatable)")
    parser.add_argument("--xla-flags", default=os.environ.get("XLA_FLAGS", ""),
                        help="XLA_FLAGS for all our workers (default: $XLA_FLAGS)")
    parser.add_argument("--no-torch", dest="torch", action="store_false",
                        help="skip the PyTorch reference")
    parser.add_argument("--no-torch-compile", dest="torch_compile", action="store_false",
                        help="skip torch.compile (its compile takes minutes on CPU)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's own, = cores)")
    parser.add_argument("--no-pipeline", dest="pipeline", action="store_false",
                        help="skip the input-pipeline measurement")
    parser.add_argument("--pipeline-images", type=int, default=20_000)
    parser.add_argument("--no-scaling", dest="scaling", action="store_false",
                        help="skip the 1-8 simulated device run")
    parser.add_argument("--scaling-network", default="hrn-2x5x3x:m=16")
    parser.add_argument("--scaling-batch", type=int, default=128)
    parser.add_argument("--scaling-steps", type=int, default=4)
    parser.add_argument("--build-timeout", type=float, default=1800,
                        help="seconds a worker may take to compile/answer before it is killed")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per network (one line each)")
    parser.add_argument("--report", metavar="PATH",
                        help="also save the whole report (machine, networks, pipeline, "
                             "scaling) as JSON; python -m bench.report PATH renders it")
    parser.add_argument("--write-docs", nargs="?", const=DEFAULT_DOCS, default=None,
                        metavar="PATH", help="regenerate docs/benchmarks.md (or PATH)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    gpu = args.device == "gpu"
    args.networks = args.networks or list(GPU_NETWORKS if gpu else CPU_NETWORKS)
    args.batch = args.batch or ([128, 512, 1024] if gpu else [128])
    args.dtype = args.dtype or (["float32", "bfloat16"] if gpu else ["float32"])
    if args.steps < 1 or args.rounds < 1:
        parser.error("--steps and --rounds must be >= 1")
    args.rounds = min(args.rounds, args.steps)
    peaks = dict(args.peak_tflops)
    if "*" in peaks:
        peaks = {"float32": peaks["*"], "bfloat16": peaks["*"], **peaks}
        peaks.pop("*")
    args.peak_tflops = peaks
    if gpu:
        args.scaling = False  # simulated devices are a CPU facility
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Everything the run measures: machine, per-network records, pipeline, scaling."""
    command = "python -m bench.throughput " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report: dict[str, Any] = {"machine": machine_info(), "command": command,
                              "accelerator": accelerator_info(args.device),
                              "args": {k: v for k, v in vars(args).items()
                                       if k not in ("write_docs", "json", "quiet")}}
    if args.pipeline:
        from bench import pipeline

        _log(args, "input pipeline ...")  # in a child: this process never starts a backend
        report["pipeline"] = [pipeline.measure_in_child(b, args.pipeline_images,
                                                        worker_env(args.device))
                              for b in args.batch]
    networks = []
    for network in args.networks:
        for batch in args.batch:
            for dtype in args.dtype:
                networks.append(bench_network(args, network, batch, dtype))
    report["networks"] = networks
    if args.pipeline:
        for record in networks:
            pipe = next(p for p in report["pipeline"] if p["batch"] == record["batch"])
            demand = max((v for k, v in record.items()
                          if k.endswith("images_per_second") and v), default=0.0)
            feed = pipe.get("feed_images_per_second")
            record["input_pipeline_images_per_second"] = feed
            record["pipeline_keeps_up"] = feed > demand if feed is not None else None
    if args.scaling:
        from bench.scaling import run_scaling

        _log(args, f"scaling {args.scaling_network} over 1-8 simulated devices ...")
        report["scaling"] = run_scaling(args.scaling_network, args.scaling_batch,
                                        args.scaling_steps)
        for record in networks:
            if record["network"] == args.scaling_network:
                record["scaling_losses_agree"] = report["scaling"]["losses_agree"]
    report["machine"]["load_average_end"] = load_average()
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    if args.json:
        for record in report["networks"]:
            print(json.dumps(record))
    else:
        from bench.report import text_summary

        print(text_summary(report))
    if args.write_docs:
        from bench.report import write_docs

        write_docs(report, args.write_docs)
        _log(args, f"wrote {args.write_docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
