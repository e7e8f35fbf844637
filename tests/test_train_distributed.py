"""The same training code on 1 device, 8 simulated devices and 2 processes on 127.0.0.1."""

from __future__ import annotations

import socket

import numpy as np
import pytest

import jax
from conftest import run_launch
from hybrenet_jax.runtime import EIGEN_CONVOLUTIONS
from hybrenet_jax.train.checkpoint import load_variables

FLAGS = ["--config.model=hrn-2x2x2x:m=4", "--config.batch_size=32", "--config.total_steps=4",
         "--config.eval_every_steps=4", "--config.async_checkpointing=false"]


def _final_train_loss(workdir):
    import json
    lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [l["loss"] for l in lines if l["split"] == "train"][-1]


@pytest.mark.slow
def test_eight_simulated_devices_match_one_device(tmp_path):
    one = run_launch(tmp_path / "one", *FLAGS)
    assert one.returncode == 0, one.stderr[-2000:]
    eight = run_launch(tmp_path / "eight", *FLAGS,
                       env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert eight.returncode == 0, eight.stderr[-2000:]
    import json
    summary = json.loads((tmp_path / "eight" / "summary.json").read_text())
    assert summary["devices"] == 8
    # launch.train adds hybrenet_jax.runtime's flag to the user's XLA_FLAGS, keeping theirs
    assert summary["xla_flags"].split() == ["--xla_force_host_platform_device_count=8",
                                            EIGEN_CONVOLUTIONS]
    a, _ = load_variables(tmp_path / "one")
    b, _ = load_variables(tmp_path / "eight")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=2e-5)
    assert _final_train_loss(tmp_path / "eight") == pytest.approx(
        _final_train_loss(tmp_path / "one"), rel=1e-4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_on_localhost_train_together(tmp_path):
    port = _free_port()
    procs = [run_launch(tmp_path / "run", *FLAGS, f"--coordinator_address=127.0.0.1:{port}",
                        "--num_processes=2", f"--process_id={i}",
                        stdout=-1, stderr=-1, text=True) for i in range(2)]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        outs.append(out)
    digests = [line.split("params digest ")[1].split(";")[0]
               for out in outs for line in out.splitlines() if "params digest" in line]
    assert len(digests) == 2 and digests[0] == digests[1]
    import json
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["devices"] == 2
    assert summary["params_digest"].startswith(digests[0])
    single = run_launch(tmp_path / "single", *FLAGS,
                        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert single.returncode == 0
    a, _ = load_variables(tmp_path / "run")
    b, _ = load_variables(tmp_path / "single")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=2e-5)
