"""ReLU-optimization pipelines: criticality, DeepReShape and DeepReDuce (issue 5).

* :mod:`.criticality` — per-stage ReLU criticality by training stage-only networks;
* :mod:`.deepreshape` — criticality order -> equalized HRNs -> Algorithm 2 variants;
* :mod:`.deepreduce` — culled / thinned / channel-scaled variants of classical networks;
* :mod:`.runner` and :mod:`.jobs` — resumable training of a plan and ``results.jsonl``;

Config files and ``--config.a.b=v`` overrides are :mod:`hybrenet_jax.config`'s, as for
``launch.train``; their argparse side is :mod:`hybrenet_jax.cli._pipeline`.

See ``docs/pipeline.md`` for the commands and a worked example on the digits dataset.
Submodules are imported explicitly (``from hybrenet_jax.pipeline.runner import ...``) so that
the light ones (:mod:`.settings`, :mod:`.planning`) do not pull in JAX.
"""
