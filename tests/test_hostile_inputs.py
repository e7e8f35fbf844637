"""Hostile use of ``launch.train`` (issue 16): bad fields, two writers, another run's workdir,
Ctrl-C, a kill between the best and the periodic save.

Config errors must come before anything is built: those runs take seconds, leave no workdir
behind and print one line.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_launch, tiny_config
from hybrenet_jax.errors import HybrenetError
from hybrenet_jax.schema import RULES, ConfigError, Float, Int, validate_config

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
    ("--config.mesh_model_axis=0", "mesh_model_axis=0: must be in [1, 65536]"),
    ("--config.mesh_model_axis=7", "mesh_model_axis=7 must divide the"),
    ("--config.optimizer=adamw", "optimizer='adamw': accepted: sgd, adam"),
    ("--config.lr_schedule=linear", "lr_schedule='linear': accepted: cosine, constant"),
    ("--config.checkpoint_keep=-1", "checkpoint_keep=-1: must be in [1, 1000]"),
    ("--config.checkpoint_keep=0", "checkpoint_keep=0: must be in [1, 1000]"),
    ("--config.prefetch=-1", "prefetch=-1: must be in [1, 64]"),
    ("--config.label_smoothing=5", "label_smoothing=5.0: must be in [0.0, 1.0]"),
    ("--config.warmup_epochs=-1", "warmup_epochs=-1.0: must be in [0.0, 1000000]"),
    ("--config.learning_rate=nan", "learning_rate=nan: must be a finite number"),
    ("--config.learning_rate=inf", "learning_rate=inf: must be a finite number"),
    ("--config.distill.temperature=0", "distill.temperature=0.0: must be in [0.01, 1000.0]"),
    ("--config.data_workers=-2", "data_workers=-2: must be in [0, 256] (0: automatic)"),
    ("--config.checkpoint_keep_best=100000", "checkpoint_keep_best=100000: must be in [0, 1000]"),
    ("--config.dataset=mnist", "dataset='mnist': accepted: cifar100, cifar10, tinyimagenet, digits"),
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
    from hybrenet_jax.config import base_config

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


def test_a_run_that_loses_the_race_for_a_new_workdir_removes_nothing(tmp_path, monkeypatch):
    """Two runs start on a workdir that does not exist yet: both see it missing, the other
    one makes it and takes the lock first. The refused run must not remove the holder's
    (still nearly empty) workdir or its lock."""
    from hybrenet_jax.train import loop
    from hybrenet_jax.train.workdir_lock import LOCK_FILE, WorkdirBusyError, WorkdirLock

    workdir = tmp_path / "run"
    holder = WorkdirLock(workdir)
    real = loop.make_workdir

    def rival_wins(path):  # the rival makes the folder and locks it in between
        real(path)
        holder.acquire()

    monkeypatch.setattr(loop, "make_workdir", rival_wins)
    try:
        with pytest.raises(WorkdirBusyError):
            loop.train_and_evaluate(tiny_config(), workdir)
        assert sorted(p.name for p in workdir.iterdir()) == [LOCK_FILE]  # the holder's, kept
    finally:
        holder.release()


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

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN under nohup or in a background job
    with _Preemption() as preemption:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert preemption.requested and preemption.signal == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
    assert signal.getsignal(signal.SIGINT) is before  # the handler of before is back


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


# -- count fields have upper bounds (issue 16, "similar count fields") ---------------------
@pytest.mark.parametrize("name,value,fragment", [
    ("checkpoint_keep_best", 10**6, "checkpoint_keep_best=1000000: must be in [0, 1000]"),
    ("checkpoint_keep", 5000, "checkpoint_keep=5000: must be in [1, 1000]"),
    ("prefetch", 1000, "prefetch=1000: must be in [1, 64]"),
    ("data_workers", 10**4, "data_workers=10000: must be in [0, 256]"),
    ("total_steps", 2**31, "total_steps=2147483648: must be in [0, 2147483647]"),
    ("crop_padding", 100, "crop_padding=100: must be in [0, 64]"),
    ("batch_size", 2**21, "batch_size=2097152: must be in [1, 1048576]"),
])
def test_count_fields_have_upper_bounds(name, value, fragment):
    with pytest.raises(ConfigError) as caught:
        validate_config(tiny_config(**{name: value}))
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
    validate_config(tiny_config(**{name: RULES[name].high}))  # the bound itself is accepted


# -- a tfds dataset without network (issue 16, case 7) -------------------------------------
def _offline_env(home):
    """A HOME of its own, every proxy variable pointing at 127.0.0.1:9 (nothing listens on the
    discard port: connections are refused at once), the matplotlib cache of this process (so
    a fresh HOME does not log a font-cache rebuild)."""
    import matplotlib

    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("no_proxy", "http_proxy", "https_proxy", "all_proxy")
           and k != "TFDS_DATA_DIR"}
    dead = "http://127.0.0.1:9"
    env.update(HOME=str(home), HTTP_PROXY=dead, HTTPS_PROXY=dead, http_proxy=dead,
               https_proxy=dead, MPLCONFIGDIR=matplotlib.get_cachedir(),
               PYTHONPATH=str(ROOT))
    return env


@pytest.mark.parametrize("data_dir", ["default", "missing", "existing"])
def test_a_tfds_dataset_without_network_fails_fast_and_leaves_no_folder(tmp_path, data_dir):
    """Through ``launch.train`` (an existing data_dir, a download failing half-way and a
    manual download: ``test_data_tfds.py::test_offline_*``)."""
    pytest.importorskip("tensorflow_datasets")
    home = tmp_path / "home"
    home.mkdir()
    flags = []
    target = home / "tensorflow_datasets"
    if data_dir != "default":
        target = tmp_path / "tfds"
        flags.append(f"--config.data_dir={target}")
    if data_dir == "existing":
        target.mkdir()
        (target / "keep.txt").write_text("mine")
    cmd = [sys.executable, "-m", "launch.train", "--config",
           f"{ROOT / 'configs/cifar100_hrn.py'}:hrn-2x2x2x:m=4", f"--workdir={tmp_path / 'run'}",
           "--config.progress=false", "--config.tensorboard=false", *flags]
    start = time.monotonic()
    proc = subprocess.run(cmd, env=_offline_env(home), cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    elapsed = time.monotonic() - start
    _one_line_error(proc, "dataset 'cifar100' is not prepared in data_dir")
    line = proc.stderr.strip()
    assert f"data_dir {target}" in line and "downloads/manual" in line
    assert "cifar-100-binary.tar.gz" in line and "connection refused" in line
    assert elapsed < 90  # tfds alone retried for 215 s
    assert not (tmp_path / "run").exists()  # the refused run leaves no workdir behind
    if data_dir == "existing":
        assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    else:
        assert not target.exists()


# -- bounded CLI work and capped echoes (issue 16, case 8) ---------------------------------
def _cli(capsys, *argv):
    from hybrenet_jax.cli import main

    start = time.perf_counter()
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    elapsed = time.perf_counter() - start
    out, err = capsys.readouterr()
    return code, out, err, elapsed


@pytest.mark.parametrize("model,fragment", [
    ("hrn-2x2x2x:m=100000", "has a layer 800,000 channels wide; at most 16,384 are accepted"),
    ("hrn-2x2x2x:m=4096", "has a layer 32,768 channels wide; at most 16,384 are accepted"),
    ("hrn-99999999999999999999x2x2x", "channels wide; at most 16,384"),
    ("wrn1000000000000x4", "has 499,999,999,998 blocks; at most 1,024"),
    ("resnet18:depths=2000-2-2-2", "has 2,006 blocks; at most 1,024"),
    ("resnet18:classes=1000000", "has 1,000,000 classes; at most 100,000"),
])
@pytest.mark.parametrize("verb", ["cost", "count", "summary", "plan"])
def test_oversized_networks_are_refused_in_milliseconds(capsys, verb, model, fragment):
    from hybrenet_jax.model_string import spec_from_model_string

    code, out, err, elapsed = _cli(capsys, verb, model)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and fragment in err, err
    assert elapsed < 10  # m=4096 took 20 s, m=100000 more than 300 s
    start = time.perf_counter()
    with pytest.raises(HybrenetError, match="at most"):
        spec_from_model_string(model)
    assert time.perf_counter() - start < 0.5  # checked on the description, before expanding


def test_the_widest_accepted_network_is_checked_for_packing_before_costing(capsys,
                                                                           monkeypatch):
    import hybrenet_jax.cli.cost as cost_cli

    def no_costing(*args, **kwargs):
        raise AssertionError("costed before the FC packing was checked")

    monkeypatch.setattr(cost_cli, "estimate", no_costing)
    code, out, err, elapsed = _cli(capsys, "cost", "hrn-2x2x2x:m=2048")  # 16,384 wide: accepted
    assert code == 2 and err.count("\n") == 1
    assert "FC layer with 16384 inputs needs 16384 slots" in err and elapsed < 10


def test_a_huge_model_string_gets_a_short_message(capsys):
    huge = "hrn-2x2x2x:m=" + "9" * 100_000
    for verb in ("count", "cost", "summary"):
        code, out, err, _ = _cli(capsys, verb, huge)
        assert code == 2 and err.count("\n") == 1, err[:300]
        assert len(err) < 300 and "100,013 characters" in err and "at most 300" in err
    code, out, err, _ = _cli(capsys, "count", "resnet18", "--dataset", "x" * 100_000)
    assert code == 2 and len(err) < 1500 and "choose from" in err  # argparse's echo, capped


# -- every --out / input path error is one line (issue 16, case 8) -------------------------
def _one_cli_line(code, out, err, *fragments):
    assert code == 2 and out == "", err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize("where,fragments", [
    ("missing/d.png", ["folder", "missing does not exist"]),
    ("d.txt", ["unknown image format '.txt'", "accepted: ", ".png", ".pdf", ".svg"]),
    ("d", ["no image suffix", ".png"]),
    ("folder.png", ["is a folder"]),
    ("file.txt/d.png", ["file.txt is not a folder"]),
    ("/proc/hybrenet-test.png", ["cannot write /proc/hybrenet-test.png", "does not accept"]),
])
def test_plot_distribution_out_errors_are_one_line(tmp_path, capsys, where, fragments):
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "file.txt").write_text("x")
    out_path = where if where.startswith("/") else str(tmp_path / where)
    _one_cli_line(*_cli(capsys, "plot-distribution", "resnet18", "--out", out_path)[:3],
                  *fragments)
    assert not pathlib.Path(out_path).is_file()


def _binary(path):
    path.write_bytes(bytes(range(256)) * 8)
    return path


@pytest.mark.parametrize("case", ["binary results", "NUL in results", "binary published",
                                  "results folder", "out is a file", "out under a file",
                                  "out in /proc"])
def test_pareto_path_errors_are_one_line(tmp_path, capsys, case):
    good = tmp_path / "results.jsonl"
    good.write_text(json.dumps({"model": "resnet18", "dataset": "cifar100", "relus": 557056,
                                "flops": 556640000, "accuracy": 0.79}) + "\n")
    out = tmp_path / "report"
    args, fragments = {
        "binary results": ([str(_binary(tmp_path / "r.jsonl"))],
                           ["results file", "is not text (binary data at byte 0)",
                            "expected JSON lines"]),
        "NUL in results": ([str(tmp_path / "nul.jsonl")], ["is not text (binary data at byte 2)"]),
        "binary published": ([str(good), "--published", str(_binary(tmp_path / "p.csv"))],
                             ["published points", "is not text", "expected a CSV file",
                              "--no-published"]),
        "results folder": ([str(tmp_path)], ["cannot read results file", "not a file"]),
        "out is a file": ([str(good), "--no-published"], ["is a file, not a folder"]),
        "out under a file": ([str(good), "--no-published"], ["Not a directory"]),
        "out in /proc": ([str(good), "--no-published"], ["/proc does not accept new files"]),
    }[case]
    (tmp_path / "nul.jsonl").write_bytes(b"{}\x00\n")
    if case == "out is a file":
        out.write_text("keep")
    elif case == "out under a file":
        (tmp_path / "f").write_text("keep")
        out = tmp_path / "f" / "report"
    elif case == "out in /proc":
        out = pathlib.Path("/proc/hybrenet-test-report")
    _one_cli_line(*_cli(capsys, "pareto", *args, "--out", str(out))[:3], *fragments)
    if case == "out is a file":
        assert out.read_text() == "keep"
    elif case not in ("out under a file", "out in /proc"):
        assert not out.exists()  # refused before the folder was made


def test_a_refused_report_leaves_no_empty_folder(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    out = tmp_path / "new" / "report"
    code, _, err, _ = _cli(capsys, "pareto", str(bad), "--no-published", "--out", str(out))
    assert code == 2 and err.splitlines()[-1].startswith("hybrenet pareto: error: no usable")
    assert "bad.jsonl:1: not valid JSON" in err.splitlines()[0]  # the warning per bad line
    assert not out.exists()
