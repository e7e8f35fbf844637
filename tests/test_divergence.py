"""Divergence (issue #24, class 1): nothing non-finite is ever saved, ranked or recorded.

The training loop, SNL's search and fine-tuning check every step's metrics (folded on the
device) and the state before they log, evaluate, rank or save; a restore rejects a non-finite
checkpoint written before these checks existed; the advised fix (a lower learning rate) works.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_launch, tiny_config
from hybrenet_jax.train.divergence import (DivergenceWatch, diverged_message, finite_numbers,
                                           host_tree_is_finite, tree_is_finite)

# the case: checkpoints and evals every 2 steps, the finite-check of old only every 10
HOSTILE = dict(total_steps=12, checkpoint_every_steps=2, eval_every_steps=2,
               log_every_steps=10, warmup_epochs=0.0)


def _finite_dir(step_dir) -> bool:
    from hybrenet_jax.train.checkpoint import load_variables

    variables, _ = load_variables(step_dir.parent.parent, int(step_dir.name)) \
        if step_dir.parent.name == "checkpoints" else load_variables(step_dir.parent.parent,
                                                                     "best")
    return host_tree_is_finite(variables)


def test_the_watch_finds_the_first_non_finite_step():
    watch = DivergenceWatch()
    assert watch.check() is None
    for step, loss in [(1, 1.0), (2, 2.0), (3, float("nan")), (4, 1.0), (5, float("inf"))]:
        watch.observe(jnp.int32(step), {"loss": jnp.float32(loss), "accuracy": jnp.float32(0)})
    assert watch.first_bad_step() == 3
    assert watch.check() == 3


def test_the_watch_checks_a_state_too():
    from hybrenet_jax.train.state import TrainState

    watch = DivergenceWatch()
    watch.observe(jnp.int32(7), {"loss": jnp.float32(1.0)})
    good = TrainState(step=jnp.int32(7), params={"w": jnp.ones(3)}, batch_stats={}, opt_state=())
    bad = good.replace(params={"w": jnp.array([1.0, jnp.inf, 0.0])})
    assert watch.check(good) is None
    assert watch.check(bad) == 7
    assert bool(tree_is_finite({"a": jnp.ones(2), "n": jnp.arange(3)}))
    assert not host_tree_is_finite({"a": np.array([np.nan])})
    assert finite_numbers({"loss": 1.0, "n": 3}) and not finite_numbers({"loss": math.inf})


def test_the_message_says_what_a_rerun_does():
    kept = diverged_message("training", 9, 8, "W/checkpoints")
    assert "step 9" in kept and "resume from step 8" in kept and "W/checkpoints" in kept
    none = diverged_message("training", 2, None, "W/checkpoints")
    assert "no checkpoint was saved yet" in none and "start over" in none


def test_a_diverging_run_saves_no_non_finite_state_and_the_advised_fix_resumes(tmp_path):
    """The issue's reproduction: the loss goes NaN between log steps while checkpoints and
    evals run every 2 steps. Nothing non-finite reaches checkpoints/ or best/, the error names
    the last finite checkpoint, and a rerun at a lower learning rate resumes from it."""
    from hybrenet_jax.train import TrainingError, train_and_evaluate

    train_and_evaluate(tiny_config(total_steps=2, checkpoint_every_steps=2,
                                   eval_every_steps=2), tmp_path)
    with pytest.raises(TrainingError) as err:
        train_and_evaluate(tiny_config(learning_rate=1e12, **HOSTILE), tmp_path)
    message = str(err.value)
    assert "diverged" in message and "resume from step 2" in message
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                   if p.name.isdigit())
    best = sorted(int(p.name) for p in (tmp_path / "best").iterdir() if p.name.isdigit())
    assert saved == [2] and best == [2]
    for step_dir in [*(tmp_path / "checkpoints").iterdir(), *(tmp_path / "best").iterdir()]:
        if step_dir.name.isdigit():
            assert _finite_dir(step_dir)
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-finite {c} in metrics"))
    # the advised fix: a lower learning rate resumes from step 2 and finishes, finite
    summary = train_and_evaluate(tiny_config(learning_rate=0.05, **{**HOSTILE,
                                                                    "total_steps": 6}),
                                 tmp_path)
    assert summary["steps"] == 6 and math.isfinite(summary["test_loss"])
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 6


def test_a_launch_that_diverges_before_any_save_keeps_nothing_and_restarts(tmp_path):
    """Through the CLI: one line, exit 2, no checkpoint and no best; the rerun at the default
    rate starts over (says nothing about resuming) and finishes."""
    run = run_launch(tmp_path / "w", "--config.learning_rate=1e12",
                     "--config.warmup_epochs=0", "--config.total_steps=12",
                     "--config.checkpoint_every_steps=2", "--config.eval_every_steps=2",
                     "--config.log_every_steps=10", "--config.model=hrn-2x2x2x:m=4")
    assert run.returncode == 2, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in run.stderr
    assert lines[-1].startswith("launch.train: error: training diverged") and "start over" \
        in lines[-1]
    assert not [p for p in (tmp_path / "w" / "checkpoints").iterdir() if p.name.isdigit()]
    assert not [p for p in (tmp_path / "w" / "best").iterdir() if p.name.isdigit()]
    again = run_launch(tmp_path / "w", "--config.total_steps=3",
                       "--config.model=hrn-2x2x2x:m=4")
    assert again.returncode == 0, again.stderr
    assert "resumed" not in again.stderr


def test_a_non_finite_checkpoint_of_an_older_run_is_not_restored(tmp_path):
    """A NaN state saved before saves were checked: a resume falls back to the finite one
    before it (and quarantines the other); export's reader never returns it."""
    from hybrenet_jax.train import train_and_evaluate
    from hybrenet_jax.train.checkpoint import Checkpointer, load_variables
    from hybrenet_jax.train.setup import Setup
    from hybrenet_jax.schema import build_config

    config = tiny_config(total_steps=2, checkpoint_every_steps=2)
    good = train_and_evaluate(config, tmp_path)
    checkpointer = Checkpointer(tmp_path, 3, 1, use_async=False)
    typed = build_config(config)
    setup = Setup.create(typed)
    state, _ = checkpointer.restore_latest(_abstract(setup, typed))
    poisoned = state.replace(step=state.step + 2,
                             params=jax.tree.map(lambda x: x * jnp.nan, state.params))
    checkpointer.save(4, poisoned, {"model": typed.model, "dataset": typed.dataset},
                      force=True)
    checkpointer.close()
    variables, meta = load_variables(tmp_path)
    assert meta["step"] == 2 and host_tree_is_finite(variables)
    resumed = train_and_evaluate(tiny_config(total_steps=3, checkpoint_every_steps=2),
                                 tmp_path)
    assert resumed["steps"] == 3 and math.isfinite(resumed["test_loss"])
    assert good["steps"] == 2
    assert [p.name.split("-")[0] for p in (tmp_path / "corrupt").iterdir()] == ["4"]


def _abstract(setup, config):
    from hybrenet_jax.model_string import spec_from_model_string
    from hybrenet_jax.models import build_model, input_shape
    from hybrenet_jax.train.state import (create_state, learning_rate_schedule,
                                          make_optimizer)
    from hybrenet_jax.train.steps import replicated

    spec = spec_from_model_string(config.model, config.dataset)
    model = build_model(spec)
    opt = make_optimizer(learning_rate_schedule(config.learning_rate, 2), config.momentum,
                         config.weight_decay)
    rep = replicated(setup.mesh)
    abstract = jax.eval_shape(lambda: create_state(
        model.init(jax.random.PRNGKey(0), jnp.zeros(input_shape(spec, 1))), opt))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                        abstract)


SNL_SMALL = "hrn-2x2x2x:m=4,depths=1-1-1-1"


def _snl_config(**snl):
    config = tiny_config(model=SNL_SMALL, total_steps=2)
    config.snl.update({"epoch_steps": 1, "mask_learning_rate": 0.2, "lasso": 1e-2,
                       "lasso_patience_epochs": 0, "max_epochs": 6, "finetune_steps": 2,
                       **snl})
    return config


@pytest.mark.parametrize("snl, share, phase", [
    ({"search_learning_rate": 1e12, "mask_learning_rate": 1e12}, 0.0, "SNL mask search"),
    ({"finetune_learning_rate": 1e12}, 0.3, "SNL fine-tuning"),
])
def test_a_diverging_snl_phase_stops_and_records_nothing(tmp_path, snl, share, phase):
    """The issue's case: huge search (or fine-tuning) rates used to exit 0 with "0 ReLUs
    kept", NaN in summary.json and a 10% point in results.jsonl."""
    from hybrenet_jax.model_string import spec_from_model_string
    from hybrenet_jax.snl.errors import SNLError
    from hybrenet_jax.snl.masks import mask_sites, total_relus
    from hybrenet_jax.snl.run import run_snl

    budget = max(1, int(share * total_relus(mask_sites(
        spec_from_model_string(SNL_SMALL, "digits"), "pixel"))))
    with pytest.raises(SNLError, match=f"{phase} diverged: non-finite loss or metrics"):
        run_snl(_snl_config(**snl), SNL_SMALL, budget, tmp_path, log=lambda m: None)
    assert not (tmp_path / "summary.json").exists()
    assert not (tmp_path / "results.jsonl").exists()
    phase_dir = tmp_path / ("search" if "search" in phase else "finetune")
    for step_dir in (phase_dir / "checkpoints").iterdir():
        if step_dir.name.isdigit():
            from hybrenet_jax.train.checkpoint import load_variables
            variables, _ = load_variables(phase_dir, int(step_dir.name))
            assert host_tree_is_finite(variables)
    history = phase_dir / "search.jsonl"
    if history.exists():
        for line in history.read_text().splitlines():
            json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in search.jsonl"))


def test_after_a_divergence_the_rerun_logs_its_own_steps_not_the_diverged_ones(tmp_path):
    """The hostile pass's case: the diverged run had logged steps 1-3 at lr 1e12; the rerun
    at a sane rate starts over and must not keep them (nor skip its own as "logged")."""
    from hybrenet_jax.train import TrainingError, train_and_evaluate

    bad = tiny_config(learning_rate=1e12, **{**HOSTILE, "log_every_steps": 1,
                                             "checkpoint_every_steps": 4})
    with pytest.raises(TrainingError, match="start over"):
        train_and_evaluate(bad, tmp_path / "run")
    logged = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert '"train"' in logged  # the diverged run did log finite steps before it stopped
    good = dict(HOSTILE, total_steps=4, log_every_steps=1, checkpoint_every_steps=4)
    train_and_evaluate(tiny_config(learning_rate=0.05, **good), tmp_path / "run")
    train_and_evaluate(tiny_config(learning_rate=0.05, **good), tmp_path / "fresh")

    def train_lines(workdir):
        return [(r["step"], r["loss"]) for r in map(json.loads, (workdir / "metrics.jsonl")
                                                     .read_text().splitlines())
                if r["split"] == "train"]

    assert train_lines(tmp_path / "run") == train_lines(tmp_path / "fresh")
