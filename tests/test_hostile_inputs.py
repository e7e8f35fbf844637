"""Hostile use of ``launch.train`` (issue 16): bad fields, two writers, another run's workdir,
Ctrl-C, a kill between the best and the periodic save.

Config errors must come before anything is built: those runs take seconds, leave no workdir
behind and print one line.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_launch, tiny_config
from hybrenet_jax.train.config_rules import RULES, ConfigError, Float, Int, validate_config

TINY = ["--config.model=hrn-2x2x2x:m=4", "--config.batch_size=32"]


def _one_line_error(proc, fragment):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("launch.train: error:") and fragment in lines[0], lines[0]


def _snapshot(directory):
    """Every path under ``directory`` with its size and mtime (to prove nothing changed), but
    the lock file, which records its latest holder."""
    from hybrenet_jax.train.workdir_lock import LOCK_FILE

    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.name != LOCK_FILE}


# -- every field is checked first ----------------------------------------------------------
@pytest.mark.parametrize("flag,fragment", [
    ("--config.mesh_model_axis=0", "mesh_model_axis=0: must be >= 1"),
    ("--config.mesh_model_axis=7", "mesh_model_axis=7 must divide the"),
    ("--config.optimizer=adamw", "optimizer='adamw': accepted: sgd, adam"),
    ("--config.lr_schedule=linear", "lr_schedule='linear': accepted: cosine, constant"),
    ("--config.checkpoint_keep=-1", "checkpoint_keep=-1: must be >= 1"),
    ("--config.checkpoint_keep=0", "checkpoint_keep=0: must be >= 1"),
    ("--config.prefetch=-1", "prefetch=-1: must be >= 1"),
    ("--config.label_smoothing=5", "label_smoothing=5.0: must be in [0.0, 1.0]"),
    ("--config.warmup_epochs=-1", "warmup_epochs=-1.0: must be >= 0.0"),
    ("--config.learning_rate=nan", "learning_rate=nan: must be a finite number"),
    ("--config.learning_rate=inf", "learning_rate=inf: must be a finite number"),
    ("--config.distill.temperature=0", "distill.temperature=0.0: must be > 0.0"),
    ("--config.data_workers=-2", "data_workers=-2: must be >= 0 (0: automatic)"),
    ("--config.dataset=mnist", "dataset='mnist': accepted: digits, cifar100"),
    ("--config.seed=-1", "seed=-1: must be in [0, 4294967295]"),
    ("--config.distill.teacher_checkpoint=first", "accepted: best, latest"),
])
def test_bad_field_is_one_line_exit_2_before_anything_is_built(tmp_path, flag, fragment):
    workdir = tmp_path / "run"
    start = time.monotonic()
    proc = run_launch(workdir, *TINY, flag, timeout=120)
    _one_line_error(proc, fragment)
    assert not workdir.exists()  # refused before the workdir was made (so before compiling)
    assert time.monotonic() - start < 60


def test_every_bad_field_is_named_in_the_one_line(tmp_path):
    proc = run_launch(tmp_path / "run", "--config.optimizer=adamw", "--config.prefetch=0",
                      "--config.learning_rate=-1", timeout=120)
    _one_line_error(proc, "optimizer='adamw'")
    assert "prefetch=0" in proc.stderr and "learning_rate=-1.0" in proc.stderr


def test_an_empty_workdir_is_an_error_not_the_current_folder(tmp_path):
    cmd = [sys.executable, "-m", "launch.train", "--config", str(ROOT / "configs/default.py"),
           "--workdir="]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    _one_line_error(proc, "workdir is empty")
    assert list(tmp_path.iterdir()) == []


def test_the_rule_table_covers_every_field_of_the_base_config():
    from configs.base import base_config

    def dotted(config, prefix=""):
        for key, value in config.items():
            if hasattr(value, "items"):
                yield from dotted(value, f"{prefix}{key}.")
            else:
                yield prefix + key

    assert set(dotted(base_config())) == set(RULES)
    validate_config(tiny_config())  # the defaults pass


@pytest.mark.parametrize("name", sorted(n for n, r in RULES.items() if isinstance(r, (Int, Float))))
def test_each_numeric_rule_rejects_below_its_range_and_non_numbers(name):
    rule = RULES[name]
    config = tiny_config().to_dict()  # a plain dict takes values of any type
    *parents, leaf = name.split(".")
    target = config
    for parent in parents:
        target = target[parent]
    bad: list = ["text", True, None]
    bad += [] if rule.low is None else [rule.low - 1]
    bad += [] if rule.high is None else [rule.high + 1]
    bad += [float("nan"), float("inf")] if isinstance(rule, Float) else [1.5]
    for value in bad:
        target[leaf] = value
        with pytest.raises(ConfigError, match=rf"{re.escape(name)}=.*: must"):
            validate_config(config)


def test_the_library_entry_point_checks_fields_before_the_workdir(tmp_path):
    from hybrenet_jax.train import train_and_evaluate

    with pytest.raises(ConfigError, match="checkpoint_keep=0"):
        train_and_evaluate(tiny_config(checkpoint_keep=0), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["summary.json", "metrics.jsonl", "checkpoints"])
def test_an_output_path_of_the_wrong_kind_is_refused_before_training(tmp_path, name):
    from hybrenet_jax.train import TrainingError, train_and_evaluate

    if name == "checkpoints":
        (tmp_path / name).write_text("not a folder")
    else:
        (tmp_path / name).mkdir()
    with pytest.raises(TrainingError, match=f"{name} is not a (file|folder).*another workdir"):
        train_and_evaluate(tiny_config(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "run.lock"])


# -- one writer per workdir ----------------------------------------------------------------
def test_a_second_run_on_a_locked_workdir_is_refused_and_changes_nothing(tmp_path):
    from hybrenet_jax.train import train_and_evaluate
    from hybrenet_jax.train.workdir_lock import WorkdirBusyError, WorkdirLock

    workdir = tmp_path / "run"
    workdir.mkdir()
    with WorkdirLock(workdir):
        before = _snapshot(workdir)
        proc = run_launch(workdir, *TINY, "--config.total_steps=2", timeout=300)
        _one_line_error(proc, f"is in use by another run (pid {os.getpid()} on host ")
        assert _snapshot(workdir) == before
        with pytest.raises(WorkdirBusyError, match="use another workdir"):
            train_and_evaluate(tiny_config(), workdir)
        assert _snapshot(workdir) == before
    with WorkdirLock(workdir):  # released when the holder lets go
        pass


# -- run identity --------------------------------------------------------------------------
def test_a_workdir_of_another_model_or_optimizer_is_refused_and_left_intact(tmp_path):
    from hybrenet_jax.train import train_and_evaluate
    from hybrenet_jax.train.run_identity import IDENTITY_FILE

    train_and_evaluate(tiny_config(total_steps=1), tmp_path)
    recorded = json.loads((tmp_path / IDENTITY_FILE).read_text())
    assert recorded["fields"]["model"] == "hrn-2x2x2x:m=4" and len(recorded["fingerprint"]) == 16
    before = _snapshot(tmp_path)
    model = run_launch(tmp_path, "--config.model=hrn-2x2x2x:m=16", "--config.batch_size=32",
                       timeout=300)
    _one_line_error(model, "holds a run of model='hrn-2x2x2x:m=4'; this run asks for "
                           "model='hrn-2x2x2x:m=16': use another workdir")
    optimizer = run_launch(tmp_path, *TINY, "--config.optimizer=adam", timeout=300)
    _one_line_error(optimizer, "holds a run of optimizer='sgd'; this run asks for "
                               "optimizer='adam'")
    assert _snapshot(tmp_path) == before
    # a workdir from before identities were recorded: its checkpoints' model stands in
    (tmp_path / IDENTITY_FILE).unlink()
    before = _snapshot(tmp_path)
    legacy = run_launch(tmp_path, "--config.model=hrn-2x2x2x:m=16", "--config.batch_size=32",
                        timeout=300)
    _one_line_error(legacy, "model='hrn-2x2x2x:m=16'")
    assert _snapshot(tmp_path) == before and not (tmp_path / "corrupt").exists()


# -- Ctrl-C --------------------------------------------------------------------------------
def test_a_first_ctrl_c_sets_the_flag_and_a_second_aborts():
    from hybrenet_jax.train.loop import _Preemption

    with _Preemption() as preemption:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert preemption.requested and preemption.signal == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_goes_to_the_handler_installed_before():
    from hybrenet_jax.train.loop import _Preemption

    calls = []

    def outer(signum, frame):
        calls.append(signum)
        raise SystemExit(130)

    signal.signal(signal.SIGINT, outer)
    try:
        with _Preemption() as preemption:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            assert preemption.requested and calls == []
            with pytest.raises(SystemExit):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.5)
        assert calls == [signal.SIGINT] and signal.getsignal(signal.SIGINT) is outer
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _wait_for(predicate, proc, seconds=300):
    deadline = time.time() + seconds
    while not predicate():
        assert proc.poll() is None, "the run ended before the signal could be sent"
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.slow
def test_ctrl_c_saves_the_current_step_and_exits_0(tmp_path):
    flags = [*TINY, "--config.total_steps=400", "--config.checkpoint_every_steps=1",
             "--config.eval_every_steps=1000", "--config.async_checkpointing=false"]
    proc = run_launch(tmp_path, *flags, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      text=True)
    _wait_for(lambda: (tmp_path / "checkpoints" / "2").is_dir(), proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    step = int(out.split("interrupted at step ")[1].split()[0])
    assert 2 <= step < 400 and (tmp_path / "checkpoints" / str(step)).is_dir()
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.slow
def test_ctrl_c_before_training_starts_is_one_line_exit_130(tmp_path):
    proc = run_launch(tmp_path, *TINY, "--config.total_steps=400", stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (tmp_path / "run.lock").exists(), proc)  # set up, not yet training
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "launch.train: interrupted" in err


# -- a kill between the best and the periodic save -----------------------------------------
def test_a_best_checkpoint_without_its_periodic_twin_resumes_and_matches(tmp_path):
    from hybrenet_jax.train import train_and_evaluate

    config = dict(total_steps=2, checkpoint_every_steps=2, eval_every_steps=2)
    full = train_and_evaluate(tiny_config(**config), tmp_path / "full")
    killed = tmp_path / "killed"
    train_and_evaluate(tiny_config(**config), killed)
    # as if killed after best/2 was written and before checkpoints/2 was
    for path in sorted((killed / "checkpoints" / "2").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (killed / "checkpoints" / "2").rmdir()
    (killed / "summary.json").unlink()
    assert (killed / "best" / "2").is_dir()
    resumed = train_and_evaluate(tiny_config(**config), killed)
    assert resumed["steps"] == 2 and resumed["params_digest"] == full["params_digest"]
    assert (killed / "checkpoints" / "2").is_dir()
