"""Train a network: ``python -m launch.train --config configs/X.py[:ARG] --workdir DIR``.

Any config field can be overridden: ``--config.total_steps=100 --config.model=hrn-5x5x3x``.
A typo in a field name fails loudly (the config is locked). Multi-process runs call
``jax.distributed.initialize`` with the arguments of ``hybrenet_jax.distributed.cluster_args``:
with ``--distributed``, from the SLURM environment (one process per node with all its GPUs, or
one per GPU) or by JAX's auto-detection (TPU VMs); or explicitly with
``--coordinator_address/--num_processes/--process_id [--local_device_ids 0,1]``. The workdir
may be a local path or a ``gs://``/``s3://``/``file://`` URL.

Every config field is checked against its rule (``hybrenet_jax/train/config_rules.py``) before
anything starts: a bad value is one line and exit 2. Ctrl-C saves the current step like SIGTERM
(exit 0, rerun to resume); a second Ctrl-C stops at once without saving (exit 130).
"""

from __future__ import annotations

import logging
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow (tfds, TensorBoard) is chatty
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # TF computes nothing for us; quiets its banner

from hybrenet_jax.runtime import configure_xla  # noqa: E402  (imports no JAX)

configure_xla()  # before any JAX backend starts: XLA reads XLA_FLAGS once

from absl import flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, summary.json.")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() with cluster auto-detection "
                  "(SLURM, TPU pods).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (manual multi-process).")
flags.DEFINE_integer("num_processes", None, "Number of processes (manual multi-process).")
flags.DEFINE_integer("process_id", None, "This process's index (manual multi-process).")
flags.DEFINE_list("local_device_ids", None,
                  "Devices of this process (comma list; default: all it sees, or its share "
                  "of the node's GPUs under SLURM).")
flags.mark_flags_as_required(["config", "workdir"])


def _init_distributed() -> None:
    """Join the multi-process run the flags and the environment describe (if any)."""
    from hybrenet_jax import distributed

    ids = FLAGS.local_device_ids
    try:
        ids = [int(i) for i in ids] if ids is not None else None
    except ValueError:
        raise distributed.ClusterError(f"--local_device_ids={','.join(ids)} must be a comma "
                                       "list of integers") from None
    args = distributed.cluster_args(os.environ, distributed=FLAGS.distributed,
                                    coordinator_address=FLAGS.coordinator_address,
                                    num_processes=FLAGS.num_processes,
                                    process_id=FLAGS.process_id, local_device_ids=ids)
    distributed.initialize(args)


def _aborted() -> None:
    """A second Ctrl-C (or one before training started): one line, exit 130 at once."""
    print("launch.train: interrupted; nothing more was saved, rerun the same command to resume "
          "from the last checkpoint", file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(130)  # background writers (async checkpoints, data threads) must not delay it


def _on_interrupt(signum, frame) -> None:  # noqa: ARG001
    """SIGINT outside the training loop, or a second one inside it (the loop passes that on)."""
    _aborted()


def main(argv) -> int:
    del argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "orbax", "jax._src"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from hybrenet_jax.errors import HybrenetError
    from hybrenet_jax.train import train_and_evaluate
    from hybrenet_jax.train.config_rules import validate_config
    from hybrenet_jax.train.loop import run_directory

    # Ctrl-C: the training loop takes the first one (save, then stop); any other stops the
    # process at once with one line, wherever it lands (imports, compiling, an async save,
    # JAX's exit handlers), so no library prints a traceback for it.
    signal.signal(signal.SIGINT, _on_interrupt)
    try:
        # the static checks come before the cluster is joined and before anything compiles
        validate_config(FLAGS.config)
        workdir = run_directory(FLAGS.workdir)
        _init_distributed()
        summary = train_and_evaluate(FLAGS.config, workdir)
    except HybrenetError as err:
        print(f"launch.train: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _aborted()
    if summary.get("preempted"):
        what = "interrupted" if summary.get("signal") == "SIGINT" else "preempted"
        print(f"{what} at step {summary['step']} (saved); rerun the same command to resume")
        return 0
    print(f"done: test accuracy {summary['test_accuracy']:.4f} after {summary['steps']} steps "
          f"({summary['wall_seconds']:.0f} s); params digest {summary['params_digest'][:16]}; "
          f"summary in {FLAGS.workdir}/summary.json")
    return 0


def cli() -> None:
    """Parse flags first so that usage errors exit 2 with one line, then run ``main``."""
    try:
        argv = FLAGS(sys.argv)
        FLAGS.config.keys()  # ml_collections defers config-file errors to the first access
    except flags.Error as err:
        print(f"launch.train: error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # ml_collections could not load the config file
        given = next((a for a in sys.argv[1:] if a.startswith("--config=")), "--config")
        cause = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        print(f"launch.train: error: could not load {given}: {cause}", file=sys.stderr)
        sys.exit(2)
    except (AttributeError, KeyError) as err:  # ml_collections: override of an unknown field
        bad = [a for a in sys.argv[1:] if a.startswith("--config.")]
        print(f"launch.train: error: unknown config field {err} in {' '.join(bad)}; the "
              "accepted fields are those of the config file (see configs/base.py)",
              file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(main(argv))
    except KeyboardInterrupt:  # Ctrl-C while importing or starting up
        _aborted()


if __name__ == "__main__":
    cli()
