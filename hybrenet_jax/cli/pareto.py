"""``hybrenet pareto``: accuracy-vs-cost Pareto frontiers of our results and published points."""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

from hybrenet_jax.cli._paths import local_path
from hybrenet_jax.cli.cost import threads_type
from hybrenet_jax.cost.gc import DEFAULT_CLIENT_DEVICE, DEFAULT_THREADS, DEVICE_NAMES
from hybrenet_jax.report import build_report, default_published_path
from hybrenet_jax.report.plots import os_reason, shown_path
from hybrenet_jax.report.points import ReportError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pareto", help="Pareto frontiers (accuracy vs ReLUs / FLOPs / latency) and plots",
        description="Read results.jsonl files (one JSON object per line: model, dataset, relus, "
                    "flops, accuracy or test_accuracy, optional distill and latency_seconds) and "
                    "the published points; write pareto.md, pareto.csv, relu_accuracy.png, "
                    "flops_accuracy.png and latency_accuracy.png into --out. Bad lines are "
                    "reported on stderr and skipped. See docs/pareto.md.",
        epilog="examples:\n  hybrenet pareto runs/*/results.jsonl --out reports/pareto\n"
               "  hybrenet pareto --out reports/published   # published points alone\n"
               "  hybrenet pareto results.jsonl --no-published --out reports/ours",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="*", metavar="RESULTS", help="results.jsonl files")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--published", metavar="PATH",
                     help=f"published points CSV (default: {default_published_path()})")
    src.add_argument("--no-published", action="store_true", help="use our results only")
    p.add_argument("--threads", type=threads_type, default=DEFAULT_THREADS,
                   help=f"GC threads for estimated latencies (default: {DEFAULT_THREADS})")
    p.add_argument("--client-device", default=DEFAULT_CLIENT_DEVICE,
                   choices=DEVICE_NAMES,
                   help=f"client profile for GC evaluation (default: {DEFAULT_CLIENT_DEVICE})")
    p.set_defaults(func=run)


def check_text_file(path: str | pathlib.Path, what: str, hint: str = "") -> None:
    """Refuse an input that is missing, not a file, unreadable or not UTF-8 text.

    Raises:
      ReportError: one line naming ``what`` (e.g. ``results file``), the path and the reason,
        then ``hint``.
    """
    path = pathlib.Path(path)
    shown = shown_path(path)
    try:
        if path.exists() and not path.is_file():
            raise ReportError(f"cannot read {what} {shown}: not a file{hint}")
        data = path.read_bytes()
    except OSError as err:
        raise ReportError(f"cannot read {what} {shown}: {err.strerror or err}{hint}") from None
    nul = data.find(b"\0")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        nul = err.start if nul < 0 else min(nul, err.start)
    if nul >= 0:
        raise ReportError(f"{what} {shown} is not text (binary data at byte {nul:,}); expected "
                          + ("JSON lines" if what.startswith("results") else "a CSV file")
                          + hint)


def prepare_out_dir(path: str | pathlib.Path) -> pathlib.Path:
    """Create the output folder ``path`` (and its parents) and check that it takes files.

    Raises:
      ReportError: one line: ``path`` is a file, cannot be created, or is not writable.
    """
    out = pathlib.Path(path)
    shown = shown_path(out)
    try:
        if out.exists() and not out.is_dir():
            raise ReportError(f"--out {shown} is a file, not a folder; give a folder to write "
                              "the report into")
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".hybrenet-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ReportError(f"cannot write the report into {shown}: "
                          f"{os_reason(err, out)}") from None
    return out


def run(args: argparse.Namespace) -> int:
    def warn(message: str) -> None:
        print(f"hybrenet pareto: warning: {message}", file=sys.stderr)

    def local(text: str, option: str) -> str:  # file:///abs/x -> /abs/x; cloud: one line
        return str(local_path(text, option, "pareto", "files", reads=True)) \
            if "://" in text else text

    args.results = [local(p, "RESULTS") for p in args.results]
    if args.published:
        args.published = local(args.published, "--published")
    for path in args.results:
        check_text_file(path, "results file")
    if args.published and not args.no_published:
        check_text_file(args.published, "published points",
                        "; pass --published PATH or --no-published")
    out = local_path(args.out, "--out", "pareto", "files")
    try:
        existed = out.exists()
    except OSError:  # e.g. a name too long: prepare_out_dir says so in one line
        existed = True
    out = prepare_out_dir(out)
    try:
        report = build_report(args.results, out, published=args.published,
                              use_published=not args.no_published, threads=args.threads,
                              client_device=args.client_device, warn=warn)
    except OSError as err:  # the folder filled up or changed under us
        name = shown_path(err.filename) if err.filename else shown_path(out)
        raise ReportError(f"writing the report failed at {name}: "
                          f"{err.strerror or err}") from None
    finally:
        if not existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a refused report leaves no empty folder behind
    ours = sum(p.source == "ours" for p in report.points)
    print(f"{len(report.points)} points ({ours} ours, {len(report.points) - ours} published); "
          f"{len(report.problems)} bad line(s) skipped")
    for dataset, subject in sorted(report.subjects.items()):
        print(f"  {dataset}: frontier of {subject} compared with the other methods")
    for path in report.files:
        print(f"wrote {path}")
    return 0
