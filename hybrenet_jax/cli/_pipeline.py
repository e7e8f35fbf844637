"""Command-line plumbing shared by ``hybrenet criticality|deepreshape|deepreduce|snl``.

The argparse side of the pipeline verbs (options, ``--config`` + ``--config.a.b=v``, output
formatting); the pipelines themselves live in :mod:`hybrenet_jax.pipeline`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import sys
from typing import Callable, Sequence

from hybrenet_jax.bounded import parse_float, parse_int
from hybrenet_jax.cli._types import arg_type
from hybrenet_jax.cli._paths import local_path, training_workdir
from hybrenet_jax.cli._table import format_table
from hybrenet_jax.config import config_from_args
from hybrenet_jax.dataset_info import DATASETS
from hybrenet_jax.pipeline.errors import PipelineError
from hybrenet_jax.schema import (DISTILL_KINDS, MAX_DKD_WEIGHT, TrainConfig, parse_dkd_betas,
                                  updated)

#: Placeholder workdir shown by ``--dry-run`` when no ``--workdir`` is given.
DRY_RUN_DIR = pathlib.Path("DIR")


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = True,
                         note: str = "") -> None:
    """Add ``--config FILE.py[:ARG]``; ``--config.a.b=v`` overrides are taken out of the
    command line by :func:`hybrenet_jax.cli.parse_args` into ``args.config_overrides``."""
    parser.add_argument("--config", required=required, default=None, metavar="FILE.py[:ARG]",
                        help="training config file, e.g. configs/pipeline_digits.py; any field "
                             "can be overridden with --config.FIELD=VALUE "
                             "(e.g. --config.num_epochs=2)" + note)


def add_training_arguments(p: argparse.ArgumentParser, config_required: bool) -> None:
    """``--config FILE.py[:ARG]`` (+ ``--config.x=v`` overrides) and ``--dataset``."""
    add_config_arguments(p, required=config_required,
                         note="" if config_required else
                         " (optional with --dry-run: the paper's 200 epochs are assumed)")
    p.add_argument("--dataset", choices=sorted(DATASETS), default=None,
                   help="dataset (default: the config's)")


def add_plan_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the planning pipelines (deepreshape, deepreduce)."""
    p.add_argument("--budgets", default=None, metavar="B1,B2",
                   help="ReLU budgets (e.g. 50000,100k): variants with more ReLUs than the "
                        "largest budget are not trained")
    p.add_argument("--distill", choices=DISTILL_KINDS, default=None,
                   help="distillation of every variant (default: config pipeline.distill, kd)")
    p.add_argument("--dkd-betas", nargs="+", default=None, metavar="BETA",
                   type=arg_type(parse_float, "beta", low=0.0, low_open=True,
                                 high=MAX_DKD_WEIGHT, note="a positive DKD weight"),
                   help="with --distill dkd: one run per DKD non-target weight beta, the best "
                        "per variant reported (default: config pipeline.dkd_betas, the "
                        "paper's 0.8 1 2 6; target weight distill.dkd_alpha = 1)")
    p.add_argument("--dkd-warmup", choices=("extra", "inside"), default=None,
                   help="DKD warm-up (distill.dkd_warmup_epochs, 20): 'extra' epochs on top of "
                        "the base schedule (the paper's 200 + 20; default, config "
                        "distill.dkd_warmup_extra) or a ramp 'inside' the base epochs")
    p.add_argument("--teacher-workdir", default=None, metavar="DIR",
                   help="a finished teacher run to distil from (default: train "
                        "config.pipeline.teacher_model in DIR/teacher)")
    p.add_argument("--pack", type=pack_type, default=0, metavar="auto|N|1",
                   help="train the variant runs N at a time as one population (one compiled "
                        "step, one teacher pass for all; each run keeps its own workdir): "
                        "auto (default) picks N by backend, 1 trains them one by one")
    p.add_argument("--workdir", default=None, metavar="DIR",
                   help="pipeline directory (required unless --dry-run)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan, counts and estimated compute; train nothing")
    p.add_argument("--json", action="store_true",
                   help="JSON lines: with --dry-run one object per planned model, otherwise "
                        "one results.jsonl object per model")


#: ``--pack`` at most (members of one population, each with its state in memory).
MAX_PACK = 64


def pack_type(text: str) -> int:
    """``--pack``: ``auto`` (0) or a count of runs per population."""
    if text.strip().lower() == "auto":
        return 0
    return arg_type(parse_int, "runs per population", low=1, high=MAX_PACK,
                    note="auto or a count")(text)


def paper_config(dataset: str) -> TrainConfig:
    """The paper recipe (the schema's defaults) on ``dataset``: what ``--dry-run`` estimates
    compute with when no config file is given."""
    return updated(TrainConfig(), {"dataset": dataset})


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The typed config of a pipeline command, with ``--dataset`` applied. Its
    ``distill.kind`` is not used: the pipeline sets each run's distillation (``--distill``)."""
    if args.config is None:
        if not getattr(args, "dry_run", False):
            raise PipelineError("--config is required to train (use --dry-run to only plan)")
        if getattr(args, "config_overrides", None):
            raise PipelineError("--config.FIELD overrides need --config")
        return paper_config(args.dataset or "cifar100")
    config = config_from_args(args)
    return updated(config, {"dataset": args.dataset}) if args.dataset else config


def require_workdir(args: argparse.Namespace) -> pathlib.Path | None:
    """``--workdir`` as a local path (required unless ``--dry-run``; see
    :func:`output_workdir`)."""
    if args.workdir is None:
        if not getattr(args, "dry_run", False):
            raise PipelineError("--workdir DIR is required to train (use --dry-run to only plan)")
        return None
    return output_workdir(args.workdir, getattr(args, "verb", "pipeline"))


#: What a pipeline verb says about a cloud --workdir.
CLOUD_WORKDIR_HINT = ("its results.jsonl and locks are local; cloud storage is for single "
                      "training runs: hybrenet train --workdir URL")


def output_workdir(text: str, verb: str, option: str = "--workdir") -> pathlib.Path:
    """The folder a pipeline verb (criticality, deepreshape, deepreduce, snl) writes: a local
    path or a ``file:///abs/path`` URL (:func:`hybrenet_jax.cli._paths.local_path`)."""
    return local_path(text, option, verb, "folders", CLOUD_WORKDIR_HINT)


def training_chatter_to_stderr() -> contextlib.AbstractContextManager:
    """Send what training prints (eval lines, progress bars) to stderr while it runs.

    The verbs print their results (tables, ``--json`` lines) on stdout afterwards, so stdout
    stays machine-readable.
    """
    return contextlib.redirect_stdout(sys.stderr)


def progress_log(quiet: bool = False) -> Callable[[str], None]:
    """Progress lines on stderr (stdout stays machine-readable with --json)."""
    def log(message: str) -> None:
        if not quiet:
            print(f"hybrenet: {message}", file=sys.stderr, flush=True)
    return log


def flops_text(value: float) -> str:
    """``3.2e15`` -> ``"3.20 P"`` (SI prefix, three significant digits)."""
    for prefix, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6),
                          ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {prefix}"
    return f"{value:.3g}"


def pipeline_options(args: argparse.Namespace, config: TrainConfig,
                     workdir: pathlib.Path | None):
    """``PipelineOptions`` from the shared plan arguments and the config's pipeline section."""
    from hybrenet_jax.pipeline import runner  # noqa: PLC0415 (imports JAX)
    from hybrenet_jax.pipeline.planning import parse_budgets  # noqa: PLC0415

    betas = args.dkd_betas if args.dkd_betas is not None else config.pipeline.dkd_betas
    extra = config.distill.dkd_warmup_extra if args.dkd_warmup is None \
        else args.dkd_warmup == "extra"
    distill = args.distill or config.pipeline.distill
    if distill != "dkd" and (args.dkd_betas is not None or args.dkd_warmup is not None):
        raise PipelineError("--dkd-betas/--dkd-warmup apply to DKD runs: add --distill dkd")
    return runner.PipelineOptions(
        workdir=workdir or DRY_RUN_DIR, distill=distill,
        teacher_workdir=training_workdir(args.teacher_workdir, "--teacher-workdir")
        if args.teacher_workdir else "", budgets=parse_budgets(args.budgets),
        dkd_betas=parse_dkd_betas(betas), dkd_warmup_extra=extra,
        pack=getattr(args, "pack", 0))


def _distill_cell(row: dict) -> str:
    beta = row.get("dkd_beta")
    return row["distill"] if beta is None else f"{row['distill']} b={beta:g}"


def format_dry_run(rows: Sequence[dict]) -> str:
    """The plan as an aligned text table with the total estimated training compute."""
    table = format_table(
        ("role", "model", "variant", "ReLUs (K)", "FLOPs (M)", "distill", "epochs",
         "train FLOPs"),
        [(r["role"], r["model"], r["label"], f"{r['relus'] / 1e3:,.2f}",
          f"{r['flops'] / 1e6:,.1f}", _distill_cell(r), f"{r['epochs']:g}",
          flops_text(r["train_flops_estimate"]))
         for r in rows])
    total = sum(r["train_flops_estimate"] for r in rows)
    groups = [r["population"] for r in rows if "population" in r]
    packed = (f"; the {len(groups)} variant runs train as {max(groups)} population(s) of up "
              f"to {max(groups.count(g) for g in set(groups))} (--pack)" if groups else "")
    return (f"{table}\n\n{len(rows)} training runs; estimated training compute "
            f"{flops_text(total)}FLOPs (3 x FLOPs x images seen, + one teacher forward per "
            f"image of each population when distilling){packed}")


def plan_notes(planned) -> list[str]:
    """Dry-run notes of a plan (or of a plan that waits for a measured order)."""
    if planned is None:
        return ["the variants are planned once the criticality order is measured"]
    notes = [f"criticality order {planned.order_text}; variants: {len(planned.variants)}"]
    notes += [f"skipped: {n}" for n in planned.skipped]
    notes += [f"over budget: {p.model} ({p.counts.relus} ReLUs)" for p in planned.over_budget]
    return notes


def print_plan(rows, notes, as_json: bool) -> None:
    """Dry-run output: JSON lines, or a table followed by notes."""
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    print(format_dry_run(rows))
    for note in notes:
        print(note)


def print_records(records, results_path: pathlib.Path, as_json: bool) -> None:
    """Output of a finished pipeline: JSON lines, or a table of the trained variants."""
    if as_json:
        for rec in records:
            print(json.dumps(rec))
        return
    from hybrenet_jax.pipeline.runner import distill_text  # noqa: PLC0415

    print(format_table(("model", "variant", "ReLUs (K)", "FLOPs (M)", "accuracy %", "distill"),
                       [(r["model"], r.get("label", ""), f"{r['relus'] / 1e3:,.2f}",
                         f"{r['flops'] / 1e6:,.1f}", f"{r['accuracy']:.2f}", distill_text(r))
                        for r in records]))
    print(f"results: {results_path} (feed it to `hybrenet pareto`)")


def execute_plan(verb: str, args: argparse.Namespace, config, options, planned, plan,
                 crit) -> int:
    """Shared tail of ``deepreshape``/``deepreduce``: print the dry-run plan, or train it."""
    from hybrenet_jax.pipeline import runner  # noqa: PLC0415 (imports JAX)
    from hybrenet_jax.train.rundir import Preempted  # noqa: PLC0415

    if args.dry_run:
        rows = runner.dry_run_rows(config, planned.variants if planned else [], options,
                                   crit if planned is None else None)
        print_plan(rows, plan_notes(planned), args.json)
        return 0
    try:
        with training_chatter_to_stderr():
            records = runner.run_pipeline(config, options, planned, plan, crit, verb,
                                          progress_log())
    except Preempted as stop:
        print(f"hybrenet {verb}: {stop}", file=sys.stderr)
        return 0
    print_records(records, options.results.path, args.json)
    return 0
