"""Train a network: ``python -m launch.train --config configs/X.py[:ARG] --workdir DIR``.

The same command as ``hybrenet train`` (:mod:`hybrenet_jax.cli.train` says everything it
accepts): ``--config.FIELD=VALUE`` overrides any field, a bad field or value is one line and
exit 2, ``--distributed`` or ``--coordinator_address/--num_processes/--process_id`` join a
multi-process run, Ctrl-C saves like SIGTERM.
"""

from __future__ import annotations

import sys

from hybrenet_jax.runtime import configure_xla  # imports no JAX

PROG = "launch.train"


def cli(argv: list[str] | None = None) -> None:
    """Parse (usage errors: one line, exit 2), then train; a user error is one line, exit 2."""
    configure_xla()  # before any JAX backend starts: XLA reads XLA_FLAGS once
    from hybrenet_jax.cli import OneLineParser, capped, parse_args
    from hybrenet_jax.cli.train import _aborted, add_arguments, train
    from hybrenet_jax.errors import HybrenetError

    parser = OneLineParser(prog=PROG, description=__doc__)
    add_arguments(parser)
    try:
        args = parse_args(parser, sys.argv[1:] if argv is None else argv)
        sys.exit(train(args, PROG))
    except HybrenetError as err:
        print(f"{PROG}: error: {capped(str(err))}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C while importing or starting up
        _aborted(PROG)


if __name__ == "__main__":
    cli()
