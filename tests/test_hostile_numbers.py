"""Numbers and paths that overflow the parsers (issue 24, class 5).

Every number read from text is finite and bounded, with the range in its one-line refusal
(:mod:`hybrenet_jax.bounded`, the schema's rules); every path a verb takes is a local path or a
URL ``train`` writes, a missing storage package or unreachable storage is one line naming what
to install; the verbs that read a training run read the ``file://`` URLs ``train`` writes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import ROOT, tiny_config
from hybrenet_jax.bounded import (NumberError, parse_count, parse_float, parse_int,
                                  parse_int_list)
from hybrenet_jax.cli._types import arg_type
from hybrenet_jax.errors import HybrenetError
from hybrenet_jax.schema import (MAX_EPOCHS, MAX_STEPS, RULES, ConfigError, Float, Int,
                                 build_config, field_value, schedule_steps)

MODEL = "hrn-2x2x2x:m=4"
#: The network of the tiny training run (one block per stage: compiles in half the time).
RUN_MODEL = "hrn-2x2x2x:m=4,depths=1-1-1-1"
#: Texts no number option may accept: not finite once read, or far past any bound.
HOSTILE = ["inf", "-inf", "nan", "1e400", "-1e400", "9" * 400, "99999999999999999999"]


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text[-2000:]
    assert "Traceback" not in text
    return lines[0]


def _cli(capsys, *argv):
    """``hybrenet ARGV`` in this process: (exit code, stdout, stderr)."""
    from hybrenet_jax.cli import main

    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(err: str, verb: str) -> str:
    """The one ``hybrenet VERB: error:`` line of ``err`` (argparse prints its usage above)."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith(f"hybrenet {verb}: error:")]
    assert len(errors) == 1, err[-2000:]
    return errors[0]


# -- the one bounded parser -----------------------------------------------------------------
@pytest.mark.parametrize("text", HOSTILE + ["", "abc", "1.5", "0x10", "1e3.5", "--1"])
def test_parse_int_refuses_with_the_text_and_the_range_in_one_line(text):
    with pytest.raises(NumberError) as caught:
        parse_int(text, "--m", low=1, high=16_384)
    message = str(caught.value)
    assert message.startswith("--m ") and "accepted: an integer in [1, 16,384]" in message
    assert "\n" not in message and len(message) < 300  # a 400-digit text is cut


@pytest.mark.parametrize("text", HOSTILE + ["", "abc", "0", "-0.5", "1e-400"])
def test_parse_float_refuses_non_finite_and_out_of_range(text):
    with pytest.raises(NumberError) as caught:
        parse_float(text, "--scales", low=0.0, high=256.0, low_open=True)
    assert "accepted: a number in (0, 256]" in str(caught.value)


@pytest.mark.parametrize("text", HOSTILE + ["1e308k", "0", "0.5", "-5k", "k", "", "1e12k"])
def test_parse_count_refuses_with_an_example(text):
    with pytest.raises(NumberError, match=r"accepted: a count in \[1, 1,000,000,000,000\] "
                                          r"\(e\.g\. 50000 or 50k\)"):
        parse_count(text, "--budget")


@pytest.mark.parametrize("parse,text,value", [
    (parse_int, "12", 12), (parse_int, " 1_000 ", 1000), (parse_int, "1e3", 1000),
    (parse_int, "16384", 16_384), (parse_float, "0.5", 0.5), (parse_float, "256", 256.0),
    (parse_count, "50k", 50_000), (parse_count, "50K", 50_000), (parse_count, "2.5k", 2_500),
    (parse_count, "1e5", 100_000), (parse_count, "1e12", 10**12), (parse_count, "1", 1),
])
def test_good_numbers_and_the_bounds_themselves_are_accepted(parse, text, value):
    bounds = {parse_int: dict(low=1, high=16_384), parse_float: dict(low=0.0, high=256.0,
                                                                     low_open=True),
              parse_count: {}}[parse]
    got = parse(text, "--x", **bounds)
    assert got == value and type(got) is type(value)


def test_the_parsers_raise_the_callers_error_class_and_argparse_gets_a_usage_error():
    class Mine(HybrenetError):
        pass

    with pytest.raises(Mine):
        parse_int("inf", "--x", error=Mine)
    with pytest.raises(Mine, match="'2-x-2'"):
        parse_int_list("2-x-2", "--depths", error=Mine)
    convert = arg_type(parse_int, "m", low=1, high=8)
    assert convert("8") == 8
    with pytest.raises(argparse.ArgumentTypeError, match=r"'9': out of range; accepted: an "
                                                         r"integer in \[1, 8\]"):
        convert("9")


# -- every numeric command-line option -------------------------------------------------------
def _typed_actions():
    from hybrenet_jax.cli import build_parser

    sub = next(a for a in build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    return [(verb, action) for verb, parser in sub.choices.items()
            for action in parser._actions if action.type is not None]


def test_no_option_reads_numbers_with_bare_int_or_float():
    """``type=int`` takes 10**4000, ``type=float`` takes inf and nan: every typed option goes
    through the bounded parser instead (so a new option cannot slip past this class)."""
    typed = _typed_actions()
    assert len(typed) >= 15
    bare = [f"{verb} {'/'.join(a.option_strings)}" for verb, a in typed
            if a.type in (int, float)]
    assert not bare


@pytest.mark.parametrize("verb,option", [(verb, a.option_strings[0])
                                         for verb, a in _typed_actions()])
def test_every_typed_option_refuses_hostile_numbers_in_one_line(capsys, verb, option):
    cli_verb = verb.replace("_", "-")
    for text in HOSTILE:
        code, out, err = _cli(capsys, cli_verb, f"{option}={text}")  # "-inf" is a value
        line = _error_line(err, cli_verb)
        assert code == 2 and out == ""
        assert f"argument {option}:" in line and "accepted:" in line, line


@pytest.mark.parametrize("argv,fragment", [
    (["deepreshape", "--order", "S3,S2,S4,S1", "--dry-run", "--budgets", "inf"],
     "--budgets 'inf': not finite; accepted: a ReLU count in [1, 1,000,000,000,000]"),
    (["deepreshape", "--order", "S3,S2,S4,S1", "--dry-run", "--budgets", "50k,1e400"],
     "--budgets '1e400': not finite"),
    (["deepreshape", "--order", "S3,S2,S4,S1", "--dry-run", "--budgets", "50k,x"],
     "--budgets 'x': not a ReLU count; accepted: a ReLU count in [1, 1,000,000,000,000] "
     "(e.g. 50000 or 50k)"),
    (["deepreduce", "resnet18", "--order", "S3,S2,S4,S1", "--dry-run", "--budgets", "1e400"],
     "--budgets '1e400': not finite"),
    (["deepreduce", "resnet18", "--order", "S3,S2,S4,S1", "--dry-run", "--budgets", "1e13"],
     "--budgets '1e13': out of range"),
    (["deepreduce", "resnet18", "--order", "S3,S2,S4,S1", "--dry-run", "--scales", "nan"],
     "--scales 'nan': not finite; accepted: a number in (0, 256]"),
    (["deepreduce", "resnet18", "--order", "S3,S2,S4,S1", "--dry-run", "--scales", "0.5,inf"],
     "--scales 'inf': not finite"),
    (["deepreduce", "resnet18", "--order", "S3,S2,S4,S1", "--dry-run", "--scales", "1e300"],
     "--scales '1e300': out of range"),
    (["deepreshape", "--order", "S3,S2,S4,S1", "--dry-run", "--reuse", "99999999999999999999"],
     "--reuse '99999999999999999999': out of range; accepted: an integer in [1, 64]"),
    (["deepreshape", "--order", "S3,S2,S4,S1", "--dry-run", "--reuse", "4,3"],
     "3 is not a ReLU-reuse factor; accepted: 1, 2, 4, 8, 16, 32, 64"),
    (["deepreshape", "--order", "S3,S2,S4,S1", "--dry-run", "--distill", "dkd",
      "--dkd-betas", "1e308"], "'1e308': out of range; accepted: a number in (0, 1000]"),
    (["deepreshape", "--order", "S3,S2,S4,S1", "--dry-run", "--top", "-5"],
     "'-5': out of range; accepted: an integer in [0, 1,000,000] (0: every network)"),
    (["cost", "resnet18", "--threads", "100000000000000000000"],
     "accepted: an integer in [1, 4,096]"),
])
def test_number_lists_and_options_are_refused_before_any_work(capsys, argv, fragment):
    code, out, err = _cli(capsys, *argv)
    assert code == 2 and out == ""
    assert fragment in _error_line(err, argv[0]), err


def test_local_device_ids_are_bounded():
    from hybrenet_jax.cli.train import _init_distributed
    from hybrenet_jax.distributed import ClusterError

    for text in ["0,inf", "1e400", "0,99999999999999999999", "0,-1", "a"]:
        args = argparse.Namespace(local_device_ids=text, distributed=False,
                                  coordinator_address=None, num_processes=None,
                                  process_id=None)
        with pytest.raises(ClusterError, match=r"--local_device_ids=.*accepted: an integer in "
                                               r"\[0, 65,535\]"):
            _init_distributed(args)


# -- every numeric config field, from the command line ---------------------------------------
NUMERIC_FIELDS = sorted(n for n, r in RULES.items() if isinstance(r, (Int, Float)))


@pytest.mark.parametrize("name", NUMERIC_FIELDS)
def test_every_numeric_config_override_refuses_hostile_text_in_one_line(name):
    from hybrenet_jax.config import config_from_args

    for text in HOSTILE + ["1e308"]:
        args = argparse.Namespace(config=str(ROOT / "configs/default.py"),
                                  config_overrides=[f"model={MODEL}", f"{name}={text}"])
        if text in ("1e308", "99999999999999999999") and isinstance(RULES[name], Float) \
                and RULES[name].high is None:
            # finite, with no upper bound: learning rates and loss weights (a diverging run
            # stops with one line of its own)
            assert field_value(config_from_args(args), name) == float(text)
            continue
        with pytest.raises(ConfigError) as caught:
            config_from_args(args)
        message = str(caught.value)
        assert "\n" not in message and name in message, message


def test_epoch_fields_have_the_epoch_bound():
    """Epochs times steps per epoch must not overflow an int: every epoch field is bounded
    like num_epochs (the warm-ups were unbounded: 1e308 overflowed at the first step)."""
    epochs = [n for n in RULES if n.endswith("epochs") and isinstance(RULES[n], (Int, Float))]
    assert {"warmup_epochs", "distill.dkd_warmup_epochs", "num_epochs"} <= set(epochs)
    for name in epochs:
        assert RULES[name].high is not None and RULES[name].high <= MAX_EPOCHS, name


def test_a_schedule_longer_than_int32_steps_is_one_config_error():
    config = build_config(tiny_config(num_epochs=MAX_EPOCHS, total_steps=0))
    assert schedule_steps(config, 2_000) == 2_000_000_000
    with pytest.raises(ConfigError, match=r"num_epochs=1000000 at 3,000 steps per epoch is "
                                          r"3,000,000,000 steps; at most 2,147,483,647"):
        schedule_steps(config, 3_000)
    warm = build_config(tiny_config(warmup_epochs=float(MAX_EPOCHS)))
    with pytest.raises(ConfigError, match=r"warmup_epochs=1e\+06 at 3,000 steps per epoch"):
        schedule_steps(warm, 3_000)
    dkd = build_config(tiny_config(**{"distill.kind": "dkd", "total_steps": MAX_STEPS,
                                      "distill.dkd_warmup_epochs": 1.0}))
    with pytest.raises(ConfigError, match=r"total_steps=2147483647 \+ "
                                          r"distill.dkd_warmup_epochs=1"):
        schedule_steps(dkd, 10)


def test_dkd_betas_share_the_bound_of_the_dkd_beta_field():
    from hybrenet_jax.schema import MAX_DKD_WEIGHT, parse_dkd_betas

    assert RULES["distill.dkd_beta"].high == MAX_DKD_WEIGHT
    assert parse_dkd_betas(f"0.8,{MAX_DKD_WEIGHT:g}") == (0.8, MAX_DKD_WEIGHT)
    with pytest.raises(ConfigError, match="DKD beta '1e308' must be a positive number <= 1000"):
        parse_dkd_betas("0.8,1e308")


def test_results_points_are_bounded():
    from hybrenet_jax.report.points import point_from_record

    good = {"model": "resnet18", "dataset": "cifar100", "relus": 5e5, "flops": 5e8,
            "accuracy": 70.0}
    assert point_from_record(good, "r:1").relus == 5e5
    for key, value in [("relus", 1e300), ("flops", 1e308), ("latency_seconds", 1e308),
                       ("dkd_beta", 1e308), ("relus", float("inf"))]:
        with pytest.raises(ValueError, match=rf"{key}=.*(must be in|not a finite)"):
            point_from_record({**good, key: value}, "r:1")


# -- the examples, end to end in subprocesses ----------------------------------------
def _hybrenet(*argv, env=None, cwd=ROOT, timeout=120):
    return subprocess.run([sys.executable, "-m", "hybrenet_jax", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


@pytest.mark.parametrize("argv", [
    ["snl", "--config", "configs/snl_digits.py", MODEL, "--budget", "inf", "--workdir", "W"],
    ["deepreshape", "--order", "S3,S2,S4,S1", "--budgets", "1e400", "--dry-run"],
    ["deepreduce", "resnet18", "--order", "S3,S2,S4,S1", "--scales", "nan", "--dry-run"],
])
def test_the_reported_overflows_exit_2_with_one_line(tmp_path, argv):
    proc = _hybrenet(*argv, cwd=tmp_path if "W" in argv else ROOT)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Traceback" not in proc.stderr and "OverflowError" not in proc.stderr
    errors = [l for l in proc.stderr.splitlines() if ": error:" in l]
    assert len(errors) == 1 and "not finite; accepted:" in errors[0], proc.stderr
    assert not (tmp_path / "W").exists()


def test_launch_refuses_overflowing_warmups_in_one_line(tmp_path):
    from conftest import run_launch

    workdir = tmp_path / "run"
    proc = run_launch(workdir, f"--config.model={MODEL}", "--config.warmup_epochs=1e308",
                      "--config.distill.dkd_warmup_epochs=1e308", timeout=300)
    line = _one_line(proc.stderr)
    assert proc.returncode == 2 and line.startswith("launch.train: error:")
    assert "warmup_epochs=1e+308: must be in [0.0, 1000000]" in line
    assert "distill.dkd_warmup_epochs=1e+308: must be in [0.0, 1000000]" in line
    assert not workdir.exists()


# -- storage URLs: missing packages, unreachable stores ----------------------------------------
def test_a_cloud_url_without_its_package_names_what_to_install(monkeypatch):
    from hybrenet_jax.train import storage

    monkeypatch.setenv("EPATH_USE_TF", "0")  # epath's switch: fsspec, not TensorFlow
    for name in ("gcsfs", "s3fs", "adlfs"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    for url, fragment in [("gs://bucket/run", 'pip install -e ".[gcs]" (fsspec, gcsfs)'),
                          ("s3://bucket/run", "pip install fsspec s3fs"),
                          ("az://box/run", "pip install fsspec adlfs")]:
        with pytest.raises(storage.StorageError) as caught:
            storage.workdir_path(url)
        assert fragment in str(caught.value) and url in str(caught.value)
        assert "\n" not in str(caught.value)
    assert storage.workdir_path("file:///tmp/x").as_posix() == "/tmp/x"  # no package needed
    assert str(storage.workdir_path("runs/x")) == "runs/x"


def test_through_tensorflow_s3_needs_tensorflow_io(monkeypatch):
    from hybrenet_jax.train import storage

    monkeypatch.setattr(storage, "through_tensorflow", lambda: True)
    monkeypatch.setitem(sys.modules, "tensorflow_io", None)
    assert storage.missing_support("gs") is None  # TensorFlow reads gs:// itself
    assert "pip install tensorflow-io" in storage.missing_support("s3")
    assert "EPATH_USE_TF=0" in storage.missing_support("az")


def test_unreachable_cloud_storage_is_one_line():
    from hybrenet_jax.train.storage import StorageError, check_reachable

    class Unreachable:
        def __fspath__(self):
            return "gs://bucket/run"

        def exists(self):
            raise RuntimeError("Could not resolve host: www.googleapis.com\n  when reading")

    with pytest.raises(StorageError) as caught:
        check_reachable(Unreachable(), "--workdir")
    message = str(caught.value)
    assert message.startswith("--workdir 'gs://bucket/run': cannot reach gs:// storage")
    assert "Could not resolve host" in message and "\n" not in message
    local = ROOT / "nothing-here"
    assert check_reachable(local) is local  # local paths are not probed


#: Hides the cloud packages from a subprocess (absent here, or installed: the same result).
HIDE_CLOUD = "import sys\nfor _n in ('gcsfs', 's3fs', 'adlfs'):\n    sys.modules[_n] = None\n"


@pytest.fixture()
def without_cloud_packages(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(HIDE_CLOUD)
    return {"PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "EPATH_USE_TF": "0"}


def test_launch_train_on_gs_without_the_gcs_extra_is_one_line(tmp_path, without_cloud_packages):
    proc = subprocess.run(
        [sys.executable, "-m", "launch.train", "--config", str(ROOT / "configs/default.py"),
         "--workdir", "gs://bucket/run", f"--config.model={MODEL}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, **without_cloud_packages})
    line = _one_line(proc.stderr)
    assert proc.returncode == 2 and line.startswith("launch.train: error:")
    assert "gcsfs" in line and 'pip install -e ".[gcs]"' in line, line
    assert os.listdir(tmp_path) == ["site"]  # no local folder named gs:


@pytest.mark.parametrize("argv", [
    ["export", "--workdir", "gs://bucket/run", "--format", "onnx", "--out", "m.onnx"],
    ["deepreshape", "--order", "S3,S2,S4,S1", "--dry-run", "--teacher-workdir", "s3://b/t"],
])
def test_verbs_reading_a_cloud_run_without_its_package_are_one_line(tmp_path, argv,
                                                                     without_cloud_packages):
    proc = _hybrenet(*argv, env=without_cloud_packages, cwd=tmp_path)
    line = _one_line(proc.stderr)
    assert proc.returncode == 2 and "not installed; " in line and "pip install" in line, line
    assert os.listdir(tmp_path) == ["site"]


@pytest.mark.parametrize("argv,option", [
    (["snl", "--config", str(ROOT / "configs/snl_digits.py"), MODEL, "--budget", "5000",
      "--workdir", "gs://b/snl"], "--workdir"),
    (["deepreshape", "--order", "S3,S2,S4,S1", "--config",
      str(ROOT / "configs/pipeline_digits.py"), "--workdir", "s3://b/drs"], "--workdir"),
    (["criticality", "--config", str(ROOT / "configs/pipeline_digits.py"), MODEL,
      "--no-teacher", "--workdir", "az://b/crit"], "--workdir"),
    (["pareto", "--no-published", "--out", "gs://b/report"], "--out"),
    (["plot-distribution", "resnet18", "--out", "gs://b/d.png"], "--out"),
    (["export", "--workdir", "runs/x", "--format", "onnx", "--out", "gs://b/m.onnx"], "--out"),
])
def test_what_a_verb_writes_is_local_and_a_cloud_url_is_one_line(capsys, tmp_path,
                                                                 monkeypatch, argv, option):
    """These verbs wrote a local folder named ``gs:`` (or ``s3:``) in the current folder."""
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(capsys, *argv)
    assert code == 2 and out == ""
    line = _one_line(err)
    assert f"{option} '" in line and "local" in line and "file:///abs/path" in line, line
    assert os.listdir(tmp_path) == []


# -- file:// URLs: every verb reads what train writes ----------------------------------------
@pytest.fixture(scope="module")
def url_run(tmp_path_factory):
    """A real tiny training run written through a ``file://`` URL: ``(url, folder)``."""
    from hybrenet_jax.train import train_and_evaluate

    folder = tmp_path_factory.mktemp("url") / "run"
    url = f"file://{folder}"
    train_and_evaluate(tiny_config(model=RUN_MODEL, total_steps=2), url)
    assert (folder / "summary.json").is_file() and (folder / "checkpoints").is_dir()
    return url, folder


def test_export_reads_a_file_url_workdir(url_run, tmp_path, capsys):
    """``hybrenet export --workdir file:///...`` said: not a training workdir."""
    from hybrenet_jax.export import load_bundle

    url, folder = url_run
    out = tmp_path / "bundle"
    code, stdout, err = _cli(capsys, "export", "--workdir", url, "--best", "--format",
                             "bundle", "--out", f"file://{out}")
    assert code == 0, err
    assert f"exported {RUN_MODEL} (digits, best checkpoint, step 2) -> {out}" in stdout
    assert load_bundle(out).spec.classes == 10
    assert json.loads((out / "model.json").read_text())["source"]["workdir"] == str(folder)


def test_readers_of_training_runs_take_file_urls(url_run, capsys):
    from hybrenet_jax.cli._paths import training_workdir
    from hybrenet_jax.export import load_checkpoint
    from hybrenet_jax.train.rundir import finished_run_model

    url, folder = url_run
    assert training_workdir(url, "--teacher-workdir") == str(folder)
    assert finished_run_model(url) == RUN_MODEL  # teachers, pretrained networks
    assert load_checkpoint(url, "latest").meta["step"] == 2
    code, out, err = _cli(capsys, "deepreshape", "--order", "S3,S2,S4,S1", "--dry-run",
                          "--json", "--networks", "alpha2", "--top", "1", "--reuse", "none",
                          "--teacher-workdir", url)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows and all(r["role"] != "teacher" for r in rows)  # the given teacher: no training


def test_hostile_pass_leftovers_are_one_line():
    """Second hostile pass: a literal that underflows to 0 is not 0; a 400-digit integer in
    a results line is a bad number, not an OverflowError; a malformed gs:// bucket is refused
    at once instead of retrying for minutes; weights a typo blows up have upper bounds."""
    from hybrenet_jax.bounded import NumberError, parse_float, parse_int
    from hybrenet_jax.report.points import _number
    from hybrenet_jax.schema import build_config
    from hybrenet_jax.train.storage import StorageError, workdir_path

    for parse in (parse_int, parse_float):
        with pytest.raises(NumberError, match="'1e-400'"):
            parse("1e-400", "--top", low=0)
    assert parse_int("-0", low=0) == 0 and parse_float("0.0") == 0.0
    with pytest.raises(ValueError, match="not a finite number"):
        _number(10 ** 400, "relus")
    start = time.monotonic()
    for url in ("gs://bad bucket/%zz/../x", "gs://Upper/x", "gs://a/x"):
        with pytest.raises(StorageError, match="not a gs://BUCKET/PATH URL"):
            workdir_path(url)
    assert time.monotonic() - start < 1.0
    assert str(workdir_path("gs://my-bucket.v2/run")) == "gs://my-bucket.v2/run"
    for field in ("weight_decay=1e308", "distill.temperature=1e-30", "snl.lasso=1e30",
                  "snl.lasso_growth=1e9", "snl.temperature=1e-30", "snl.kd_weight=1e9",
                  "snl.finetune_weight_decay=1e308"):
        name, value = field.split("=")
        with pytest.raises(ConfigError, match=name.split(".")[-1]):
            build_config({**_nested(name, float(value))})


def _nested(dotted: str, value) -> dict:
    head, _, rest = dotted.partition(".")
    return {head: _nested(rest, value) if rest else value}
