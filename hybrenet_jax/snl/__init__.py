"""Selective Network Linearization (SNL, Cho et al., ICML 2022): the mask-search baseline.

* :mod:`.settings` — the ``config.snl`` section and its defaults (public SNL scripts, spec §7);
* :mod:`.masks` — mask sites, ReLU counts of masks, binarization to a budget, npz files;
* :mod:`.sparse` — a model whose ReLUs run only on kept positions, so a traced jaxpr counts
  exactly the reported ReLUs;
* :mod:`.steps`, :mod:`.search`, :mod:`.finetune` — the mask search and the fine-tuning
  (:mod:`.runtime`: the mesh, data and checkpoint plumbing they share);
* :mod:`.run` — :func:`~hybrenet_jax.snl.run.run_snl`, the whole procedure with restarts.

See ``docs/snl.md``. Submodules are imported explicitly (they load JAX).
"""
