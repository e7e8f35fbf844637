"""Population training (issue #25): several runs in one jitted step, one teacher pass.

Each member is the computation of its single run (its own step body, unrolled in one
program), so the tests require *bit-identical* results to the same runs trained alone — a
stronger check than a float tolerance; members are ordinary workdirs; a diverged member stops
alone; a killed population resumes bit-identically.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, tiny_config
from hybrenet_jax.train import TrainingError, train_and_evaluate
from hybrenet_jax.train.checkpoint import load_variables
from hybrenet_jax.train.divergence import host_tree_is_finite
from hybrenet_jax.train.loop import train_population

STEPS = dict(total_steps=4, eval_every_steps=2, checkpoint_every_steps=2)
#: culled and thinned variants of one base, another seed sharing the data order, another rate
VARIANTS = [dict(), dict(model="hrn-2x2x2x:m=4,cull=S1"),
            dict(model="hrn-2x2x2x:m=4,thin=S2+S3+S4", eval_every_steps=1),
            dict(seed=3, data_seed=0, learning_rate=0.2)]
SINGLE_RUN_FILES = {"best", "checkpoints", "config.json", "metrics.jsonl", "run.lock",
                    "run_identity.json", "summary.json"}


def _config(variant: dict):
    return tiny_config(**{"log_every_steps": 1, **STEPS, **variant})


def _train_losses(workdir) -> list[float]:
    return [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text()
            .splitlines() if json.loads(line)["split"] == "train"]


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """Each variant trained on its own (the reference)."""
    root = tmp_path_factory.mktemp("alone")
    return [train_and_evaluate(_config(v), root / f"a{i}") for i, v in enumerate(VARIANTS)], root


def test_packed_members_are_bit_identical_to_their_single_runs(alone, tmp_path):
    references, root = alone
    results = train_population([(_config(v), tmp_path / f"m{i}")
                                for i, v in enumerate(VARIANTS)])
    for i, (packed, single) in enumerate(zip(results, references)):
        assert packed["params_digest"] == single["params_digest"], VARIANTS[i]
        assert packed["test_accuracy"] == single["test_accuracy"]
        assert _train_losses(tmp_path / f"m{i}") == _train_losses(root / f"a{i}")
        assert packed["population"] == 4 and "population" not in single  # the record says so
        assert SINGLE_RUN_FILES <= {p.name for p in (tmp_path / f"m{i}").iterdir()}
        evals = [json.loads(line)["step"] for line in (tmp_path / f"m{i}" / "metrics.jsonl")
                 .read_text().splitlines() if json.loads(line)["split"] == "eval"]
        assert evals == ([1, 2, 3, 4] if i == 2 else [2, 4])  # each member's own cadence
    # a member is an ordinary run: a single run extends it, reading its checkpoints
    longer = train_and_evaluate(tiny_config(log_every_steps=1, **{**STEPS, "total_steps": 6},
                                            **VARIANTS[1]), tmp_path / "m1")
    assert longer["steps"] == 6 and "population" not in longer


def test_a_population_with_a_teacher_runs_it_once_per_step_and_matches(tmp_path, monkeypatch):
    from hybrenet_jax.train import steps as steps_lib

    teacher = tmp_path / "teacher"
    train_and_evaluate(tiny_config(total_steps=2), teacher)
    kd = [dict(kd_weight=0.9, temperature=4.0), dict(kd_weight=0.5, temperature=2.0)]

    def config(weights):
        return tiny_config(**STEPS, **{"distill.kind": "kd",
                                       "distill.teacher_workdir": str(teacher),
                                       **{f"distill.{k}": v for k, v in weights.items()}})

    passes = []
    original = steps_lib.teacher_logits

    def counted(teacher_, variables, images):
        passes.append(teacher_ is not None)
        return original(teacher_, variables, images)

    monkeypatch.setattr(steps_lib, "teacher_logits", counted)
    packed = train_population([(config(w), tmp_path / f"kd{i}") for i, w in enumerate(kd)])
    assert passes == [True]  # one teacher forward in the traced population step
    monkeypatch.setattr(steps_lib, "teacher_logits", original)
    for i, w in enumerate(kd):
        single = train_and_evaluate(config(w), tmp_path / f"single{i}")
        assert packed[i]["params_digest"] == single["params_digest"]


def test_a_diverged_member_stops_alone_and_the_others_finish(alone, tmp_path):
    references, _ = alone
    results = train_population([
        (tiny_config(**STEPS), tmp_path / "good"),
        (tiny_config(**STEPS, learning_rate=1e12, warmup_epochs=0.0), tmp_path / "bad")])
    assert results[0]["params_digest"] == references[0]["params_digest"]
    assert isinstance(results[1], TrainingError) and "diverged" in str(results[1])
    assert not (tmp_path / "bad" / "summary.json").exists()
    for step_dir in (tmp_path / "bad" / "checkpoints").iterdir():
        if step_dir.name.isdigit():
            variables, _ = load_variables(tmp_path / "bad", int(step_dir.name))
            assert host_tree_is_finite(variables)


def test_members_that_cannot_share_a_stream_are_refused_in_one_line(tmp_path):
    with pytest.raises(TrainingError, match="differ in batch_size .*32.*64"):
        train_population([(tiny_config(**STEPS), tmp_path / "a"),
                          (tiny_config(**STEPS, batch_size=64), tmp_path / "b")])
    with pytest.raises(TrainingError, match="data order"):
        train_population([(tiny_config(**STEPS), tmp_path / "a"),
                          (tiny_config(**STEPS, seed=1), tmp_path / "b")])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _seeds_cmd(workdir, steps: int):
    return [sys.executable, "-m", "launch.train", "--config", str(ROOT / "configs/default.py"),
            f"--workdir={workdir}", "--seeds=2", "--config.model=hrn-2x2x2x:m=4",
            "--config.batch_size=32", f"--config.total_steps={steps}",
            "--config.checkpoint_every_steps=2", "--config.eval_every_steps=4",
            "--config.progress=false", "--config.tensorboard=false",
            "--config.async_checkpointing=false"]


def _digests(workdir) -> list[str]:
    return [json.loads((workdir / f"seed_{s}" / "summary.json").read_text())["params_digest"]
            for s in (0, 1)]


@pytest.mark.slow
def test_seeds_cli_killed_and_resumed_equals_uninterrupted(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    straight = subprocess.run(_seeds_cmd(tmp_path / "straight", 12), env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-2000:]
    assert "± " in straight.stdout and "over 2 seeds" in straight.stdout
    record = json.loads((tmp_path / "straight" / "seeds.json").read_text())
    assert record["seeds"] == [0, 1] and record["data_seed"] == 0
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_seeds_cmd(killed, 12), env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        saved = killed / "seed_1" / "checkpoints"
        if saved.is_dir() and any(p.name.isdigit() for p in saved.iterdir()):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = subprocess.run(_seeds_cmd(killed, 12), env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _digests(killed) == _digests(tmp_path / "straight")
