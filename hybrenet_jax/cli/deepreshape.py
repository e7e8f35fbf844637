"""``hybrenet deepreshape``: criticality order -> HybReNets -> trained ReLU-optimized variants."""

from __future__ import annotations

import argparse

from hybrenet_jax.bounded import MAX_BASE_WIDTH, MAX_COUNT, MAX_DEPTH, parse_int, parse_int_list
from hybrenet_jax.cli._types import arg_type
from hybrenet_jax.cli._pipeline import add_plan_arguments, add_training_arguments

#: ``--depths``: two or more stage depths, e.g. 2-2-2-2
_depths = arg_type(parse_int_list, "depths", low=1, high=MAX_DEPTH, min_items=2,
                   note="stage depths, e.g. 2-2-2-2")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deepreshape", help="the DeepReShape pipeline: design, plan and train HRN variants",
        description="Given base depths, a criticality order (--order, or --measure-order to "
                    "train the stage-only networks of the BaseCh network first), a dataset and "
                    "ReLU budgets: ReLU equalization (Algorithm 1), the alpha=2 networks, their "
                    "Algorithm 2 variants within the budgets (ReLUs <= the largest budget), "
                    "then the teacher once and every variant with KD/DKD (DKD as in the paper: "
                    "one run per beta of --dkd-betas, 0.8 1 2 6, each with 20 warm-up epochs "
                    "added, and the best per variant recorded). One line per trained "
                    "run goes to DIR/results.jsonl (accuracy in percent), readable by "
                    "`hybrenet pareto`. Rerunning skips finished models and resumes "
                    "interrupted ones. See docs/pipeline.md.",
        epilog="examples:\n"
               "  hybrenet deepreshape --depths 2-2-2-2 --order S3,S2,S4,S1 --budgets 50k,100k "
               "--dry-run\n"
               "  hybrenet deepreshape --order S3,S2,S4,S1 --networks alpha2 --distill dkd "
               "--dkd-betas 0.8 1 2 6 --dry-run --json\n"
               "  hybrenet deepreshape --config configs/pipeline_digits.py --depths 1-1-1-1 "
               "--m 4 --measure-order --networks alpha2 --top 1 --reuse 4 --workdir runs/drs",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_arguments(p, config_required=False)
    p.add_argument("--depths", type=_depths, default=(2, 2, 2, 2),
                   help="base stage depths (default: 2-2-2-2, ResNet18)")
    order = p.add_mutually_exclusive_group(required=True)
    order.add_argument("--order", help="criticality order, most to least critical, "
                                       "e.g. S3,S2,S4,S1")
    order.add_argument("--measure-order", action="store_true",
                       help="measure it first (DIR/criticality, KD from the teacher)")
    p.add_argument("--criticality-model", default=None, metavar="MODEL",
                   help="network whose criticality --measure-order measures (default: the "
                        "BaseCh network hrn-2x2x2x of --depths and --m)")
    p.add_argument("--m", type=arg_type(parse_int, "m", low=1, high=MAX_BASE_WIDTH), default=16,
                   help="base width of the HRNs (default: 16)")
    p.add_argument("--networks", choices=("all", "equalized", "alpha2"), default="all",
                   help="optimize the equalized HRNs, the alpha=2 ones, or both (default)")
    p.add_argument("--top", type=arg_type(parse_int, "top", low=0, high=MAX_COUNT,
                                          note="0: every network"), default=0, metavar="K",
                   help="only the K lowest-FLOPs networks of each kind (default: all)")
    p.add_argument("--reuse", default=None, metavar="N1,N2",
                   help="ReLU-reuse factors of the Re2 variants (default 4,8,16; 'none')")
    add_plan_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # JAX and the training loop load only when the verb runs.
    from hybrenet_jax.cli import _pipeline as cliargs  # noqa: PLC0415
    from hybrenet_jax.pipeline import runner  # noqa: PLC0415
    from hybrenet_jax.pipeline.deepreshape import (  # noqa: PLC0415
        base_network, parse_reuse_factors, plan_deepreshape)

    config = cliargs.resolve_config(args)
    workdir = cliargs.require_workdir(args)
    options = cliargs.pipeline_options(args, config, workdir)
    reuse = parse_reuse_factors(args.reuse)
    crit = None  # the network whose criticality is measured (with --measure-order)
    order = args.order
    if args.measure_order:
        crit = args.criticality_model or base_network(args.depths, args.m)
        order = runner.measured_order(workdir, crit)

    def plan(for_order):
        return plan_deepreshape(args.depths, for_order, config.dataset, m=args.m,
                                budgets=options.budgets, reuse_factors=reuse,
                                networks=args.networks, top=args.top)

    planned = plan(order) if order is not None else None
    return cliargs.execute_plan("deepreshape", args, config, options, planned, plan, crit)
