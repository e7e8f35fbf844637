"""Selective Network Linearization (SNL, Cho et al., ICML 2022): the mask-search baseline.

The ``config.snl`` section and its defaults (public SNL scripts, spec §7) are
:class:`hybrenet_jax.schema.SNLConfig`; the mesh, data stream, restore and evaluation are the
training core's (:class:`hybrenet_jax.train.setup.Setup`). What is SNL's own:

* :mod:`.masks` — mask sites, ReLU counts of masks, binarization to a budget, npz files;
* :mod:`.sparse` — a model whose ReLUs run only on kept positions, so a traced jaxpr counts
  exactly the reported ReLUs;
* :mod:`.steps` — the search and fine-tuning objectives on the training core's step;
* :mod:`.search`, :mod:`.finetune` — the mask search and the fine-tuning loops;
* :mod:`.errors` — :class:`~hybrenet_jax.snl.errors.SNLError`;
* :mod:`.run` — :func:`~hybrenet_jax.snl.run.run_snl`, the whole procedure with restarts.

See ``docs/snl.md``. Submodules are imported explicitly (they load JAX).
"""
