"""``hybrenet count``: analytic ReLU/FLOP/MAC/param counts of model strings."""

from __future__ import annotations

import argparse
import json

from hybrenet_jax.cli._table import format_table, share_text
from hybrenet_jax.counts import count
from hybrenet_jax.dataset_info import DATASETS
from hybrenet_jax.model_string import spec_from_model_string


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "count", help="count ReLUs, FLOPs, MACs and params of networks",
        description="Analytic counts from the network description (paper conventions: FLOPs = "
                    "MACs + BN elements + ReLU positions of the base network).",
        epilog="examples:\n  hybrenet count resnet18 wrn22x8 hrn-5x5x3x\n"
               "  hybrenet count \"hrn-2x5x3x:cull=S1,thin=S2+S3+S4\" --dataset tinyimagenet --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", metavar="MODEL", help="model strings")
    p.add_argument("--dataset", default="cifar100", choices=sorted(DATASETS),
                   help="input size and class count (default: cifar100)")
    p.add_argument("--json", action="store_true", help="one JSON object per line per model")
    p.add_argument("--measure", action="store_true",
                   help="also trace the real Flax model and report measured_relus, "
                        "measured_macs, measured_params (must equal the analytic counts)")
    p.set_defaults(func=run)


def count_record(model: str, dataset: str, measure: bool = False) -> dict:
    """The JSON record ``hybrenet count --json`` prints for one model."""
    spec = spec_from_model_string(model, dataset)
    record = {"model": model, "dataset": dataset, **count(spec).as_dict()}
    if measure:
        from hybrenet_jax.trace import measure as trace_measure  # imports JAX: only on demand

        record.update(trace_measure(spec).as_dict())
    return record


def run(args: argparse.Namespace) -> int:
    for model in args.models:  # fail fast on a bad string before any (slow) tracing
        spec_from_model_string(model, args.dataset)
    records = [count_record(m, args.dataset, args.measure) for m in args.models]
    if args.json:
        for r in records:
            print(json.dumps(r))
        return 0
    rows = [(r["model"], f"{r['relus'] / 1e3:,.2f}", share_text(r["stage_relu_share"]),
             f"{r['flops'] / 1e6:,.2f}", f"{r['macs'] / 1e6:,.2f}", f"{r['params'] / 1e6:,.3f}")
            for r in records]
    headers = ["model", "ReLUs (K)", "ReLU share per stage %", "FLOPs (M)", "MACs (M)",
               "params (M)"]
    if args.measure:
        headers.append("traced == analytic")
        rows = [(*row, "yes" if _agrees(r) else "NO") for row, r in zip(rows, records)]
    print(f"dataset: {args.dataset}")
    print(format_table(headers, rows))
    return 0 if not args.measure or all(_agrees(r) for r in records) else 1


def _agrees(record: dict) -> bool:
    return all(record[f"measured_{k}"] == record[k] for k in ("relus", "macs", "params"))
