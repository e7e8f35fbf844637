"""Entry points and launch scripts (local, SLURM multi-node GPU, TPU pods)."""
