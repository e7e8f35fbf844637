"""Crash-safe workdir records (issue #24, class 4): atomic writes, torn-line repair, damaged
records read as damaged, one writer per pipeline/SNL workdir, a lock file removed under its
holder noticed. Everything here is fast: fake training, no compile but tiny ones."""

from __future__ import annotations

import errno
import json
import logging
import os
import pathlib

import numpy as np
import pytest

from conftest import ROOT, FakeTrainer, install_trainer, tiny_config
from hybrenet_jax.cli import main
from hybrenet_jax.train import rundir, storage
from hybrenet_jax.train.rundir import (JsonLinesLog, RecordError, ResultsLog, TrainingError,
                                       read_json, write_atomically, write_json)
from hybrenet_jax.train.workdir_lock import (LOCK_FILE, LockLostError, WorkdirBusyError,
                                             WorkdirLock)

DIGITS_CONFIG = str(ROOT / "configs" / "pipeline_digits.py")
SNL_CONFIG = str(ROOT / "configs" / "snl_digits.py")
SMALL = "hrn-2x2x2x:m=4,depths=1-1-1-1"


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _deepreshape_argv(workdir: pathlib.Path, *extra: str) -> list[str]:
    return ["deepreshape", "--config", DIGITS_CONFIG, "--depths", "1-1-1-1", "--m", "4",
            "--networks", "alpha2", "--top", "1", "--reuse", "4", "--workdir", str(workdir),
            *extra]


@pytest.fixture
def fake(monkeypatch):
    def install(**kw):
        trainer = FakeTrainer(**kw)
        trainer.accuracy = lambda config: 0.5 + 0.01 * len(trainer.calls)
        return install_trainer(monkeypatch, trainer)
    return install


def _leftovers(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


# -- JSON-lines logs ----------------------------------------------------------------------------
def test_a_torn_results_tail_is_cut_before_the_next_append(tmp_path, caplog):
    path = tmp_path / "results.jsonl"
    path.write_text('{"model": "a"}\n{"model": "b"}\n{"model": "c", "acc')  # killed mid-line
    log = ResultsLog(path)
    assert [r["model"] for r in log.records()] == ["a", "b"]
    log.append({"model": "c", "accuracy": 1.0})
    lines = path.read_text().splitlines()
    assert [json.loads(line)["model"] for line in lines] == ["a", "b", "c"]
    assert path.read_text().endswith("\n")
    torn = [w for w in _warnings(caplog) if "torn last line" in w]
    assert len(torn) == 1 and str(path) in torn[0]  # one warning for the read and the cut


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path, caplog):
    path = tmp_path / "results.jsonl"
    path.write_text('{"model": "a"}\n{"model": "b"}')
    log = ResultsLog(path)
    assert [r["model"] for r in log.records()] == ["a", "b"]
    log.append({"model": "c"})
    assert [json.loads(x)["model"] for x in path.read_text().splitlines()] == ["a", "b", "c"]
    assert _warnings(caplog) == []


def test_a_damaged_middle_line_is_warned_with_its_number_and_kept(tmp_path, caplog):
    path = tmp_path / "results.jsonl"
    path.write_text('{"model": "a"}\n{"model": \n[1, 2]\n{"model": "d"}\n')
    log = ResultsLog(path)
    assert [r["model"] for r in log.records()] == ["a", "d"]
    assert [r["model"] for r in log.records()] == ["a", "d"]  # read again: no new warning
    warned = _warnings(caplog)
    assert len(warned) == 2
    assert f"{path}:2: damaged line" in warned[0] and f"{path}:3: damaged line" in warned[1]
    log.append({"model": "e"})
    assert path.read_text().splitlines()[1] == '{"model": '  # nothing lost


def test_json_records_refuse_nan_and_infinity(tmp_path):
    log = ResultsLog(tmp_path / "results.jsonl")
    log.append({"model": "a", "accuracy": 1.0})
    before = log.path.read_bytes()
    with pytest.raises(RecordError, match=r"accuracy is not a finite number"):
        log.append({"model": "b", "accuracy": float("nan")})
    assert log.path.read_bytes() == before
    target = tmp_path / "plan.json"
    target.write_text('{"old": true}\n')
    with pytest.raises(RecordError, match=r"stages\[1\]\.criticality is not a finite"):
        write_json(target, {"stages": [{"criticality": 1.0}, {"criticality": float("inf")}]})
    assert json.loads(target.read_text()) == {"old": True}
    with pytest.raises(RecordError, match="test_loss"):
        rundir.write_summary(tmp_path, {"test_accuracy": 0.5, "test_loss": float("-inf")})
    assert not (tmp_path / "summary.json").exists()


# -- atomic writes --------------------------------------------------------------------------------
def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _write_plan(path):
    from hybrenet_jax.pipeline import runner

    runner.write_plan(runner.PipelineOptions(workdir=path.parent, distill="none"), {"x": 2})


def _write_results_md(path):
    from hybrenet_jax.pipeline import runner

    runner.write_results_markdown(ResultsLog(path.parent / "results.jsonl"), path)


def _write_masks(path):
    from hybrenet_jax.snl.masks import save_masks

    save_masks(path, {"site": np.ones((2, 2))})


@pytest.mark.parametrize("name, write", [
    ("summary.json", lambda p: rundir.write_summary(p.parent, {"test_accuracy": 0.1})),
    ("plan.json", _write_plan),
    ("results.md", _write_results_md),
    ("masks.npz", _write_masks),
    ("notes.md", lambda p: write_atomically(p, "new text")),
])
def test_a_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch, name, write):
    path = tmp_path / name
    path.write_bytes(b"OLD CONTENT")
    monkeypatch.setattr(storage.os, "fsync", _enospc)  # the disk fills during the write
    with pytest.raises(TrainingError, match=r"disk is full \(ENOSPC\).*rerun"):
        write(path)
    assert path.read_bytes() == b"OLD CONTENT"
    assert _leftovers(tmp_path) == []  # the temporary file is removed


def test_report_files_are_written_atomically(tmp_path, monkeypatch):
    from hybrenet_jax.report import build_report
    from hybrenet_jax.report.points import ReportError

    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps({"model": SMALL, "dataset": "digits", "relus": 1000,
                                   "flops": 10 ** 6, "accuracy": 90.0, "distill": "kd"}) + "\n")
    out = tmp_path / "report"
    out.mkdir()
    (out / "pareto.md").write_text("OLD REPORT")
    monkeypatch.setattr(storage.os, "fsync", _enospc)
    with pytest.raises(ReportError, match="pareto.md: No space left"):
        build_report([results], out, use_published=False)
    assert (out / "pareto.md").read_text() == "OLD REPORT" and _leftovers(out) == []
    monkeypatch.undo()
    report = build_report([results], out, use_published=False)
    assert (out / "pareto.md").read_text() != "OLD REPORT"
    assert all(p.is_file() and p.stat().st_size > 0 for p in report.files)
    assert _leftovers(out) == []


def test_a_damaged_masks_file_is_one_line(tmp_path):
    from hybrenet_jax.snl.errors import SNLError
    from hybrenet_jax.snl.masks import load_masks

    (tmp_path / "masks.npz").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(SNLError, match="masks.npz is damaged .*delete it and rerun"):
        load_masks(tmp_path / "masks.npz")


# -- damaged criticality.json -----------------------------------------------------------------
@pytest.mark.parametrize("content", ["", '{"model": "hrn', '{"model": "x"}', "[1]",
                                     '{"model": "m", "dataset": "d", "distill": "none", '
                                     '"order": ["S9"], "stages": []}'])
def test_a_damaged_criticality_result_is_read_as_damaged(tmp_path, caplog, capsys, content):
    from hybrenet_jax.pipeline.criticality import load_result

    crit = tmp_path / "criticality"
    crit.mkdir()
    (crit / "criticality.json").write_text(content)
    assert load_result(crit) is None
    assert len([w for w in _warnings(caplog) if "criticality.json is damaged" in w]) == 1
    assert (crit / "criticality.json").read_text() == content  # a reader changes nothing
    argv = _deepreshape_argv(tmp_path, "--measure-order", "--dry-run")
    assert main(argv) == 0  # was a JSONDecodeError traceback
    out = capsys.readouterr().out
    assert "criticality" in out and "once the criticality order is measured" in out


def test_a_damaged_criticality_result_is_set_aside_and_measured_again(tmp_path, fake, caplog):
    from hybrenet_jax.pipeline.criticality import load_result, measure_criticality

    fake()
    crit = tmp_path / "crit"
    crit.mkdir()
    (crit / "criticality.json").write_text("")  # a full disk emptied it
    result = measure_criticality(tiny_config(), SMALL, crit, log=lambda m: None)
    assert load_result(crit).order == result.order
    assert (crit / "criticality.json.damaged").read_text() == ""  # kept for inspection
    assert any("moved to criticality.json.damaged" in w for w in _warnings(caplog))
    assert (crit / "criticality.md").read_text().startswith("# ReLU criticality")


# -- the example: a torn results.jsonl and a rerun --------------------------------------
def test_a_rerun_after_a_torn_results_line_records_every_variant_once(tmp_path, fake, capsys,
                                                                       caplog):
    argv = _deepreshape_argv(tmp_path, "--order", "S3,S2,S4,S1", "--json")
    fake()
    assert main(argv) == 0
    results = tmp_path / "results.jsonl"
    lines = results.read_text().splitlines()
    models = [json.loads(line)["model"] for line in lines]
    capsys.readouterr()
    results.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:25])  # killed mid-append
    again = fake()
    assert main(argv) == 0
    assert len(again.calls) == 0  # the torn model's run is finished: recorded, not retrained
    recorded = [json.loads(line)["model"] for line in results.read_text().splitlines()]
    assert sorted(recorded) == sorted(models) and len(set(recorded)) == len(recorded)
    printed = [json.loads(line)["model"] for line in capsys.readouterr().out.splitlines()]
    assert sorted(printed) == sorted(models[1:])  # the variants, teacher excluded
    table = (tmp_path / "results.md").read_text()
    assert sum(line.startswith("| variant |") for line in table.splitlines()) == len(printed)
    assert len([w for w in _warnings(caplog) if "torn last line" in w]) == 1


# -- search.jsonl after a resume ----------------------------------------------------------------
def test_retain_drops_the_epochs_a_resume_redoes(tmp_path):
    log = JsonLinesLog(tmp_path / "search.jsonl")
    for epoch in range(6):
        log.append({"epoch": epoch, "relus": 100 - epoch})
    before = log.path.read_bytes()
    assert log.retain(lambda r: r["epoch"] < 6) == 0 and log.path.read_bytes() == before
    assert log.retain(lambda r: r["epoch"] < 4, "resume at 4") == 2
    assert [r["epoch"] for r in log.records()] == [0, 1, 2, 3]
    log.append({"epoch": 4})
    assert [r["epoch"] for r in log.records()] == [0, 1, 2, 3, 4]


class _FakeSearchSetup:
    """What ``search_masks`` uses of a Setup, without data or compiling a network: the
    real restore, a 1-device mesh, and a batch stream of Nones."""

    steps_per_epoch = 2  # with epoch_steps=1: a checkpoint every second search epoch
    dtype = np.float32

    def __init__(self):
        from hybrenet_jax.train.setup import make_mesh

        self.mesh = make_mesh()

    def restore(self, checkpointer, init_fn):
        from hybrenet_jax.train.setup import Setup

        return Setup.restore(self, checkpointer, init_fn)

    def feed(self, first, last):
        return (None for _ in range(first, last))


def test_search_history_holds_each_epoch_once_after_a_kill_and_resume(tmp_path, monkeypatch):
    import jax.numpy as jnp

    from hybrenet_jax.model_string import spec_from_model_string
    from hybrenet_jax.schema import build_config
    from hybrenet_jax.snl import search

    def fake_step_maker(*args, **kwargs):
        def step(state, batch, teacher_vars, lam):  # every mask shrinks a little
            params = {k: {"mask": v["mask"] * 0.95} if "mask" in v else v
                      for k, v in state.params.items()}
            return state.replace(step=state.step + 1, params=params), {"loss": jnp.float32(1)}
        return step

    class Killed(Exception):
        pass

    appended = []

    class KilledAfterSix(search.JsonLinesLog):
        def append(self, record):
            super().append(record)
            appended.append(record["epoch"])
            if len(appended) == 6:  # epoch 5 logged; the last checkpoint is of epoch 4
                raise Killed()

    monkeypatch.setattr(search, "make_search_step", fake_step_maker)
    config = tiny_config(model=SMALL)
    config.snl.update({"epoch_steps": 1, "max_epochs": 9, "lasso_patience_epochs": 0})
    settings = build_config(config).snl
    spec = spec_from_model_string(SMALL, "digits")
    directory = tmp_path / "search"
    args = (_FakeSearchSetup(), settings, spec, {}, {}, None, 1, directory, lambda m: None)
    monkeypatch.setattr(search, "JsonLinesLog", KilledAfterSix)
    with pytest.raises(Killed):
        search.search_masks(*args)
    monkeypatch.setattr(search, "JsonLinesLog", rundir.JsonLinesLog)
    outcome = search.search_masks(*args)
    epochs = [json.loads(line)["epoch"]
              for line in (directory / "search.jsonl").read_text().splitlines()]
    assert epochs == list(range(9)) == list(range(outcome.epochs))  # 4 and 5 not twice


# -- one writer per workdir ---------------------------------------------------------------------
def _one_line(err: str, fragment: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], err


def test_a_second_snl_on_a_locked_workdir_is_refused(tmp_path, capsys):
    workdir = tmp_path / "snl"
    argv = ["snl", "--config", SNL_CONFIG, SMALL, "--budget", "5000", "--workdir",
            str(workdir)]
    workdir.mkdir()
    with WorkdirLock(workdir):  # the first `hybrenet snl`, still running
        assert main(argv) == 2
        _one_line(capsys.readouterr().err, f"is in use by another run (pid {os.getpid()}")
        assert sorted(p.name for p in workdir.iterdir()) == [LOCK_FILE]  # nothing written


def test_snl_holds_its_lock_for_the_whole_run(tmp_path, monkeypatch):
    from hybrenet_jax.snl import run as snl_run

    workdir = tmp_path / "snl"
    seen = {}

    def body(config, model, budget, wd, *args):
        with pytest.raises(WorkdirBusyError, match="in use by another run"):
            WorkdirLock(wd).acquire()  # a second `hybrenet snl` while this one runs
        seen["refused"] = True
        return {"done": True}

    monkeypatch.setattr(snl_run, "_run_snl", body)
    config = tiny_config(model=SMALL)
    assert snl_run.run_snl(config, SMALL, 5000, workdir, log=lambda m: None) == {"done": True}
    assert seen == {"refused": True}
    with WorkdirLock(workdir):  # released afterwards
        pass


def test_pipelines_hold_their_lock_and_nested_runs_theirs(tmp_path, fake, capsys):
    checked = []

    def during(run_dir):  # a nested training run: top workdir busy, its own folder free
        with pytest.raises(WorkdirBusyError):
            WorkdirLock(tmp_path).acquire()
        if run_dir.parent.name == "criticality":
            with pytest.raises(WorkdirBusyError):
                WorkdirLock(run_dir.parent).acquire()
        run_dir.mkdir(parents=True, exist_ok=True)
        with WorkdirLock(run_dir):  # what train_and_evaluate takes: no collision
            checked.append(run_dir)

    fake(during=during)
    assert main(_deepreshape_argv(tmp_path, "--measure-order")) == 0
    assert len(checked) >= 6 and any(p.parent.name == "criticality" for p in checked)
    capsys.readouterr()
    with WorkdirLock(tmp_path):
        assert main(_deepreshape_argv(tmp_path, "--measure-order")) == 2
        _one_line(capsys.readouterr().err, "is in use by another run")


def test_the_criticality_verb_is_refused_on_a_locked_workdir(tmp_path, fake, capsys):
    trainer = fake()
    with WorkdirLock(tmp_path):
        argv = ["criticality", "--config", DIGITS_CONFIG, SMALL, "--no-teacher",
                "--workdir", str(tmp_path)]
        assert main(argv) == 2
        err = capsys.readouterr().err
    assert "is in use by another run" in err and err.count("error:") == 1
    assert trainer.calls == []


# -- a lock file removed or replaced under its holder --------------------------------------------
@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_lock_file_removed_under_its_holder_is_noticed(tmp_path, how):
    lock = WorkdirLock(tmp_path)
    lock.acquire()
    try:
        lock.check()  # intact: nothing raised
        write_json(tmp_path / "plan.json", {"ok": 1})
        path = tmp_path / LOCK_FILE
        if how == "deleted":
            path.unlink()  # the usual "stale lock" fix
        else:
            (tmp_path / "other").write_text("{}")
            os.replace(tmp_path / "other", path)
        with pytest.raises(LockLostError, match="was removed or replaced while this run "
                                                "held it; another run may be writing"):
            lock.check()
        with pytest.raises(LockLostError):  # every record write checks it first
            write_json(tmp_path / "plan.json", {"ok": 2})
        with pytest.raises(LockLostError):
            ResultsLog(tmp_path / "results.jsonl").append({"model": "x"})
        assert json.loads((tmp_path / "plan.json").read_text()) == {"ok": 1}
        assert not (tmp_path / "results.jsonl").exists()
        second = WorkdirLock(tmp_path)  # the limit: a second run gets a fresh lock file
        second.acquire()
        second.check()
        second.release()
    finally:
        lock.release()


def test_read_json_of_missing_and_good_files(tmp_path):
    assert read_json(tmp_path / "none.json") is None
    write_json(tmp_path / "good.json", {"a": [1, 2]})
    assert read_json(tmp_path / "good.json") == {"a": [1, 2]}


def test_training_stops_before_its_next_save_when_run_lock_is_removed(tmp_path, monkeypatch):
    """The usual "stale lock" fix applied to a running training: it stops before writing
    another checkpoint, with the one line, and what it saved before is intact."""
    from conftest import tiny_config
    from hybrenet_jax.train import train_and_evaluate
    from hybrenet_jax.train.checkpoint import Checkpointer, load_variables
    from hybrenet_jax.train.workdir_lock import LockLostError

    original = Checkpointer.save_best

    def save_best_then_lose_the_lock(self, step, *args, **kwargs):
        original(self, step, *args, **kwargs)
        if step == 4:
            (tmp_path / "run.lock").unlink()

    monkeypatch.setattr(Checkpointer, "save_best", save_best_then_lose_the_lock)
    with pytest.raises(LockLostError, match="was removed or replaced while this run held it"):
        train_and_evaluate(tiny_config(total_steps=8, eval_every_steps=2,
                                       checkpoint_every_steps=2), tmp_path)
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                   if p.name.isdigit())
    assert saved == [2]  # step 4's periodic save was not written
    _, meta = load_variables(tmp_path)
    assert meta["step"] == 2


@pytest.mark.parametrize("value", ["1e999", "NaN", "-5"])
def test_a_criticality_result_with_impossible_numbers_is_damaged(tmp_path, caplog, value):
    """Was an OverflowError traceback (1e999) even with --dry-run, or trusted (NaN, -5)."""
    from hybrenet_jax.pipeline.criticality import load_result

    stages = [{"model": f"m{k}", "relus": 1000, "accuracy": 50.0 + k, "criticality": 0.1 * k}
              for k in range(4)]
    record = {"model": "m", "dataset": "digits", "distill": "none",
              "order": ["S3", "S2", "S4", "S1"], "stages": stages}
    text = json.dumps(record).replace('"accuracy": 51.0', f'"accuracy": {value}', 1)
    (tmp_path / "criticality.json").write_text(text)
    with caplog.at_level("WARNING"):
        assert load_result(tmp_path) is None
    assert any("damaged" in m for m in _warnings(caplog))
    (tmp_path / "criticality.json").write_text(json.dumps(record))
    assert load_result(tmp_path).order == (3, 2, 4, 1)


def test_record_lines_with_non_finite_numbers_are_damaged_lines(tmp_path, caplog):
    log = rundir.JsonLinesLog(tmp_path / "search.jsonl")
    (tmp_path / "search.jsonl").write_text('{"epoch": 0, "loss": 1.0}\n{"epoch": 1, "loss": '
                                           'NaN}\n{"epoch": 2, "loss": 1e999}\n')
    with caplog.at_level("WARNING"):
        assert log.records() == [{"epoch": 0, "loss": 1.0}]
    assert sum("damaged line" in m for m in _warnings(caplog)) == 2
