"""``hybrenet cost``: Delphi private-inference latency and traffic estimates of model strings."""

from __future__ import annotations

import argparse
import json

from hybrenet_jax.bounded import MAX_THREADS, parse_int
from hybrenet_jax.cli._types import arg_type
from hybrenet_jax.cli._table import format_table
from hybrenet_jax.cost import estimate
from hybrenet_jax.cost.gc import DEFAULT_CLIENT_DEVICE, DEFAULT_THREADS, DEVICE_NAMES
from hybrenet_jax.cost.network import LinearCost, NetworkCost
from hybrenet_jax.dataset_info import DATASETS


#: argparse type of ``--threads`` (GC threads on each side; ``pareto`` shares it)
threads_type = arg_type(parse_int, "threads", low=1, high=MAX_THREADS)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cost", help="estimate Delphi private-inference latency (HE + GC) of networks",
        description="Delphi two-party cost per image: homomorphic evaluation of every conv/FC "
                    "(single-thread server, calibrated on measured Delphi layers) and garbled "
                    "circuits for every ReLU (server garbles offline, client evaluates online). "
                    "See docs/cost_model.md.",
        epilog="examples:\n  hybrenet cost resnet18 hrn-5x5x3x\n"
               "  hybrenet cost \"hrn-2x5x3x:cull=S1,thin=S2+S3+S4,reuse=4\" --dense-grouped\n"
               "  hybrenet cost resnet18 --dataset tinyimagenet --json --per-layer",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", metavar="MODEL", help="model strings")
    p.add_argument("--dataset", default="cifar100", choices=sorted(DATASETS),
                   help="input size and class count (default: cifar100)")
    p.add_argument("--threads", type=threads_type, default=DEFAULT_THREADS,
                   help=f"GC threads on each side (default: {DEFAULT_THREADS})")
    p.add_argument("--client-device", default=DEFAULT_CLIENT_DEVICE, choices=DEVICE_NAMES,
                   help=f"client profile for GC evaluation (default: {DEFAULT_CLIENT_DEVICE}; "
                        "the server is the EPYC machine the HE times were measured on)")
    p.add_argument("--dense-grouped", action="store_true",
                   help="cost ReLU-reuse grouped convs as the dense convs they replace")
    p.add_argument("--json", action="store_true", help="one JSON object per line per model")
    p.add_argument("--per-layer", action="store_true",
                   help="add per-layer records (JSON: a 'layers' list; text: a table per model)")
    p.set_defaults(func=run)


def _summary_rows(costs: list[NetworkCost]) -> list[tuple]:
    return [(c.model, f"{c.relus / 1e3:,.1f}", f"{c.flops / 1e6:,.1f}", f"{c.he_seconds:,.1f}",
             f"{c.gc_seconds:,.1f}", f"{c.offline_seconds:,.1f}", f"{c.online_seconds:,.1f}",
             f"{c.total_seconds:,.1f}", f"{c.offline_bytes / 1e9:,.2f}",
             f"{c.gc_online_bytes / 1e6:,.1f}") for c in costs]


def _layer_rows(cost: NetworkCost) -> list[tuple]:
    rows = []
    for rec in cost.layers:
        if isinstance(rec, LinearCost):
            shape = f"{rec.in_ch}->{rec.out_ch} k{rec.kernel} s{rec.stride} @{rec.in_hw}"
            if len(rec.groups) > 1:
                shape += f" ({len(rec.groups)} groups)"
            rows.append((rec.name, rec.kind, shape,
                         f"{rec.ops.input_ciphertexts}/{rec.ops.output_ciphertexts}",
                         rec.ops.multiplies, rec.ops.key_switches, f"{rec.he_seconds:.2f}",
                         "-", "-"))
        elif rec.relus:
            rows.append((rec.name, "relu", f"{rec.channels}x{rec.hw}x{rec.hw} {rec.state}",
                         "-", "-", "-", "-", f"{rec.relus:,}", f"{rec.gc_seconds:.2f}"))
    return rows


def check_packable(model: str, dataset: str) -> None:
    """Refuse, in milliseconds, a network whose FC layers Delphi cannot pack.

    :func:`~hybrenet_jax.cost.estimate` finds such a layer only after costing every conv
    before it (seconds for the widest accepted networks); the FC layers are checked first.

    Raises:
      HybrenetError: the model string is invalid or an FC layer has more inputs than slots.
    """
    from hybrenet_jax.architecture import expand
    from hybrenet_jax.cost.packing import fc_ops
    from hybrenet_jax.model_string import spec_from_model_string

    for layer in expand(spec_from_model_string(model, dataset)).layers():
        if hasattr(layer, "in_features") and hasattr(layer, "out_features"):
            fc_ops(layer.in_features, layer.out_features)


def run(args: argparse.Namespace) -> int:
    for model in args.models:
        check_packable(model, args.dataset)
    costs = [estimate(m, args.dataset, args.threads, args.client_device, args.dense_grouped)
             for m in args.models]  # validate all first
    if args.json:
        for c in costs:
            print(json.dumps(c.as_dict(per_layer=args.per_layer)))
        return 0
    print(f"dataset: {args.dataset}; server: {costs[0].server_device} (HE single-thread), "
          f"client: {args.client_device}; GC threads: {args.threads}"
          + ("; grouped convs costed dense" if args.dense_grouped else ""))
    print(format_table(("model", "ReLUs (K)", "FLOPs (M)", "HE (s)", "GC (s)", "offline (s)",
                        "online (s)", "total (s)", "offline GB", "online MB"),
                       _summary_rows(costs)))
    if args.per_layer:
        for c in costs:
            print(f"\n{c.model}:")
            print(format_table(("layer", "kind", "shape", "ct in/out", "mults", "key sw.",
                                "HE (s)", "ReLUs", "GC (s)"), _layer_rows(c)))
    return 0
