"""Integrity of what a run reads back (issue #24, class 2): ``best/`` and every checkpoint
folder are vetted before Orbax opens or ranks them; a damaged one is quarantined with one
warning and the run goes on from what is intact; read-only readers skip it."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import run_launch, tiny_config
from hybrenet_jax.train.checkpoint import (MANIFEST, Checkpointer, CheckpointError,
                                           load_variables, vet_step)

TINY = ("--config.model=hrn-2x2x2x:m=4", "--config.batch_size=32", "--config.eval_every_steps=2",
        "--config.checkpoint_every_steps=2", "--config.checkpoint_keep_best=2",
        "--config.async_checkpointing=false")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 4-step run: checkpoints 2 and 4, best/ holding both evals."""
    from hybrenet_jax.train import train_and_evaluate

    workdir = tmp_path_factory.mktemp("trained")
    train_and_evaluate(tiny_config(total_steps=4, eval_every_steps=2, checkpoint_every_steps=2,
                                   checkpoint_keep_best=2), workdir)
    assert sorted(int(p.name) for p in (workdir / "best").iterdir()) == [2, 4]
    return workdir


@pytest.fixture
def workdir(trained, tmp_path):
    copy = tmp_path / "w"
    shutil.copytree(trained, copy)
    return copy


def _flip_accuracy(path) -> None:
    """``0.1…`` -> ``8.1…``: one changed byte, same size (the hostile pass's case)."""
    text = path.read_text()
    assert '"accuracy": 0.' in text
    path.write_text(text.replace('"accuracy": 0.', '"accuracy": 8.', 1))


@pytest.mark.parametrize("manifest", [True, False])
def test_a_flipped_ranking_metric_in_best_is_quarantined_not_trusted(workdir, manifest,
                                                                     caplog):
    step_dir = workdir / "best" / "2"
    if not manifest:  # killed between the save and its manifest: meta still disagrees
        (step_dir / MANIFEST).unlink()
    _flip_accuracy(step_dir / "metrics" / "metrics")
    assert vet_step(step_dir, ranked=True) is not None
    assert vet_step(workdir / "best" / "4", ranked=True) is None
    with caplog.at_level("WARNING"):
        checkpointer = Checkpointer(workdir, 2, 2, use_async=False)
    assert checkpointer.best.all_steps() == [4]  # the genuine best is kept
    checkpointer.close()
    moved = [p.name for p in (workdir / "corrupt").iterdir()]
    assert len(moved) == 1 and moved[0].startswith("best-2-")
    assert sum("moved unusable checkpoint" in r.message for r in caplog.records) == 1


def test_a_truncated_best_metric_no_longer_breaks_resume_or_export(workdir):
    """Was a 70-line JSONDecodeError from inside Orbax on every resume and export."""
    (workdir / "best" / "4" / "metrics" / "metrics").write_text('{"accur')
    _, meta = load_variables(workdir, "best")  # read-only: skipped, not moved
    assert meta["step"] == 2 and not (workdir / "corrupt").exists()
    run = run_launch(workdir, *TINY, "--config.total_steps=6")
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr and "JSONDecodeError" not in run.stderr
    assert run.stderr.count("moved unusable checkpoint") == 1
    assert [p.name.split("-")[1] for p in (workdir / "corrupt").iterdir()] == ["4"]
    _, meta = load_variables(workdir, "best")
    assert meta["step"] in (2, 4, 6)
    best = sorted(int(p.name) for p in (workdir / "best").iterdir())
    accuracies = [json.loads((workdir / "best" / str(s) / "metrics" / "metrics").read_text())
                  ["accuracy"] for s in best]
    assert len(best) == 2 and all(0.0 <= a <= 1.0 for a in accuracies)


def test_damaged_orbax_metadata_of_a_checkpoint_without_manifest_is_set_aside(workdir):
    step_dir = workdir / "checkpoints" / "4"
    (step_dir / MANIFEST).unlink()
    (step_dir / "_CHECKPOINT_METADATA").write_text("{not json")
    assert "does not read as JSON" in vet_step(step_dir)
    _, meta = load_variables(workdir)
    assert meta["step"] == 2
    checkpointer = Checkpointer(workdir, 2, 2, use_async=False)
    assert checkpointer.latest.all_steps() == [2]
    checkpointer.close()


def test_a_reader_with_nothing_intact_says_so_in_one_line(workdir):
    for step in (2, 4):
        (workdir / "best" / str(step) / "metrics" / "metrics").write_text("")
    with pytest.raises(CheckpointError, match="no intact checkpoint in .*best"):
        load_variables(workdir, "best")


def test_damaged_lines_in_the_middle_of_metrics_are_dropped_and_kept_aside(tmp_path, caplog):
    from hybrenet_jax.train.metrics import MetricWriter

    lines = [json.dumps({"step": s, "split": "train", "loss": 1.0}) for s in (1, 2, 3, 4)]
    lines[1] = lines[1][:10] + "\x00garbage"  # damaged in the middle, newline kept
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n" + '{"step": 5, "spl')
    with caplog.at_level("WARNING"):
        writer = MetricWriter(tmp_path, tensorboard=False)
    assert writer.last_step == {"train": 4}
    kept = [json.loads(ln)["step"] for ln in (tmp_path / "metrics.jsonl").read_text()
            .splitlines()]
    assert kept == [1, 3, 4]
    warnings = [r.message for r in caplog.records if "metrics.jsonl" in r.message]
    assert len(warnings) == 1 and "line 2" in warnings[0]
    aside = list((tmp_path / "corrupt").iterdir())
    assert len(aside) == 1 and "garbage" in aside[0].read_text()
    writer.write(5, "train", {"loss": 0.5})
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 5


@pytest.mark.parametrize("bad", ['{"step": 1e999, "split": "train", "loss": 1.0}',
                                 '{"step": 99999999999, "split": "train", "loss": 1.0}',
                                 '{"step": 2, "split": "eval", "loss": NaN}',
                                 '{"step": 2, "split": "eval", "loss": 1e999}'])
def test_metrics_lines_with_impossible_steps_or_values_are_damaged_lines(tmp_path, caplog, bad):
    """Were a traceback on every resume (1e999), or silently swallowed every later record (a
    huge step), or kept invalid JSON (NaN)."""
    from hybrenet_jax.train.metrics import MetricWriter

    good = [json.dumps({"step": s, "split": "train", "loss": 1.0}) for s in (1, 3)]
    (tmp_path / "metrics.jsonl").write_text("\n".join([good[0], bad, good[1]]) + "\n")
    with caplog.at_level("WARNING"):
        writer = MetricWriter(tmp_path, tensorboard=False)
    assert writer.last_step == {"train": 3}
    assert sum("damaged line" in r.message for r in caplog.records) == 1
    writer.write(4, "train", {"loss": 0.5})
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "metrics.jsonl").read_text()
             .splitlines()]
    assert steps == [1, 3, 4]
