"""``hybrenet summary``: a per-layer table of one network (shape, MACs, ReLUs kept/culled)."""

from __future__ import annotations

import argparse
import json

from hybrenet_jax.architecture import BatchNorm, Conv, Dense, Pool, ReluSite, expand
from hybrenet_jax.cli._table import format_table
from hybrenet_jax.counts import count
from hybrenet_jax.dataset_info import DATASETS
from hybrenet_jax.model_string import spec_from_model_string
from hybrenet_jax.netspec import stage_name


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "summary", help="per-layer table: output shape, MACs, params, ReLUs kept/culled",
        description="One row per layer of the network description, in execution order.",
        epilog="examples:\n  hybrenet summary hrn-2x5x3x:cull=S1,thin=S2+S3+S4\n"
               "  hybrenet summary resnet20 --relus-only",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="model string")
    p.add_argument("--dataset", default="cifar100", choices=sorted(DATASETS))
    p.add_argument("--relus-only", action="store_true", help="list only the ReLU positions")
    p.add_argument("--json", action="store_true", help="one JSON object per layer")
    p.set_defaults(func=run)


def layer_row(layer) -> dict:
    """Summary fields of one layer record."""
    row = {"layer": layer.name, "stage": stage_name(layer.stage), "type": type(layer).__name__,
           "output": "", "macs": 0, "params": getattr(layer, "params", 0), "relus": "",
           "state": ""}
    if isinstance(layer, Conv):
        row["type"] = f"conv{layer.kernel}x{layer.kernel}" + (f"/s{layer.stride}"
                                                              if layer.stride > 1 else "")
        if layer.reuse > 1:
            row["type"] += f" Re2-{layer.reuse}"
        row["output"] = f"{layer.out_hw}x{layer.out_hw}x{layer.out_ch}"
        row["macs"] = layer.macs
    elif isinstance(layer, BatchNorm):
        row["output"] = f"{layer.hw}x{layer.hw}x{layer.channels}"
    elif isinstance(layer, ReluSite):
        row["type"] = "relu"
        row["output"] = f"{layer.hw}x{layer.hw}x{layer.channels}"
        row["relus"] = layer.relus
        row["state"] = layer.state + (f" (1/{layer.reuse})" if layer.reuse > 1 else "")
    elif isinstance(layer, Pool):
        row["type"] = "avgpool2x2" if layer.kind == "avg2" else "global avgpool"
        hw = layer.in_hw // 2 if layer.kind == "avg2" else 1
        row["output"] = f"{hw}x{hw}x{layer.channels}"
    elif isinstance(layer, Dense):
        row["type"] = "dense"
        row["output"] = str(layer.out_features)
        row["macs"] = layer.macs
    return row


def run(args: argparse.Namespace) -> int:
    spec = spec_from_model_string(args.model, args.dataset)
    layers = list(expand(spec).layers())
    if args.relus_only:
        layers = [l for l in layers if isinstance(l, ReluSite)]
    rows = [layer_row(l) for l in layers]
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    c = count(spec)
    print(f"{args.model} ({args.dataset}, input {spec.input_size}x{spec.input_size}x"
          f"{spec.in_channels})")
    print(format_table(("layer", "stage", "type", "output", "MACs", "params", "ReLUs", "state"),
                       [(r["layer"], r["stage"], r["type"], r["output"], f"{r['macs']:,}",
                         f"{r['params']:,}", f"{r['relus']:,}" if r["relus"] != "" else "",
                         r["state"]) for r in rows]))
    print(f"total: {c.relus:,} ReLUs kept of {c.relu_positions:,} positions, "
          f"{c.macs / 1e6:,.2f}M MACs, {c.flops / 1e6:,.2f}M FLOPs, {c.params:,} params")
    return 0
