"""``hybrenet criticality``: measure each stage's ReLU criticality by training (spec §4)."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from hybrenet_jax.cli._pipeline import (add_training_arguments, pack_type, progress_log,
                                           training_chatter_to_stderr)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "criticality", help="train stage-only networks and rank the stages by ReLU criticality",
        description="For each stage k, train MODEL with ReLUs only in stage k (every other "
                    "stage culled; the stem belongs to Stage1), with KD from --teacher-workdir "
                    "(the paper's criticality tables are KD accuracies; without a teacher the "
                    "verb refuses unless --no-teacher asks for plain cross-entropy). Then C_k = (A_k - min A) * "
                    "(R_k/1000)^-0.07 with R_k the base network's stage-k ReLUs. Each stage run "
                    "is resumable (DIR/stage_Sk); finished ones are skipped. Writes "
                    "DIR/criticality.json and DIR/criticality.md. See docs/pipeline.md.",
        epilog="examples:\n"
               "  hybrenet criticality --config configs/pipeline_digits.py "
               "\"hrn-2x2x2x:m=4,depths=1-1-1-1\" --no-teacher --workdir runs/crit\n"
               "  hybrenet criticality --config configs/kd.py:cifar100 resnet18:m=16 "
               "--teacher-workdir runs/teacher-c100 --workdir runs/crit-r18",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="model string of the base network")
    add_training_arguments(p, config_required=True)
    p.add_argument("--workdir", default=None, metavar="DIR",
                   help="output folder (default: runs/criticality/<model>)")
    teacher = p.add_mutually_exclusive_group()
    teacher.add_argument("--teacher-workdir", default=None, metavar="DIR",
                         help="finished teacher run for KD (required unless --no-teacher)")
    teacher.add_argument("--no-teacher", action="store_true",
                         help="train the stage-only networks with plain cross-entropy (not the "
                              "paper's metric, which uses KD accuracies)")
    p.add_argument("--pack", type=pack_type, default=0, metavar="auto|N|1",
                   help="train the stage runs N at a time as one population (one teacher pass "
                        "for all; default auto: by backend; 1: one by one)")
    p.add_argument("--json", action="store_true", help="print criticality.json to stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # JAX and the training loop load only when the verb runs.
    from hybrenet_jax.cli._pipeline import (output_workdir, resolve_config,  # noqa: PLC0415
                                            training_workdir)
    from hybrenet_jax.pipeline.criticality import base_spec, measure_criticality  # noqa: PLC0415
    from hybrenet_jax.train.rundir import Preempted  # noqa: PLC0415
    from hybrenet_jax.pipeline.naming import run_dir_name  # noqa: PLC0415

    from hybrenet_jax.pipeline.errors import PipelineError  # noqa: PLC0415

    if not args.teacher_workdir and not args.no_teacher:
        raise PipelineError("no teacher: the paper's criticality uses KD accuracies; give "
                            "--teacher-workdir DIR (a finished run) or --no-teacher for plain "
                            "cross-entropy")
    config = resolve_config(args)
    base_spec(args.model, config.dataset)  # bad model strings fail before any training
    teacher = training_workdir(args.teacher_workdir, "--teacher-workdir") \
        if args.teacher_workdir else None
    workdir = output_workdir(args.workdir, "criticality") if args.workdir else \
        pathlib.Path("runs") / "criticality" / run_dir_name(args.model, config.dataset,
                                                            "kd" if args.teacher_workdir
                                                            else "none")
    if args.no_teacher:  # after every refusal: a refused command prints one line
        print("hybrenet criticality: warning: --no-teacher: stage-only networks train with "
              "plain cross-entropy, not KD as in the paper; the order may differ",
              file=sys.stderr)
    try:
        with training_chatter_to_stderr():
            result = measure_criticality(config, args.model, workdir, teacher,
                                         log=progress_log(), pack=args.pack)
    except Preempted as stop:
        print(f"hybrenet criticality: {stop}", file=sys.stderr)
        return 0
    if args.json:
        print(json.dumps(result.as_dict()))
        return 0
    print(result.markdown())
    print(f"wrote {workdir / 'criticality.json'} and {workdir / 'criticality.md'}")
    return 0
