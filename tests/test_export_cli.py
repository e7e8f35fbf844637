"""``hybrenet export`` end to end on a real (2-step) training run of the digits dataset."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hybrenet_jax.cli import main
from hybrenet_jax.export import load_bundle, run_onnxruntime
from hybrenet_jax.variables import flatten
from hybrenet_jax.export.verify import jax_logits, real_inputs
from hybrenet_jax.model_string import spec_from_model_string
from hybrenet_jax.models import build_model, input_shape
from hybrenet_jax.train.checkpoint import Checkpointer, load_variables
from hybrenet_jax.train.state import create_state

MODEL = "hrn-2x2x2x:m=4"


def _write_checkpoint(workdir, variables: dict, meta: dict, step: int = 2) -> None:
    """A workdir holding one checkpoint of ``variables`` (no training)."""
    checkpointer = Checkpointer(workdir, use_async=False)
    checkpointer.save(step, create_state(variables, optax.sgd(0.1)), meta, force=True)
    checkpointer.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A real tiny run: ``train_and_evaluate`` for 2 steps (or a saved init without it)."""
    path = tmp_path_factory.mktemp("run")
    try:
        from configs import default  # noqa: PLC0415
        from hybrenet_jax.train import train_and_evaluate  # noqa: PLC0415
    except ImportError:  # training entry point not available: a checkpoint of an init
        spec = spec_from_model_string(MODEL, "digits")
        variables = build_model(spec).init(jax.random.PRNGKey(0),
                                           jnp.zeros(input_shape(spec, 1)))
        _write_checkpoint(path, variables, {"model": MODEL, "dataset": "digits"})
        return path
    config = default.get_config()
    config.total_steps = 2
    config.batch_size = 32
    config.model = MODEL
    config.tensorboard = False
    config.progress = False
    train_and_evaluate(config, path)
    return path


def test_onnx_export_with_verify(workdir, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    rc = main(["export", "--workdir", str(workdir), "--format", "onnx", "--out", str(out),
               "--batch", "2", "--verify", "--verify-random", "2", "--verify-real", "3"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "verification passed" in text and "3 real images" in text
    # the written file reproduces the checkpoint's logits on real digits
    variables, meta = load_variables(workdir)
    spec = spec_from_model_string(meta["model"], "digits")
    images = real_inputs("digits", 5)
    diff = np.max(np.abs(run_onnxruntime(out, images) - jax_logits(spec, variables, images)))
    assert diff <= 1e-4


def test_bundle_export_of_best_checkpoint(workdir, tmp_path, capsys):
    out = tmp_path / "run.zip"
    rc = main(["export", "--workdir", str(workdir), "--best", "--format", "bundle",
               "--out", str(out), "--verify", "--verify-random", "1", "--verify-real", "2"])
    assert rc == 0, capsys.readouterr()
    bundle = load_bundle(out)
    variables, meta = load_variables(workdir, "best")
    original, loaded = flatten(variables), flatten(bundle.variables)
    assert original.keys() == loaded.keys()
    assert all(np.array_equal(original[k], loaded[k]) for k in original)
    assert bundle.description["model"] == MODEL
    assert bundle.description["source"]["step"] == meta["step"]
    assert bundle.description["source"]["checkpoint"] == "best"


def test_verification_failure_exits_1(workdir, tmp_path, capsys):
    rc = main(["export", "--workdir", str(workdir), "--format", "onnx",
               "--out", str(tmp_path / "m.onnx"), "--verify", "--verify-real", "0",
               "--tolerance", "0"])  # a folded graph never matches to the last bit
    err = capsys.readouterr().err
    assert rc == 1
    assert "verification FAILED" in err and "onnxruntime vs JAX" in err


def test_wrong_model_override_exits_2(workdir, tmp_path, capsys):
    rc = main(["export", "--workdir", str(workdir), "--format", "onnx",
               "--out", str(tmp_path / "m.onnx"), "--model", "hrn-2x2x2x:m=8"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "do not fit model 'hrn-2x2x2x:m=8'" in err and "--model" in err
    assert not (tmp_path / "m.onnx").exists()


def test_checkpoint_with_missing_keys_exits_2(workdir, tmp_path, capsys):
    variables, meta = load_variables(workdir)
    params = dict(variables["params"])
    del params["head_fc"]
    broken = tmp_path / "broken"
    _write_checkpoint(broken, {"params": params, "batch_stats": variables["batch_stats"]},
                      {"model": meta["model"], "dataset": meta["dataset"]})
    rc = main(["export", "--workdir", str(broken), "--format", "bundle",
               "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "2 missing" in err and "params/head_fc/kernel" in err


def test_missing_workdir_and_step_exit_2(workdir, tmp_path, capsys):
    assert main(["export", "--workdir", str(tmp_path / "none"), "--format", "onnx",
                 "--out", str(tmp_path / "m.onnx")]) == 2
    assert "is this a training workdir" in capsys.readouterr().err
    assert main(["export", "--workdir", str(workdir), "--step", "12345", "--format", "onnx",
                 "--out", str(tmp_path / "m.onnx")]) == 2
    assert "no checkpoint at step 12345" in capsys.readouterr().err


def test_bundle_json_lists_relu_layout(workdir, tmp_path, capsys):
    out = tmp_path / "dir_bundle"
    assert main(["export", "--workdir", str(workdir), "--format", "bundle",
                 "--out", str(out)]) == 0
    d = json.loads((out / "model.json").read_text())
    assert d["dataset"] == "digits"
    assert d["input"]["normalization"]["mean"] and d["input"]["layout"] == "NHWC"
    assert {r["state"] for r in d["relu_layout"]} == {"kept"}
    assert "ReLUs per image" in capsys.readouterr().out
