"""The paper's ReLU-reuse ablation grid (App. G, Table 14) -- counts, and short digits runs.

Table 14 applies Re2 to one conv layer per BasicBlock of ResNet18 (``reuse_layers=alternate``,
stem untouched) on CIFAR-100 and compares, for N = 2, 4, 8, 16: N equal divisions without the
link between subspaces, N equal divisions with it, and the proposed three groups. Each cell is
a model string; from the repository root:

    python -m configs.re2_ablation_digits                     # the grid: ReLUs and FLOPs
    python -m configs.re2_ablation_digits --train runs/re2    # + train every digits cell
    python -m launch.train --config configs/re2_ablation_digits.py:equal-off-8 \\
        --workdir runs/re2/equal-off-8                        # one cell

Counts are printed for the paper's network (``resnet18``, CIFAR-100); the runs use the
embedded digits and ``resnet18:m=16`` (every width a multiple of 16), 4 epochs each (2 busy
CPU cores: about 2 minutes per cell, the grid in under half an hour; docs/relu_reuse.md shows
the output). With N = 2 the three-group and equal splits are the same layer, so those cells
train once.
"""

from __future__ import annotations

import argparse
import itertools
import pathlib
import sys

from configs.default import get_config as digits_config

#: (split, link) columns of Table 14, left to right, and its reuse factors.
SETTINGS = (("equal", "off"), ("equal", "on"), ("three", "on"))
FACTORS = (2, 4, 8, 16)
PAPER_BASE = "resnet18"
DIGITS_BASE = "resnet18:m=16"
CELLS = tuple(f"{split}-{link}-{n}" for n, (split, link) in itertools.product(FACTORS, SETTINGS))


def cell_model(cell: str, base: str = DIGITS_BASE) -> str:
    """The model string of a grid cell ``SPLIT-LINK-N``, e.g. ``equal-off-8``."""
    try:
        split, link, n = cell.split("-")
        if (split, link) not in SETTINGS or int(n) not in FACTORS:
            raise ValueError
    except ValueError:
        raise ValueError(f"unknown cell {cell!r}; accepted: {', '.join(CELLS)}") from None
    sep = "," if ":" in base else ":"
    return f"{base}{sep}reuse={n},reuse_split={split},reuse_link={link},reuse_layers=alternate"


def get_config(arg: str | None = None):
    """Digits recipe for one cell (``re2_ablation_digits.py:three-on-4``, the default)."""
    c = digits_config(cell_model(arg or "three-on-4"))
    c.num_epochs = 4
    c.warmup_epochs = 0.5
    c.log_every_steps = 20
    c.checkpoint_keep = 1
    c.async_checkpointing = False
    c.tensorboard = False
    c.progress = False
    return c


def _rows(workdir: pathlib.Path | None) -> list[tuple[str, ...]]:
    from hybrenet_jax.architecture import expand
    from hybrenet_jax.counts import count
    from hybrenet_jax.model_string import spec_from_model_string

    rows, trained = [], {}
    for cell in CELLS:
        paper = count(spec_from_model_string(cell_model(cell, PAPER_BASE), "cifar100"))
        digits = spec_from_model_string(cell_model(cell), "digits")
        row = (cell, f"{paper.relus / 1e3:,.2f}", f"{paper.flops / 1e6:,.1f}",
               f"{count(digits).flops / 1e6:,.2f}")
        if workdir is not None:
            arch = expand(digits)  # the same layers under another name train once (N = 2)
            key = (tuple((c.name, c.groups()) for c in arch.convs()), arch.relu_sites())
            if key not in trained:
                from hybrenet_jax.train import train_and_evaluate

                summary = train_and_evaluate(get_config(cell), workdir / cell)
                trained[key] = f"{100 * summary['test_accuracy']:.2f}"
            row += (trained[key],)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", metavar="WORKDIR", type=pathlib.Path,
                        help="also train every digits cell, one run folder per cell")
    args = parser.parse_args(argv)
    from hybrenet_jax.cli._table import format_table

    header = ("cell", "ReLUs (K), resnet18", "FLOPs (M), resnet18", "FLOPs (M), digits")
    if args.train:
        header += ("digits acc %",)
    print("Table 14 grid: Re2 on one conv per BasicBlock (reuse_layers=alternate)")
    print(format_table(header, _rows(args.train)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
