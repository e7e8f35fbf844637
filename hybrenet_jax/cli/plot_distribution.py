"""``hybrenet plot-distribution``: stage-wise ReLU and FLOPs shares as stacked bars."""

from __future__ import annotations

import argparse

from hybrenet_jax.dataset_info import DATASETS
from hybrenet_jax.report.distribution import plot_distribution


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot-distribution", help="stacked bars of each network's stage-wise ReLU/FLOPs share",
        description="Plot, per network, the share of ReLUs and of FLOPs in each stage (stacked "
                    "bars, two panels). With --order, stages are labelled with their "
                    "criticality rank (most critical first; the most critical stage is outlined).",
        epilog="examples:\n  hybrenet plot-distribution resnet18 hrn-5x5x3x hrn-2x5x3x "
               "--out dist.png --order S3,S2,S4,S1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", metavar="MODEL", help="model strings")
    p.add_argument("--out", required=True, metavar="FILE.png", help="PNG file to write")
    p.add_argument("--order", metavar="S3,S2,S4,S1",
                   help="criticality order, most critical first (every stage once)")
    p.add_argument("--dataset", default="cifar100", choices=sorted(DATASETS),
                   help="input size for the counts (default: cifar100)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hybrenet_jax.cli._paths import local_path  # noqa: PLC0415

    out = local_path(args.out, "--out", "plot-distribution", "files")
    path = plot_distribution(args.models, out, args.dataset, args.order)
    print(f"wrote {path}")
    return 0
