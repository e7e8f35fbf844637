"""TensorFlow only for tfds datasets: training, verbs and bench/ run without it.

The subprocess tests put a ``sitecustomize`` on ``PYTHONPATH`` that (with ``HIDE_TF=1``) wraps
every ``sys.meta_path`` finder so that ``tensorflow`` and ``tensorflow_datasets`` cannot be
found — ``import`` raises ``ModuleNotFoundError`` and ``importlib.util.find_spec`` returns
``None``, exactly as when they are not installed — and that, at exit, writes the names of the
TensorFlow modules in ``sys.modules`` to ``$TF_REPORT``. The same tests therefore pass where
TensorFlow is installed (hidden) and where it is not.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run_launch
from hybrenet_jax.data import load_dataset
from hybrenet_jax.data import tfds_loader
from hybrenet_jax.data.errors import DatasetError, TfdsUnavailableError
from hybrenet_jax.train.metrics import MetricWriter

GUARD = '''\
import atexit, json, os, sys

_TF = ("tensorflow", "tensorflow_datasets")


class _Hide:
    """Wraps a meta path finder so that it never finds the TensorFlow packages."""

    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _TF:
            return None
        return self._finder.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self._finder, attr)


if os.environ.get("HIDE_TF") == "1":
    sys.meta_path[:] = [_Hide(f) for f in sys.meta_path]


@atexit.register
def _report():
    with open(os.environ["TF_REPORT"], "w") as f:
        json.dump(sorted(m for m in sys.modules if m.partition(".")[0] in _TF), f)

'''

TINY = ("--config.tensorboard=true", "--config.model=hrn-2x2x2x:m=4", "--config.batch_size=32",
        "--config.total_steps=3", "--config.log_every_steps=1",
        "--config.async_checkpointing=false")


def _guard_env(tmp_path: pathlib.Path, hide: bool) -> tuple[dict[str, str], pathlib.Path]:
    """Environment that loads the guard ``sitecustomize``; and the report file it writes."""
    guard = tmp_path / "guard"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(GUARD)
    report = tmp_path / f"tf_modules_{int(hide)}.json"
    env = {"PYTHONPATH": os.pathsep.join([str(guard), str(ROOT)]),
           "HIDE_TF": "1" if hide else "0", "TF_REPORT": str(report)}
    return env, report


def _read_scalars(logdir: pathlib.Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` from every event file in ``logdir``, by tensorboard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["tensors"]:
        assert acc.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
        out[tag] = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
                    for e in acc.Tensors(tag)]
    return out


def _f32(x: float) -> float:
    return float(np.float32(x))


def test_metric_writer_events_read_back_by_tensorboard(tmp_path):
    writer = MetricWriter(tmp_path)
    writer.write(1, "train", {"loss": 2.5, "accuracy": 0.1})
    writer.write(2, "train", {"loss": np.float32(1.25), "accuracy": 0.3})
    writer.write(2, "eval", {"accuracy": 0.75, "loss": float("inf")})
    writer.close()
    writer.close()  # idempotent
    resumed = MetricWriter(tmp_path)  # a resumed run adds a second event file beside the first
    resumed.write(3, "eval", {"accuracy": 0.875})
    resumed.close()

    files = sorted((tmp_path / "tensorboard").iterdir())
    assert len(files) == 2 and all("tfevents" in f.name for f in files)
    assert _read_scalars(tmp_path / "tensorboard") == {
        "train/loss": [(1, 2.5), (2, 1.25)],
        "train/accuracy": [(1, _f32(0.1)), (2, _f32(0.3))],
        "eval/accuracy": [(2, 0.75), (3, 0.875)],
        "eval/loss": [(2, math.inf)],
    }
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[2] == {"step": 2, "split": "eval", "accuracy": 0.75, "loss": "inf"}


def test_metric_writer_without_tensorboard_or_on_other_processes(tmp_path):
    (tmp_path / "off").mkdir()
    (tmp_path / "quiet").mkdir()
    off = MetricWriter(tmp_path / "off", tensorboard=False)
    off.write(1, "train", {"loss": 1.0})
    off.close()
    assert off.tb is None and not (tmp_path / "off" / "tensorboard").exists()
    assert (tmp_path / "off" / "metrics.jsonl").read_text().count("\n") == 1
    quiet = MetricWriter(tmp_path / "quiet", enabled=False)
    quiet.write(1, "train", {"loss": 1.0})
    quiet.close()
    assert quiet.tb is None and not any((tmp_path / "quiet").iterdir())


def test_import_tfds_failure_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # makes `import tensorflow` fail
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    tfds_loader._import_tfds.cache_clear()
    try:
        with pytest.raises(TfdsUnavailableError) as info:
            load_dataset("cifar10", "train")
    finally:
        tfds_loader._import_tfds.cache_clear()
    message = str(info.value)
    assert isinstance(info.value, DatasetError) and "\n" not in message
    assert "'cifar10'" in message and "pip install tensorflow-cpu tensorflow-datasets" in message
    assert "hybrenet_jax[tfds]" in message


def test_tiny_main_job_trains_with_tensorflow_hidden(tmp_path):
    env, report = _guard_env(tmp_path, hide=True)
    workdir = tmp_path / "run"
    proc = run_launch(workdir, *TINY, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "TensorBoard summaries disabled" not in proc.stderr
    assert json.loads(report.read_text()) == []
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["steps"] == 3
    scalars = _read_scalars(workdir / "tensorboard")
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3]
    assert scalars["eval/accuracy"] == [(3, _f32(summary["test_accuracy"]))]
    logged = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_loss = [(l["step"], _f32(l["loss"])) for l in logged if l["split"] == "train"]
    assert scalars["train/loss"] == train_loss


def _tfds_requests(tmp_path: pathlib.Path) -> dict[str, list[str]]:
    return {
        "launch.train": [sys.executable, "-m", "launch.train", "--config",
                         str(ROOT / "configs/cifar100_hrn.py"), f"--workdir={tmp_path / 'c100'}"],
        "hybrenet snl": [sys.executable, "-m", "hybrenet_jax", "snl", "--config",
                         str(ROOT / "configs/snl_digits.py"), "hrn-2x2x2x:m=4,depths=1-1-1-1",
                         "--budget", "5000", "--dataset", "cifar100",
                         "--workdir", str(tmp_path / "snl")],
    }


@pytest.mark.parametrize("entry", ["launch.train", "hybrenet snl"])
def test_tfds_dataset_without_tensorflow_is_one_line_exit_2(tmp_path, entry):
    env, _ = _guard_env(tmp_path, hide=True)
    proc = subprocess.run(_tfds_requests(tmp_path)[entry], env={**os.environ, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [l for l in proc.stderr.splitlines() if "error" in l.lower()]
    assert len(errors) == 1 and proc.stderr.rstrip().splitlines()[-1] == errors[0]
    assert errors[0].startswith(f"{entry}: error: dataset 'cifar100' ")
    assert "No module named 'tensorflow'" in errors[0]
    assert "pip install tensorflow-cpu tensorflow-datasets" in errors[0]


AUDIT = '''\
import importlib, pathlib, pkgutil, sys
sys.path.insert(0, "tests")
import hybrenet_jax
from hybrenet_jax.cli import build_parser

build_parser()  # every verb module
skip = {"hybrenet_jax.__main__", "hybrenet_jax.data.tinyimagenet"}  # CLI run; the tfds builder
for info in pkgutil.walk_packages(hybrenet_jax.__path__, "hybrenet_jax."):
    if info.name not in skip:
        importlib.import_module(info.name)
for path in sorted(pathlib.Path("bench").glob("*.py")):
    try:
        importlib.import_module(f"bench.{path.stem}")
    except ImportError as err:
        if err.name != "torch":  # bench/torch_reference.py needs the optional torch
            raise
importlib.import_module("launch.train")
from conftest import tiny_config
from hybrenet_jax.train import train_and_evaluate

summary = train_and_evaluate(tiny_config(total_steps=2, tensorboard=True), sys.argv[1])
assert summary["steps"] == 2
assert any(pathlib.Path(sys.argv[1], "tensorboard").iterdir())
'''


def test_training_verbs_and_bench_never_import_tensorflow(tmp_path):
    """Where TensorFlow is installed and NOT hidden, none of these paths imports it."""
    env, report = _guard_env(tmp_path, hide=False)
    proc = subprocess.run([sys.executable, "-c", AUDIT, str(tmp_path / "run")],
                          env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(report.read_text()) == []
