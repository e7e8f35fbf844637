"""``hybrenet deepreduce``: culled / thinned / channel-scaled variants of a classical network."""

from __future__ import annotations

import argparse

from hybrenet_jax.bounded import MAX_DEPTH, parse_int
from hybrenet_jax.cli._types import arg_type
from hybrenet_jax.cli._pipeline import add_plan_arguments, add_training_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deepreduce", help="DeepReDuce-style variants of a network (cull, thin, ScaleCh)",
        description="Optimize a classical network (resnet18, wrn22x8, ...) the DeepReDuce way: "
                    "cull the c least-critical stages (c = 0 .. --max-culled), thin every "
                    "remaining stage, and scale the thinned networks' channels (--scales). "
                    "Variants within the ReLU budgets are trained like `hybrenet deepreshape` "
                    "(teacher once, KD/DKD, DIR/results.jsonl, restartable). "
                    "See docs/pipeline.md.",
        epilog="examples:\n"
               "  hybrenet deepreduce resnet18 --order S3,S2,S4,S1 --dry-run\n"
               "  hybrenet deepreduce wrn22x8 --order S2,S3,S1 --budgets 200k --dry-run --json\n"
               "  hybrenet deepreduce \"hrn-2x2x2x:m=4,depths=1-1-1-1\" --config "
               "configs/pipeline_digits.py --measure-order --workdir runs/drd",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="model string of the base network")
    add_training_arguments(p, config_required=False)
    order = p.add_mutually_exclusive_group(required=True)
    order.add_argument("--order", help="criticality order, most to least critical")
    order.add_argument("--measure-order", action="store_true",
                       help="measure MODEL's criticality first (DIR/criticality)")
    p.add_argument("--scales", default=None, metavar="S1,S2",
                   help="channel-scaling factors of the thinned networks (default 0.5; 'none')")
    p.add_argument("--max-culled", type=arg_type(parse_int, "max_culled", low=0, high=MAX_DEPTH),
                   default=None, metavar="C",
                   help="cull at most C least-critical stages (default: all but one)")
    add_plan_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # JAX and the training loop load only when the verb runs.
    from hybrenet_jax.cli import _pipeline as cliargs  # noqa: PLC0415
    from hybrenet_jax.pipeline import runner  # noqa: PLC0415
    from hybrenet_jax.pipeline.criticality import base_spec  # noqa: PLC0415
    from hybrenet_jax.pipeline.deepreduce import parse_scales, plan_deepreduce  # noqa: PLC0415

    config = cliargs.resolve_config(args)
    workdir = cliargs.require_workdir(args)
    base_spec(args.model, config.dataset)  # bad model strings fail before any training
    options = cliargs.pipeline_options(args, config, workdir)
    scales = parse_scales(args.scales)
    order = args.order
    if args.measure_order:
        order = runner.measured_order(workdir, args.model)

    def plan(for_order):
        return plan_deepreduce(args.model, for_order, config.dataset, scales=scales,
                               max_culled=args.max_culled, budgets=options.budgets)

    planned = plan(order) if order is not None else None
    crit = args.model if args.measure_order else None
    return cliargs.execute_plan("deepreduce", args, config, options, planned, plan, crit)
