"""Processes that disagree are noticed at start (issue #24, class 3): a different config
(all of it, but the per-process fields) or workdirs that are not one shared folder end every
process with the same line, exit 2, before any collective or checkpoint."""

from __future__ import annotations

import time

import pytest

from conftest import finish_processes, free_port, run_launch

FLAGS = ["--config.model=hrn-2x2x2x:m=4", "--config.batch_size=32", "--config.total_steps=4",
         "--config.eval_every_steps=4", "--config.async_checkpointing=false",
         "--config.data_workers=1"]


def _two(workdirs, flags_per_process, timeout=300):
    """Two processes of one run on 127.0.0.1: (returncode, stderr) each."""
    port = free_port()
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}
    procs = [run_launch(workdirs[i], *FLAGS, *flags_per_process[i],
                        f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                        f"--process_id={i}", env=env, stdout=-1, stderr=-1, text=True)
             for i in range(2)]
    return [(code, err) for code, _, err in finish_processes(procs, timeout)]


def _one_agreed_line(results) -> str:
    lines = []
    for code, err in results:
        assert code == 2, err[-3000:]
        assert "Traceback" not in err and "SIGABRT" not in err
        errors = [ln for ln in err.splitlines() if ln.startswith("launch.train: error:")]
        assert len(errors) == 1, err[-2000:]
        lines.append(errors[0])
    assert lines[0] == lines[1]
    return lines[0]


@pytest.mark.slow
def test_processes_with_different_hyperparameters_or_models_are_refused(tmp_path):
    """Another learning rate used to train on with diverging "replicated" parameters (exit 0);
    another model aborted both processes inside gloo."""
    workdir = tmp_path / "run"
    start = time.monotonic()
    line = _one_agreed_line(_two([workdir, workdir], [["--config.learning_rate=0.05"],
                                                      ["--config.learning_rate=0.2",
                                                       "--config.model=hrn-2x2x2x:m=8"]]))
    assert time.monotonic() - start < 120
    assert "different configs" in line and "learning_rate: 0.05, 0.2" in line
    assert "model: 'hrn-2x2x2x:m=4', 'hrn-2x2x2x:m=8'" in line
    assert not workdir.exists()  # refused before the workdir was made


@pytest.mark.slow
def test_per_process_fields_may_differ_and_node_local_workdirs_are_refused(tmp_path):
    """Workdirs that are not one folder (node-local paths) used to hang in the first
    checkpoint; data_workers/prefetch/progress are each process's own business."""
    a, b = tmp_path / "node0" / "run", tmp_path / "node1" / "run"
    line = _one_agreed_line(_two([a, b], [["--config.data_workers=1"],
                                          ["--config.data_workers=2", "--config.prefetch=3"]]))
    assert "is not one folder for every process: process 1 does not see the file" in line
    assert not (a / "checkpoints").exists() and not (b / "checkpoints").exists()
