"""``hybrenet train`` (the same as ``python -m launch.train``): train one network.

``--config configs/X.py[:ARG] --workdir DIR``; any config field can be overridden with
``--config.FIELD=VALUE`` (``--config.total_steps=100 --config.model=hrn-5x5x3x``); a field
that does not exist is an error. Every field is checked against its rule
(:mod:`hybrenet_jax.schema`) before anything starts: a bad value is one line and exit 2. Multi-process runs call ``jax.distributed.initialize`` with the arguments of
:func:`hybrenet_jax.distributed.cluster_args`: with ``--distributed``, from the SLURM
environment (one process per node with all its GPUs, or one per GPU) or by JAX's
auto-detection (TPU VMs); or explicitly with ``--coordinator_address/--num_processes/
--process_id [--local_device_ids 0,1]``. The workdir may be a local path or a
``gs://``/``s3://``/``file://`` URL. Ctrl-C saves the current step like SIGTERM (exit 0, rerun
to resume); a second Ctrl-C stops at once without saving (exit 130).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from hybrenet_jax.bounded import parse_int
from hybrenet_jax.cli._types import arg_type
from hybrenet_jax.cli._pipeline import add_config_arguments
from hybrenet_jax.schema import MAX_DEVICES

#: ``--seeds`` at most (members of one population, each with its state in memory).
MAX_SEEDS = 64


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The training command's options (shared by ``hybrenet train`` and ``launch.train``)."""
    add_config_arguments(p)
    p.add_argument("--workdir", required=True, metavar="DIR",
                   help="run directory: checkpoints, metrics, summary.json")
    p.add_argument("--seeds", type=arg_type(parse_int, "seeds", low=1, high=MAX_SEEDS),
                   default=1, metavar="N",
                   help="train N seeds (seed, seed+1, ...) as one population sharing the data "
                        "stream (data_seed = the first seed), in DIR/seed_S each; reports the "
                        "test accuracy as mean ± std (default: 1, one run in DIR)")
    p.add_argument("--distributed", action="store_true",
                   help="join a multi-process run found in the environment (SLURM, TPU pods)")
    p.add_argument("--coordinator_address", default=None, metavar="HOST:PORT",
                   help="process 0's address (manual multi-process)")
    p.add_argument("--num_processes", type=arg_type(parse_int, "processes", low=1,
                                                    high=MAX_DEVICES),
                   default=None, help="manual multi-process")
    p.add_argument("--process_id", type=arg_type(parse_int, "process", low=0,
                                                 high=MAX_DEVICES - 1),
                   default=None, help="manual multi-process")
    p.add_argument("--local_device_ids", default=None, metavar="0,1",
                   help="devices of this process (default: all it sees, or its share of the "
                        "node's GPUs under SLURM)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one network from a config file (= launch.train)",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=lambda args: train(args, "hybrenet train"))


def _init_distributed(args: argparse.Namespace) -> None:
    """Join the multi-process run the options and the environment describe (if any)."""
    from hybrenet_jax import distributed

    ids = None
    if args.local_device_ids is not None:
        ids = [parse_int(i, f"--local_device_ids={args.local_device_ids}: device id", low=0,
                         high=MAX_DEVICES - 1, note="a comma list of integers",
                         error=distributed.ClusterError)
               for i in args.local_device_ids.split(",")]
    cluster = distributed.cluster_args(os.environ, distributed=args.distributed,
                                       coordinator_address=args.coordinator_address,
                                       num_processes=args.num_processes,
                                       process_id=args.process_id, local_device_ids=ids)
    distributed.initialize(cluster)


def _aborted(prog: str) -> None:
    """A second Ctrl-C (or one before training started): one line, exit 130 at once."""
    print(f"{prog}: interrupted; nothing more was saved, rerun the same command to resume "
          "from the last checkpoint", file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(130)  # background writers (async checkpoints, data threads) must not delay it


def train(args: argparse.Namespace, prog: str) -> int:
    """Load and check the config, join the cluster, train; ``HybrenetError`` is the caller's
    (one line, exit 2). Returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow (tfds, TensorBoard)
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "orbax", "jax._src"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Ctrl-C: the training loop takes the first one (save, then stop); any other stops the
    # process at once with one line, wherever it lands (imports, compiling, an async save,
    # JAX's exit handlers), so no library prints a traceback for it.
    signal.signal(signal.SIGINT, lambda signum, frame: _aborted(prog))
    try:
        from hybrenet_jax.config import config_from_args
        from hybrenet_jax.train import train_and_evaluate
        from hybrenet_jax.train.loop import run_directory
        from hybrenet_jax.train.storage import check_reachable, workdir_path

        # typed and checked before the cluster is joined and before anything compiles
        config = config_from_args(args)
        workdir = check_reachable(run_directory(args.workdir), "--workdir")
        if config.distill.kind != "none" and config.distill.teacher_workdir:
            check_reachable(workdir_path(config.distill.teacher_workdir),  # read at the start
                            "distill.teacher_workdir")
        _init_distributed(args)
        if args.seeds > 1:
            return _train_seeds(config, workdir, args.seeds)
        summary = train_and_evaluate(config, workdir)
    except KeyboardInterrupt:
        _aborted(prog)
    if summary.get("preempted"):
        what = "interrupted" if summary.get("signal") == "SIGINT" else "preempted"
        print(f"{what} at step {summary['step']} (saved); rerun the same command to resume")
        return 0
    print(f"done: test accuracy {summary['test_accuracy']:.4f} after {summary['steps']} steps "
          f"({summary['wall_seconds']:.0f} s); params digest {summary['params_digest'][:16]}; "
          f"summary in {args.workdir}/summary.json")
    return 0


def _train_seeds(config, workdir, seeds: int) -> int:
    """``--seeds N``: the seeds as one population (:func:`~hybrenet_jax.train.loop.
    train_population`), each in ``DIR/seed_S``; ``DIR/seeds.json`` holds every member's
    result and the mean ± std of the test accuracy."""
    import dataclasses
    import statistics

    import jax

    from hybrenet_jax.schema import stream_seed
    from hybrenet_jax.train.loop import train_population
    from hybrenet_jax.train.rundir import locked_workdir, write_json

    shared = stream_seed(config)
    members = [dataclasses.replace(config, seed=config.seed + k, data_seed=shared)
               for k in range(seeds)]
    dirs = [workdir / f"seed_{m.seed}" for m in members]
    with locked_workdir(workdir, enabled=jax.process_index() == 0):
        results = train_population(list(zip(members, dirs)))
        done = [r for r in results if isinstance(r, dict) and not r.get("preempted")]
        for member, directory, result in zip(members, dirs, results):
            if isinstance(result, BaseException):
                print(f"seed {member.seed}: {result}")
            elif result.get("preempted"):
                what = "interrupted" if result.get("signal") == "SIGINT" else "preempted"
                print(f"seed {member.seed}: {what} at step {result['step']} (saved)")
            else:
                print(f"seed {member.seed}: test accuracy {result['test_accuracy']:.4f} after "
                      f"{result['steps']} steps; params digest "
                      f"{result['params_digest'][:16]} ({directory})")
        if len(done) < len(results):
            if any(isinstance(r, dict) and r.get("preempted") for r in results):
                print("rerun the same command to resume")
                return 0
            return 2
        accuracies = [r["test_accuracy"] for r in done]
        mean, std = statistics.mean(accuracies), statistics.stdev(accuracies)
        if jax.process_index() == 0:
            write_json(workdir / "seeds.json", {
                "model": config.model, "dataset": config.dataset, "data_seed": shared,
                "seeds": [m.seed for m in members], "workdirs": [str(d) for d in dirs],
                "test_accuracy": accuracies, "test_accuracy_mean": mean,
                "test_accuracy_std": std, "population": len(members)})
    print(f"done: test accuracy {mean:.4f} ± {std:.4f} (mean ± std over {seeds} seeds, one "
          f"data order); summary in {workdir}/seeds.json")
    return 0
