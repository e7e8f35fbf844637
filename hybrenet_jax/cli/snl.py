"""``hybrenet snl``: the Selective Network Linearization baseline (mask search to a budget)."""

from __future__ import annotations

import argparse
import json
import sys

from hybrenet_jax.bounded import MAX_RELUS, parse_count
from hybrenet_jax.cli._types import arg_type
from hybrenet_jax.cli._pipeline import (add_training_arguments, progress_log,
                                           training_chatter_to_stderr)


#: ``--budget``: ReLUs to keep, a count such as 50000 or 50k (bounded: ``bounded.parse_count``)
_budget = arg_type(parse_count, "budget", low=1, high=MAX_RELUS, kind="a ReLU count")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "snl", help="SNL baseline: learn ReLU masks down to a ReLU budget, then fine-tune",
        description="Selective Network Linearization (Cho et al., ICML 2022): pretrain MODEL "
                    "(or use --pretrained-workdir), learn per-pixel or per-channel ReLU masks "
                    "with Adam on CE + KD + lambda*||mask||_1 until the masks keep at most "
                    "--budget ReLUs, binarize at 1e-2, fine-tune with the masks fixed. As in "
                    "SNL's public ResNets the stem has no ReLU (unless --mask-stem), so counts "
                    "and budgets cover the masked ReLUs only. Settings live in "
                    "config.snl (defaults: the public SNL scripts). Writes masks.npz, the final "
                    "variables, summary.json and results.jsonl into --workdir. "
                    "See docs/snl.md.",
        epilog="examples:\n"
               "  hybrenet snl --config configs/snl_digits.py \"hrn-2x2x2x:m=4,depths=1-1-1-1\" "
               "--budget 5000 --workdir runs/snl\n"
               "  hybrenet snl --config configs/kd.py:cifar100/resnet18 resnet18 --budget 50k "
               "--thin all --pretrained-workdir runs/r18-thin --workdir runs/snl-50k",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="model string of the network")
    add_training_arguments(p, config_required=True)
    p.add_argument("--budget", type=_budget, required=True, help="ReLUs to keep (e.g. 50k)")
    p.add_argument("--granularity", choices=("pixel", "channel"), default=None,
                   help="mask per ReLU (pixel, public SNL code) or per channel "
                        "(default: config.snl.granularity)")
    p.add_argument("--thin", default=None, metavar="STAGES",
                   help="ReLU-Thinning before SNL, e.g. S2+S3+S4 or 'all' "
                        "(default: config.snl.thin)")
    p.add_argument("--pretrained-workdir", default=None, metavar="DIR",
                   help="finished run of the (thinned) MODEL to start from "
                        "(default: train it in WORKDIR/pretrained)")
    p.add_argument("--teacher-workdir", default=None, metavar="DIR",
                   help="KD teacher (default: the pretrained network, as public SNL)")
    p.add_argument("--fill-to-budget", action="store_true",
                   help="after binarizing, re-admit the largest masks below the 1e-2 "
                        "threshold until the budget is full (ours; default: public SNL's "
                        "threshold rule alone; = --config.snl.fill_to_budget=true)")
    p.add_argument("--mask-stem", action="store_true",
                   help="mask the stem ReLU like the others (the paper's ReLU count); "
                        "default: no stem ReLU, as SNL's public ResNets "
                        "(= --config.snl.mask_stem=true)")
    p.add_argument("--workdir", required=True, metavar="DIR", help="SNL output directory")
    p.add_argument("--json", action="store_true", help="print summary.json to stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # JAX and the training loop load only when the verb runs.
    from hybrenet_jax.cli._pipeline import output_workdir, training_workdir  # noqa: PLC0415
    from hybrenet_jax.config import config_from_args  # noqa: PLC0415
    from hybrenet_jax.train.rundir import Preempted  # noqa: PLC0415
    from hybrenet_jax.schema import updated  # noqa: PLC0415
    from hybrenet_jax.snl.run import run_snl  # noqa: PLC0415

    given = {"dataset": args.dataset or None, "snl.granularity": args.granularity or None,
             "snl.thin": args.thin, "snl.fill_to_budget": args.fill_to_budget or None,
             "snl.mask_stem": args.mask_stem or None}  # None: the config's
    config = updated(config_from_args(args),
                     {k: v for k, v in given.items() if v is not None})
    workdir = output_workdir(args.workdir, "snl")
    pretrained = training_workdir(args.pretrained_workdir, "--pretrained-workdir") \
        if args.pretrained_workdir else None
    teacher = training_workdir(args.teacher_workdir, "--teacher-workdir") \
        if args.teacher_workdir else None
    try:
        with training_chatter_to_stderr():
            summary = run_snl(config, args.model, args.budget, workdir, pretrained, teacher,
                              log=progress_log())
    except Preempted as stop:
        print(f"hybrenet snl: {stop}", file=sys.stderr)
        return 0
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"SNL {summary['model']} ({summary['granularity']} masks): {summary['relus']} ReLUs "
          f"kept of {summary['relus_before']} (budget {summary['budget']}; traced count "
          f"{summary['traced_relus']}); test accuracy {100 * summary['test_accuracy']:.2f}%")
    print(f"results: {workdir / 'results.jsonl'}")
    return 0
