"""``hybrenet plan``: the Algorithm 2 ReLU-optimization variants of a network."""

from __future__ import annotations

import argparse
import json

from hybrenet_jax.cli._table import format_table, share_text
from hybrenet_jax.dataset_info import DATASETS
from hybrenet_jax.design import relu_optimization_plan


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="Algorithm 2: thinned / ScaleCh 0.5 / Re2 variants of a network",
        description="List the ReLU-optimized variants DeepReShape trains for a network: base, "
                    "thinned (Stage1 culled first when it holds the largest ReLU share), "
                    "thinned + ScaleCh 0.5, thinned + ReLU-reuse 4/8/16.",
        epilog="examples:\n  hybrenet plan hrn-2x5x3x\n  hybrenet plan hrn-5x5x3x --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="model string of the base network")
    p.add_argument("--dataset", default="cifar100", choices=sorted(DATASETS),
                   help="dataset for the counts (default: cifar100)")
    p.add_argument("--json", action="store_true", help="one JSON object per line per variant")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    entries, skipped = relu_optimization_plan(args.model, args.dataset)
    if args.json:
        for e in entries:
            print(json.dumps({"dataset": args.dataset, **e.as_dict()}))
        return 0
    print(f"Algorithm 2 plan for {args.model} ({args.dataset}):")
    rows = [(e.label, e.model, f"{e.counts.relus / 1e3:,.2f}",
             share_text(e.counts.stage_relu_share), f"{e.counts.flops / 1e6:,.1f}")
            for e in entries]
    print(format_table(("variant", "model", "ReLUs (K)", "ReLU share per stage %",
                        "FLOPs (M)"), rows))
    for note in skipped:
        print(f"skipped: {note}")
    return 0
