"""End-to-end training on the embedded digits: files written, resume, teachers, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import sgd_step_setup, tiny_config
from hybrenet_jax import data as data_lib
from hybrenet_jax.errors import VariablesMismatchError
from hybrenet_jax.model_string import spec_from_model_string
from hybrenet_jax.train import TrainingError, train_and_evaluate
from hybrenet_jax.train.checkpoint import CheckpointError, load_variables


def test_short_run_writes_checkpoints_metrics_and_summary(tmp_path):
    summary = train_and_evaluate(tiny_config(total_steps=3), tmp_path)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    for key in ("test_accuracy", "relus", "flops", "steps", "train_images_per_second",
                "wall_seconds", "params_digest"):
        assert key in summary
    assert summary["steps"] == 3 and 0.0 <= summary["test_accuracy"] <= 1.0
    assert summary["relus"] == 5 * 4096 + 8192 + 4096 + 2048  # hrn-2x2x2x:m=4 on 32x32
    assert len(summary["params_digest"]) == 64
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {l["split"] for l in lines} == {"train", "eval"}
    assert all(np.isfinite(l["loss"]) for l in lines)
    assert (tmp_path / "checkpoints" / "3").is_dir() and (tmp_path / "best").is_dir()
    variables, meta = load_variables(tmp_path)
    assert meta["step"] == 3 and meta["model"] == "hrn-2x2x2x:m=4"
    assert "stem_conv" in variables["params"]


def test_finished_run_resumes_without_training_again(tmp_path):
    first = train_and_evaluate(tiny_config(total_steps=2), tmp_path)
    again = train_and_evaluate(tiny_config(total_steps=2), tmp_path)
    assert again["params_digest"] == first["params_digest"] and again["steps"] == 2


def test_resume_in_process_is_bit_identical(tmp_path):
    full = train_and_evaluate(tiny_config(total_steps=6), tmp_path / "full")
    train_and_evaluate(tiny_config(total_steps=4), tmp_path / "split")
    resumed = train_and_evaluate(tiny_config(total_steps=6), tmp_path / "split")
    assert resumed["params_digest"] == full["params_digest"]


def test_train_step_compiles_once():
    config = tiny_config()
    mesh, state, step = sgd_step_setup(spec_from_model_string(config.model, "digits"))
    train = data_lib.load_dataset("digits", "train")
    batches = data_lib.train_batches(train, 32, seed=0, epoch=0)
    losses = []
    for _, batch in zip(range(3), batches):
        state, metrics = step(state, data_lib.shard_batch(batch, mesh))
        losses.append(float(metrics["loss"]))
    assert step.traces == 1
    assert int(state.step) == 3 and all(np.isfinite(losses))


def test_kd_run_uses_the_teacher_checkpoint(tmp_path):
    train_and_evaluate(tiny_config(total_steps=2), tmp_path / "teacher")
    # 2 steps + the DKD warm-up (0.05 of an epoch of 44 steps: 2 steps) trained on top
    config = tiny_config(total_steps=2, **{"distill.kind": "dkd",
                                           "distill.teacher_workdir": str(tmp_path / "teacher"),
                                           "distill.dkd_warmup_epochs": 0.05,
                                           "model": "hrn-2x2x2x:m=4,cull=S1"})
    summary = train_and_evaluate(config, tmp_path / "student")
    assert summary["distill"] == "dkd" and summary["steps"] == 4


def test_teacher_of_the_wrong_architecture_is_rejected(tmp_path):
    train_and_evaluate(tiny_config(total_steps=1), tmp_path / "teacher")
    config = tiny_config(**{"distill.kind": "kd",
                            "distill.teacher_workdir": str(tmp_path / "teacher"),
                            "distill.teacher_model": "hrn-2x2x2x:m=8"})
    with pytest.raises(VariablesMismatchError, match="do not fit model 'hrn-2x2x2x:m=8'"):
        train_and_evaluate(config, tmp_path / "student")


@pytest.mark.parametrize("overrides,fragment", [
    ({"distill.kind": "kd"}, "needs distill.teacher_workdir"),
    ({"distill.kind": "hinton"}, "accepted: none, kd, dkd"),
    ({"dtype": "float16"}, "accepted: float32, bfloat16"),
    ({"batch_size": 4096}, "exceeds the 1438 training examples"),
    ({"model": "resnet18:classes=100"}, "has 100 classes but digits has 10"),
    ({"total_steps": 0, "num_epochs": 0}, "nothing to train"),
])
def test_bad_configs_give_clear_errors(tmp_path, overrides, fragment):
    with pytest.raises(Exception) as err:
        train_and_evaluate(tiny_config(**overrides), tmp_path)
    assert fragment in str(err.value)


def test_unwritable_workdir_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TrainingError, match="is not writable"):
        train_and_evaluate(tiny_config(), blocker / "run")


def test_workdir_of_another_model_is_not_reused(tmp_path):
    train_and_evaluate(tiny_config(total_steps=1), tmp_path)
    with pytest.raises(CheckpointError, match="use another workdir"):
        train_and_evaluate(tiny_config(total_steps=2, model="hrn-2x2x2x:m=4,cull=S1"), tmp_path)


@pytest.mark.slow
def test_kd_student_matches_or_beats_the_student_without_kd(tmp_path):
    """Digits is nearly saturated, so "matches" allows one percentage point of noise."""
    teacher = train_and_evaluate(tiny_config(model="hrn-2x2x2x:m=8", total_steps=0,
                                             num_epochs=6, batch_size=64,
                                             eval_every_steps=10_000), tmp_path / "teacher")
    assert teacher["test_accuracy"] >= 0.97
    acc = {}
    for kind in ("none", "kd"):
        config = tiny_config(model="hrn-2x2x2x:m=4,cull=S1+S2", total_steps=0, num_epochs=4,
                             batch_size=64, eval_every_steps=10_000,
                             **{"distill.kind": kind,
                                "distill.teacher_workdir": str(tmp_path / "teacher")})
        acc[kind] = train_and_evaluate(config, tmp_path / kind)["test_accuracy"]
    assert acc["kd"] >= acc["none"] - 0.01, acc


def test_train_once_reuses_only_a_finished_run_of_the_same_model_and_distillation(
        tmp_path, monkeypatch):
    from hybrenet_jax.train import loop
    from hybrenet_jax.train.rundir import TrainingError

    def no_training(config, workdir):
        raise AssertionError("a finished run must not be trained again")

    monkeypatch.setattr(loop, "train_and_evaluate", no_training)
    finished = {"model": "hrn-2x2x2x:m=4", "distill": "none", "test_accuracy": 0.5}
    (tmp_path / "summary.json").write_text(json.dumps(finished))
    assert loop.train_once(tiny_config(), tmp_path, lambda line: None) == finished
    with pytest.raises(TrainingError, match="finished run of 'hrn-2x2x2x:m=4', not "
                                            "'hrn-2x2x2x:m=4,thin=S2'"):
        loop.train_once(tiny_config(model="hrn-2x2x2x:m=4,thin=S2"), tmp_path, print)
    with pytest.raises(TrainingError, match="trained with distill=none, not kd"):
        loop.train_once(tiny_config(**{"distill.kind": "kd", "distill.teacher_workdir": "T"}),
                        tmp_path, print)
