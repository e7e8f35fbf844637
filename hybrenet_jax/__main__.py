"""``python -m hybrenet_jax`` runs the ``hybrenet`` CLI."""

from hybrenet_jax.cli import run

if __name__ == "__main__":
    run()
