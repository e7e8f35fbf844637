"""``hybrenet design``: ReLU equalization (Algorithm 1) and the capacity-criticality step."""

from __future__ import annotations

import argparse
import json

from hybrenet_jax.bounded import MAX_BASE_WIDTH, MAX_DEPTH, parse_int, parse_int_list
from hybrenet_jax.cli._types import arg_type
from hybrenet_jax.cli._table import format_table, share_text
from hybrenet_jax.dataset_info import DATASETS
from hybrenet_jax.design import (capacity_criticality, equalize_depth, equalize_width,
                                 parse_order)
from hybrenet_jax.errors import DesignError

#: Printed with ``--by depth``: how its answer relates to the paper's Fig. 16.
DEPTH_NOTE = ("note: the paper's Fig. 16 lists depths (1,5,5,3), (1,5,7,2), (1,6,6,2), "
              "(1,7,5,2) for BaseCh and S3>S2>S4>S1, but those break the paper's own "
              "inequality (stage ReLUs ~ depth x 2^(k-1) / 4^(k-1): (1,5,5,3) gives S2 = 2.5 > "
              "S3 = 1.25); this command solves the inequality as stated (1-3-7-9 for that case). "
              "See docs/pipeline.md.")


#: ``--depths`` / ``--multipliers``: positive integers joined by '-', e.g. 2-2-2-2
_int_list = arg_type(parse_int_list, "int_list", low=1, high=MAX_DEPTH, note="e.g. 2-2-2-2")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "design", help="ReLU equalization: HybReNet widths (or depths) for a criticality order",
        description="Choose stage widths (integer multipliers >= 2) or depths so that stage "
                    "ReLU counts follow the criticality order strictly; then list the alpha=2 "
                    "capacity-criticality variants. Ranked by FLOPs.",
        epilog="examples:\n  hybrenet design --depths 2-2-2-2 --order S3,S2,S4,S1\n"
               "  hybrenet design --depths 3-4-6-3 --order S3,S2,S4,S1 --json\n"
               "  hybrenet design --by depth --multipliers 2-2-2 --order S3,S2,S4,S1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depths", type=_int_list, default=(2, 2, 2, 2),
                   help="blocks per stage for --by width (default: 2-2-2-2, ResNet18)")
    p.add_argument("--order", required=True,
                   help="criticality order, most to least critical, e.g. S3,S2,S4,S1")
    p.add_argument("--by", choices=("width", "depth"), default="width",
                   help="equalize by stage widths (default) or stage depths (the smallest "
                        "depths satisfying the order strictly; differs from the paper's "
                        "Fig. 16 tuples, which violate it: see docs/pipeline.md)")
    p.add_argument("--multipliers", type=_int_list, default=None,
                   help="fixed stage multipliers for --by depth (default: 2 per stage, BaseCh)")
    p.add_argument("--m", type=arg_type(parse_int, "m", low=1, high=MAX_BASE_WIDTH), default=16,
                   help="base width m (default: 16)")
    p.add_argument("--dataset", default="cifar100", choices=sorted(DATASETS),
                   help="dataset for the counts (default: cifar100)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.m <= 0:
        raise DesignError(f"--m {args.m}: the base width must be a positive integer")
    if args.by == "width":
        candidates = equalize_width(args.depths, args.order, m=args.m, dataset=args.dataset)
    else:
        multipliers = args.multipliers or (2,) * (len(args.depths) - 1)
        parse_order(args.order, len(multipliers) + 1)
        candidates = equalize_depth(multipliers, args.order, m=args.m, dataset=args.dataset)
    alpha2 = capacity_criticality(candidates, dataset=args.dataset) if args.by == "width" else []
    if args.json:
        print(json.dumps({
            "order": args.order, "by": args.by, "dataset": args.dataset,
            "candidates": [c.as_dict() for c in candidates],
            "capacity_criticality": [c.as_dict() for c in alpha2],
            **({"note": DEPTH_NOTE[len("note: "):]} if args.by == "depth" else {}),
        }))
        return 0
    for title, cands in (("ReLU-equalized networks", candidates),
                         ("capacity-criticality variants (alpha=2)", alpha2)):
        if not cands:
            continue
        print(f"{title} for order {args.order} ({args.dataset}), ranked by FLOPs:")
        rows = [(c.model, "-".join(map(str, c.depths)), f"{c.counts.relus / 1e3:,.2f}",
                 share_text(c.counts.stage_relu_share), f"{c.counts.flops / 1e6:,.1f}",
                 f"{c.counts.params / 1e6:,.2f}") for c in cands]
        print(format_table(("model", "depths", "ReLUs (K)", "ReLU share per stage %",
                            "FLOPs (M)", "params (M)"), rows))
        print()
    if args.by == "depth":
        print(DEPTH_NOTE)
    return 0
