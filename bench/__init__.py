"""Benchmarks of hybrenet_jax (not part of the installed package; run from the repo root).

``python -m bench.throughput``: training throughput of our jit-compiled step against a
PyTorch reference (``bench/torch_reference.py``), the input pipeline, and the data-parallel
step on simulated devices. See docs/benchmarks.md.
"""
