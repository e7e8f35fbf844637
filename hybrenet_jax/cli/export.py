"""``hybrenet export``: a run's checkpoint as ONNX or as a portable bundle (docs/export.md)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from hybrenet_jax.bounded import MAX_STEP, parse_float, parse_int
from hybrenet_jax.cli._types import arg_type
from hybrenet_jax.schema import MAX_BATCH

if TYPE_CHECKING:
    from hybrenet_jax.export import CheckpointExport


#: The most images ``--verify-random`` / ``--verify-real`` compare (an evaluation split has
#: at most 10,000; 10,000 random 64x64 images are 0.5 GB).
MAX_VERIFY_IMAGES = 10_000
#: The largest ``--tolerance`` (absolute logit difference; the default is 1e-4).
MAX_TOLERANCE = 1_000.0

#: argparse types of the options (bounded: :mod:`hybrenet_jax.bounded`)
step_type = arg_type(parse_int, "step", low=0, high=MAX_STEP)
batch_type = arg_type(parse_int, "batch", low=1, high=MAX_BATCH)
random_images_type = arg_type(parse_int, "images", low=1, high=MAX_VERIFY_IMAGES)
real_images_type = arg_type(parse_int, "images", low=0, high=MAX_VERIFY_IMAGES,
                            note="0: random inputs only")
tolerance_type = arg_type(parse_float, "tolerance", low=0.0, high=MAX_TOLERANCE)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a checkpoint (BatchNorm folded) as ONNX or a portable bundle",
        description="Fold BatchNorm into the convs and write the inference graph as ONNX "
                    "(input NCHW float32, normalised images), or write a bundle (model.json + "
                    "safetensors weights, a directory or a .zip) that load_bundle() reads "
                    "back. --verify compares with the Flax model. See docs/export.md.",
        epilog="examples:\n"
               "  hybrenet export --workdir runs/default --format onnx --out hrn.onnx --verify\n"
               "  hybrenet export --workdir runs/default --best --format bundle --out hrn.zip\n"
               "exit codes: 0 ok, 1 verification failed, 2 user error (bad workdir, model "
               "string, or a checkpoint that does not fit its description)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="training run directory")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--step", type=step_type, help="checkpoint step (default: latest)")
    which.add_argument("--best", action="store_true", help="the best-accuracy checkpoint")
    p.add_argument("--format", required=True, choices=("onnx", "bundle"), help="what to write")
    p.add_argument("--out", required=True,
                   help="output file (.onnx), bundle directory, or bundle .zip file")
    p.add_argument("--model", help="model string overriding the one the run recorded")
    p.add_argument("--dataset", help="dataset overriding the one the run recorded")
    p.add_argument("--batch", type=batch_type, default=1,
                   help="static batch size of the ONNX input (default: 1)")
    p.add_argument("--verify", action="store_true",
                   help="check the export against the Flax model (exit 1 if it disagrees)")
    p.add_argument("--verify-random", type=random_images_type, default=4, metavar="N",
                   help="random images for --verify (default: 4)")
    p.add_argument("--verify-real", type=real_images_type, default=4, metavar="N",
                   help="evaluation-split images of the run's dataset for --verify "
                        "(default: 4; 0 = random inputs only)")
    p.add_argument("--tolerance", type=tolerance_type, default=None,
                   help="max abs logit difference accepted by --verify (default: 1e-4)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Heavy imports (JAX, orbax, onnx) only when the verb runs.
    from hybrenet_jax.counts import count  # noqa: PLC0415
    from hybrenet_jax.export import export_onnx, load_checkpoint, save_bundle  # noqa: PLC0415
    from hybrenet_jax.export import verify  # noqa: PLC0415
    from hybrenet_jax.export.onnx_export import INPUT, OPSET, OUTPUT  # noqa: PLC0415

    from hybrenet_jax.cli._paths import local_path, training_workdir  # noqa: PLC0415

    which = "best" if args.best else (args.step if args.step is not None else "latest")
    out = str(local_path(args.out, "--out", "export", "files"))
    workdir = training_workdir(args.workdir, "--workdir")  # a local path or a URL train writes
    source = load_checkpoint(workdir, which, args.model, args.dataset)
    spec, provenance = source.spec, source.provenance()
    if "recorded_model" in provenance:
        print(f"hybrenet export: note: exporting as {source.model!r}; the run recorded "
              f"{provenance['recorded_model']!r}", file=sys.stderr)
    if args.format == "onnx":
        model = export_onnx(spec, source.variables, out, args.batch,
                            {"dataset": source.dataset, "source": json.dumps(provenance)})
        size = spec.input_size
        _print_exported(source, provenance, out)
        print(f"  ONNX opset {OPSET}: input {INPUT!r} NCHW float32 "
              f"[{args.batch}, {spec.in_channels}, {size}, {size}] (normalised images), "
              f"output {OUTPUT!r} [{args.batch}, {spec.classes}]; {len(model.graph.node)} nodes")
    else:
        save_bundle(out, spec, source.variables, source.dataset, provenance)
        _print_exported(source, provenance, out)
        print("  bundle: model.json, variables.safetensors, folded.safetensors")
    print(f"  ReLUs per image: {count(spec).relus:,} (analytic)")
    if not args.verify:
        return 0
    inputs = {"random": verify.random_inputs(spec, args.verify_random)}
    if args.verify_real:
        inputs["real"] = verify.real_inputs(source.dataset, args.verify_real)
    tolerance = verify.TOLERANCE if args.tolerance is None else args.tolerance
    if args.format == "onnx":
        report = verify.verify_onnx(out, spec, source.variables, inputs, tolerance)
    else:
        report = verify.verify_bundle(out, spec, source.variables, inputs, tolerance)
    print("verify:")
    print("\n".join(report.lines()))
    if report.passed:
        print("verification passed")
        return 0
    failed = "; ".join(c.name for c in report.checks if not c.passed)
    print(f"hybrenet export: error: verification FAILED ({failed}); the export does not "
          "reproduce the Flax model", file=sys.stderr)
    return 1


def _print_exported(source: CheckpointExport, provenance: dict, out: str) -> None:
    label = f"{source.which} checkpoint, " if isinstance(source.which, str) else "checkpoint "
    print(f"exported {source.model} ({source.dataset}, {label}step {provenance['step']}) "
          f"-> {out}")
