"""SNL mask search: learn per-pixel/per-channel ReLU masks under a growing L1 penalty.

Starting from a pretrained network with every mask at 1, each search epoch trains weights and
masks together (Adam) on ``CE + KD + lambda * ||mask||_1``. After the epoch the ReLU count of
the masks above the threshold is taken: a new lowest count is remembered, otherwise (from
epoch ``lasso_patience_epochs`` on) lambda grows by ``lasso_growth``. The search stops as soon
as the count is within the budget, or after ``max_epochs``.

A search epoch is one pass over the training set, or ``epoch_steps`` steps when set (tiny
runs). Progress is checkpointed under ``directory`` (about once per data epoch and at the
end) with lambda and the lowest count, so an interrupted search resumes where it stopped;
``search.jsonl`` logs every search epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
from typing import Callable

import jax
import jax.numpy as jnp

from hybrenet_jax.netspec import NetSpec
from hybrenet_jax.snl.masks import (Masks, mask_sites, masks_from_params, relu_count,
                                    strip_masks, total_relus, with_masks)
from hybrenet_jax.schema import SNLConfig
from hybrenet_jax.snl.model import build_snl_model
from hybrenet_jax.snl.steps import SNLLoss, make_search_step, search_optimizer
from hybrenet_jax.snl.errors import SNLError
from hybrenet_jax.train.checkpoint import Checkpointer
from hybrenet_jax.train.divergence import DivergenceWatch, diverged_message
from hybrenet_jax.train.rundir import JsonLinesLog, check_lock
from hybrenet_jax.train.setup import Setup
from hybrenet_jax.train.state import create_state
from hybrenet_jax.train.steps import Teacher


@dataclasses.dataclass(frozen=True)
class SearchOutcome:
    """Where the search stopped: raw mask values and the weights trained with them."""

    masks: Masks
    params: dict
    batch_stats: dict
    epochs: int
    steps: int
    lasso: float
    count: int
    reached: bool


def search_masks(setup: Setup, settings: SNLConfig, spec: NetSpec, params: dict,
                 batch_stats: dict, teacher: Teacher | None, budget: int,
                 directory: pathlib.Path, log: Callable[[str], None]) -> SearchOutcome:
    """Run (or resume) the mask search of ``spec`` from pretrained ``params``/``batch_stats``."""
    sites = mask_sites(spec, settings.granularity, settings.mask_stem)
    total = total_relus(sites)
    model = build_snl_model(spec, setup.dtype, settings.granularity, learnable_masks=True,
                            mask_stem=settings.mask_stem)
    optimizer = search_optimizer(settings.search_learning_rate, settings.masks_learning_rate)

    def init():
        ones = {s.name: jnp.ones(s.shape, jnp.float32) for s in sites}
        return create_state({"params": with_masks(params, ones), "batch_stats": batch_stats},
                            optimizer)

    directory.mkdir(parents=True, exist_ok=True)
    checkpointer = Checkpointer(directory, max_to_keep=1, keep_best=0, use_async=False)
    state, meta = setup.restore(checkpointer, init)
    progress = {"epoch": 0, "lasso": settings.lasso, "lowest": total, "count": total,
                "reached": False}
    if meta is not None:
        progress.update({k: meta[k] for k in progress if k in meta})
        log(f"SNL search resumed at search epoch {progress['epoch']} (lambda "
            f"{progress['lasso']:.3g}, {progress['count']} ReLUs above threshold)")
    step_fn = make_search_step(model, optimizer, SNLLoss.of(settings), setup.mesh, teacher)
    teacher_vars = teacher.variables if teacher else None
    steps_per = settings.epoch_steps or setup.steps_per_epoch
    save_every = max(1, setup.steps_per_epoch // steps_per)
    history = JsonLinesLog(directory / "search.jsonl", "search history")
    # epochs at or past the resumed one are searched again: their old lines go (once each)
    history.retain(lambda rec: _epoch_before(rec, progress["epoch"]),
                   f"search resumes at epoch {progress['epoch']}")
    saved_step = int(state.step) if meta is not None else -1

    def save() -> None:
        nonlocal saved_step
        if int(state.step) != saved_step:
            check_lock(directory)  # our run.lock still ours: no other run is writing here
            checkpointer.save(int(state.step), state, dict(progress), force=True)
            saved_step = int(state.step)

    watch = DivergenceWatch()
    # one batch stream over every search epoch left (closed, with its threads, on leaving)
    first = int(state.step)
    feed = setup.feed(first, first + (settings.max_epochs - progress["epoch"]) * steps_per)
    with contextlib.closing(feed):
        while not progress["reached"] and progress["epoch"] < settings.max_epochs:
            lam = jnp.float32(progress["lasso"])
            for _ in range(steps_per):
                state, metrics = step_fn(state, next(feed), teacher_vars, lam)
                watch.observe(state.step, metrics)
            bad = watch.check(state)  # before the masks are counted, logged or saved
            if bad is not None:
                raise SNLError(diverged_message(
                    "SNL mask search", bad, checkpointer.last_intact_step(), str(directory),
                    "lower snl.search_learning_rate (and snl.mask_learning_rate)"))
            masks = masks_from_params(jax.device_get(state.params), sites)
            count = relu_count(masks, sites, settings.threshold)
            epoch = progress["epoch"]
            if count < progress["lowest"]:
                progress["lowest"] = count
            elif epoch >= settings.lasso_patience_epochs:
                progress["lasso"] *= settings.lasso_growth
            progress.update(epoch=epoch + 1, count=count, reached=count <= budget)
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            history.append({"epoch": epoch, "step": int(state.step), "relus": count,
                            "lasso": float(lam), **metrics})
            if progress["epoch"] % save_every == 0:
                save()
    save()
    checkpointer.close()
    if not progress["reached"]:
        log(f"SNL search: budget {budget} not reached after {progress['epoch']} search epochs "
            f"({progress['count']} ReLUs above threshold); binarization keeps the largest "
            "masks within the budget")
    host = jax.device_get(state)
    return SearchOutcome(masks=masks_from_params(host.params, sites),
                         params=strip_masks(host.params, sites),
                         batch_stats=host.batch_stats, epochs=int(progress["epoch"]),
                         steps=int(host.step), lasso=float(progress["lasso"]),
                         count=int(progress["count"]), reached=bool(progress["reached"]))


def _epoch_before(record: dict, epoch: int) -> bool:
    """Whether a ``search.jsonl`` record is of a search epoch before ``epoch`` (kept on
    resume); a record without an integer epoch is kept."""
    value = record.get("epoch")
    return not isinstance(value, int) or value < epoch


__all__ = ["SearchOutcome", "search_masks"]
