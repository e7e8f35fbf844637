"""``hybrenet pareto``: accuracy-vs-cost Pareto frontiers of our results and published points."""

from __future__ import annotations

import argparse
import sys

from hybrenet_jax.cli.cost import positive_int
from hybrenet_jax.cost.gc import DEFAULT_CLIENT_DEVICE, DEFAULT_THREADS, DEVICE_NAMES
from hybrenet_jax.report import build_report, default_published_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pareto", help="Pareto frontiers (accuracy vs ReLUs / FLOPs / latency) and plots",
        description="Read results.jsonl files (one JSON object per line: model, dataset, relus, "
                    "flops, accuracy or test_accuracy, optional distill and latency_seconds) and "
                    "the published points; write pareto.md, pareto.csv, relu_accuracy.png, "
                    "flops_accuracy.png and latency_accuracy.png into --out. Bad lines are "
                    "reported on stderr and skipped. See docs/pareto.md.",
        epilog="examples:\n  hybrenet pareto runs/*/results.jsonl --out reports/pareto\n"
               "  hybrenet pareto --out reports/published   # published points alone\n"
               "  hybrenet pareto results.jsonl --no-published --out reports/ours",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="*", metavar="RESULTS", help="results.jsonl files")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--published", metavar="PATH",
                     help=f"published points CSV (default: {default_published_path()})")
    src.add_argument("--no-published", action="store_true", help="use our results only")
    p.add_argument("--threads", type=positive_int, default=DEFAULT_THREADS,
                   help=f"GC threads for estimated latencies (default: {DEFAULT_THREADS})")
    p.add_argument("--client-device", default=DEFAULT_CLIENT_DEVICE,
                   choices=DEVICE_NAMES,
                   help=f"client profile for GC evaluation (default: {DEFAULT_CLIENT_DEVICE})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    def warn(message: str) -> None:
        print(f"hybrenet pareto: warning: {message}", file=sys.stderr)

    report = build_report(args.results, args.out, published=args.published,
                          use_published=not args.no_published, threads=args.threads,
                          client_device=args.client_device, warn=warn)
    ours = sum(p.source == "ours" for p in report.points)
    print(f"{len(report.points)} points ({ours} ours, {len(report.points) - ours} published); "
          f"{len(report.problems)} bad line(s) skipped")
    for dataset, subject in sorted(report.subjects.items()):
        print(f"  {dataset}: frontier of {subject} compared with the other methods")
    for path in report.files:
        print(f"wrote {path}")
    return 0
