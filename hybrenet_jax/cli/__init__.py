"""The ``hybrenet`` command line: one sub-command module per verb.

Each verb module defines ``register(subparsers)`` which adds its parser and sets
``func(args) -> int``. Errors caused by the user (:class:`HybrenetError`) are printed as one
line and exit with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
from typing import Sequence

from hybrenet_jax.errors import HybrenetError
from hybrenet_jax.model_string import NAME_FORMS
from hybrenet_jax.runtime import configure_xla

#: Verb modules in the order ``--help`` lists them.
VERBS: tuple[str, ...] = (
    "train", "count", "summary", "design", "plan", "cost", "pareto", "plot_distribution",
    "export", "criticality", "deepreshape", "deepreduce", "snl",
)

_EPILOG = """examples:
  hybrenet train --config configs/default.py --workdir runs/default --config.num_epochs=2
  hybrenet count resnet18 hrn-5x5x3x wrn22x8
  hybrenet count "hrn-2x5x3x:cull=S1,thin=S2+S3+S4,reuse=4" --dataset tinyimagenet --json
  hybrenet design --depths 2-2-2-2 --order S3,S2,S4,S1
  hybrenet design --depths 3-4-6-3 --order S3,S2,S4,S1 --json
  hybrenet design --depths 2-2-2-2 --order S3,S2,S4,S1 --by depth
  hybrenet plan hrn-2x5x3x
  hybrenet cost resnet18 hrn-5x5x3x --threads 4 --json
  hybrenet pareto runs/*/results.jsonl --out reports/pareto
  hybrenet plot-distribution resnet18 hrn-5x5x3x --out dist.png --order S3,S2,S4,S1
  hybrenet summary "hrn-2x5x3x:cull=S1,thin=S2+S3+S4,reuse=4" --relus-only
  hybrenet count resnet18 --measure
  hybrenet export --workdir runs/default --format onnx --out hrn.onnx --verify
  hybrenet criticality --config configs/pipeline_digits.py "hrn-2x2x2x:m=4,depths=1-1-1-1" --workdir runs/crit
  hybrenet deepreshape --depths 2-2-2-2 --order S3,S2,S4,S1 --budgets 50k,100k --dry-run
  hybrenet deepreduce resnet18 --order S3,S2,S4,S1 --dry-run
  hybrenet snl --config configs/snl_digits.py "hrn-2x2x2x:m=4,depths=1-1-1-1" --budget 5000 --workdir runs/snl

model strings: NAME[:key=value,...]
  NAME  {names}
  keys  m (base width), depths (3-4-6-3), widths (resnet18/34 only), cull / thin (S1+S2),
        reuse (ReLU-reuse factor N) with reuse_split (three|equal), reuse_link (on|off),
        reuse_layers (kept|alternate), classes
"""
#: ``--help``'s epilog; the names come from the one registry (``families.NAMES``).
EPILOG = _EPILOG.format(names=textwrap.fill(
    " ".join(NAME_FORMS), width=88, subsequent_indent=" " * 8, break_on_hyphens=False))


#: The longest error message printed; longer ones (echoes of huge bad input) are cut.
MAX_MESSAGE = 2000


def capped(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` cut in the middle to about ``limit`` characters, so that its start (what
    was wrong) and its end (what is accepted) stay, saying how much was left out."""
    if len(message) <= limit:
        return message
    half = limit // 2
    return (f"{message[:half]}[... {len(message) - 2 * half:,} characters ...]"
            f"{message[-half:]}")


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors echo at most :data:`MAX_MESSAGE` characters
    of what was given (``--dataset`` with 100,000 characters, a huge unknown option)."""

    def error(self, message: str):  # noqa: D401 - argparse's signature
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {capped(message, 300)}\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every verb registered."""
    parser = OneLineParser(
        prog="hybrenet",
        description="Design, count and plan HybReNets for private inference (DeepReShape).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb in VERBS:
        importlib.import_module(f"hybrenet_jax.cli.{verb}").register(sub)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv``; ``--config.a.b=v`` overrides (which argparse cannot declare) are taken
    out first and land in ``args.config_overrides``, for verbs that read a ``--config``."""
    from hybrenet_jax.config import split_overrides

    try:
        overrides, rest = split_overrides(argv)
    except HybrenetError as err:
        parser.error(str(err))
    args = parser.parse_args(rest)
    if overrides and not hasattr(args, "config"):
        parser.error(f"--config.{overrides[0].partition('=')[0]}: this command reads no config "
                     "file")
    args.config_overrides = overrides
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 user error)."""
    parser = build_parser()
    args = parse_args(parser, sys.argv[1:] if argv is None else list(argv))
    try:
        return int(args.func(args) or 0)
    except HybrenetError as err:
        print(f"hybrenet {args.verb}: error: {capped(str(err))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `hybrenet count ... | head`
        return 0


def run() -> None:
    """Console-script entry point."""
    configure_xla()  # verbs that train or trace start a JAX backend later
    sys.exit(main())
