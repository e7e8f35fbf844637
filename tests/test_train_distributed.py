"""The same training code on 1 device, 8 simulated devices and 2 or 4 processes on 127.0.0.1.

Multi-process runs use gloo over 127.0.0.1 with 2 simulated CPU devices per process; they
share the machine's cores, so the model is tiny and the runs short.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import numpy as np
import pytest

import jax
from conftest import finish_processes, free_port, run_launch
from hybrenet_jax.runtime import EIGEN_CONVOLUTIONS
from hybrenet_jax.train.checkpoint import load_variables

FLAGS = ["--config.model=hrn-2x2x2x:m=4", "--config.batch_size=32", "--config.total_steps=4",
         "--config.eval_every_steps=4", "--config.async_checkpointing=false"]
#: multi-process runs: 30 steps, checkpoints every 10 (preemption is agreed every 10 steps)
STEPS = 30
MP_FLAGS = ["--config.model=hrn-2x2x2x:m=4", "--config.batch_size=32",
            f"--config.total_steps={STEPS}", f"--config.eval_every_steps={STEPS}",
            "--config.checkpoint_every_steps=10", "--config.log_every_steps=1",
            "--config.async_checkpointing=false", "--config.data_workers=1"]
DEVICES_PER_PROCESS = 2


def _final_train_loss(workdir):
    lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [l["loss"] for l in lines if l["split"] == "train"][-1]


def _assert_close(a_dir, b_dir):
    a, _ = load_variables(a_dir)
    b, _ = load_variables(b_dir)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=2e-5)


#: 8 devices vs 1: two sharded updates. The programs differ in their reduction order, so the
#: results differ in float32 rounding (~1e-8 after 2 steps on an AMD EPYC); in this tiny
#: network on 32 digits a step or two later that rounding is amplified past any tolerance
#: (1e-5 -> 5e-4 by step 4 on that CPU), which would measure chaos, not sharding.
SHARDED = [*FLAGS, "--config.total_steps=2", "--config.eval_every_steps=2"]


@pytest.mark.slow
def test_eight_simulated_devices_match_one_device(tmp_path):
    one = run_launch(tmp_path / "one", *SHARDED)
    assert one.returncode == 0, one.stderr[-2000:]
    eight = run_launch(tmp_path / "eight", *SHARDED,
                       env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert eight.returncode == 0, eight.stderr[-2000:]
    summary = json.loads((tmp_path / "eight" / "summary.json").read_text())
    assert summary["devices"] == 8
    # launch.train adds hybrenet_jax.runtime's flag to the user's XLA_FLAGS, keeping theirs
    assert summary["xla_flags"].split() == ["--xla_force_host_platform_device_count=8",
                                            EIGEN_CONVOLUTIONS]
    _assert_close(tmp_path / "one", tmp_path / "eight")
    assert _final_train_loss(tmp_path / "eight") == pytest.approx(
        _final_train_loss(tmp_path / "one"), rel=1e-4)


def _start(workdir, n: int, *flags: str):
    """``n`` processes of one run on 127.0.0.1, each with 2 simulated CPU devices."""
    port = free_port()
    env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES_PER_PROCESS}",
           "JAX_PLATFORMS": "cpu"}
    return [run_launch(workdir, *flags, f"--coordinator_address=127.0.0.1:{port}",
                       f"--num_processes={n}", f"--process_id={i}", env=env,
                       stdout=-1, stderr=-1, text=True) for i in range(n)]


def _digest(stdout: str) -> str:
    return next(line.split("params digest ")[1].split(";")[0]
                for line in stdout.splitlines() if "params digest" in line)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """An uninterrupted run of 2 processes x 2 devices (the reference of several tests)."""
    workdir = tmp_path_factory.mktemp("mp") / "run"
    results = finish_processes(_start(workdir, 2, *MP_FLAGS))
    for code, _, err in results:
        assert code == 0, err[-3000:]
    digests = {_digest(out) for _, out, _ in results}
    assert len(digests) == 1  # every process ends with the same parameters
    return workdir, digests.pop()


@pytest.mark.slow
def test_two_and_four_processes_equal_one_process(two_process_run, tmp_path):
    workdir, digest = two_process_run
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["devices"] == 4
    assert summary["params_digest"].startswith(digest)
    # metrics are written once (process 0), one record per step
    train_steps = [json.loads(l)["step"] for l in (workdir / "metrics.jsonl").read_text()
                   .splitlines() if json.loads(l)["split"] == "train"]
    assert train_steps == list(range(1, STEPS + 1))

    # 4 steps: this tiny network amplifies float rounding (reductions over other device
    # splits) into visible differences after about 6 steps; resume tests compare bit for bit
    single = run_launch(tmp_path / "single", *FLAGS)
    assert single.returncode == 0, single.stderr[-2000:]
    for n in (2, 4):
        results = finish_processes(_start(tmp_path / f"p{n}", n, *FLAGS))
        for code, _, err in results:
            assert code == 0, err[-3000:]
        assert len({_digest(out) for _, out, _ in results}) == 1
        summary = json.loads((tmp_path / f"p{n}" / "summary.json").read_text())
        assert (summary["processes"], summary["devices"]) == (n, n * DEVICES_PER_PROCESS)
        _assert_close(tmp_path / "single", tmp_path / f"p{n}")
        assert _final_train_loss(tmp_path / f"p{n}") == pytest.approx(
            _final_train_loss(tmp_path / "single"), rel=1e-4)


def _wait_for_training(workdir, procs, timeout=600):
    """Until process 0 has logged a training step (the signal handlers are installed)."""
    deadline = time.monotonic() + timeout
    metrics = workdir / "metrics.jsonl"
    while time.monotonic() < deadline:
        if metrics.exists() and '"train"' in metrics.read_text():
            return
        assert all(p.poll() is None for p in procs), "a process ended before training"
        time.sleep(0.05)
    raise AssertionError("training did not start")


@pytest.mark.slow
def test_sigterm_to_one_process_stops_all_at_one_step_and_resumes_bit_identically(
        two_process_run, tmp_path):
    reference, digest = two_process_run
    workdir = tmp_path / "run"
    procs = _start(workdir, 2, *MP_FLAGS)
    _wait_for_training(workdir, procs)
    procs[1].send_signal(signal.SIGTERM)  # only one process is told
    results = finish_processes(procs)
    steps = set()
    for code, out, err in results:
        assert code == 0, err[-3000:]
        line = next(l for l in out.splitlines() if l.startswith("preempted at step"))
        steps.add(int(line.split()[3]))
    assert len(steps) == 1, steps  # both stopped at the same, agreed step
    step = steps.pop()
    assert step % 10 == 0 and 0 < step < STEPS
    assert str(step) in os.listdir(workdir / "checkpoints")
    assert not (workdir / "summary.json").exists()

    resumed = finish_processes(_start(workdir, 2, *MP_FLAGS))
    for code, out, err in resumed:
        assert code == 0, err[-3000:]
        assert _digest(out) == digest  # bit-identical to the uninterrupted run
    records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r["step"] for r in records if r["split"] == "train"]
    assert train == list(range(1, STEPS + 1))  # no step logged twice across the resume


@pytest.mark.slow
def test_corrupt_newest_checkpoint_is_quarantined_once_by_several_processes(
        two_process_run, tmp_path):
    reference, digest = two_process_run
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    newest = workdir / "checkpoints" / str(STEPS)
    victim = max((p for p in newest.rglob("*") if p.is_file() and p.name != "_sharding"),
                 key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the manifest catches it
    victim.write_bytes(bytes(data))

    # process 0 cannot move it aside (a file holds the name corrupt): every process stops
    # with the same line, none waits at a barrier, nothing is moved
    (workdir / "corrupt").write_text("not a folder")
    failed = finish_processes(_start(workdir, 2, *MP_FLAGS), timeout=300)
    lines = []
    for code, _, err in failed:
        errors = [l for l in err.splitlines() if l.startswith("launch.train: error:")]
        assert code == 2 and len(errors) == 1, err[-3000:]
        assert "could not move the unusable checkpoint" in errors[0] and "Traceback" not in err
        lines.append(errors[0])
    assert lines[0] == lines[1] and newest.is_dir()
    (workdir / "corrupt").unlink()

    results = finish_processes(_start(workdir, 2, *MP_FLAGS))
    for code, out, err in results:
        assert code == 0, err[-3000:]
        assert _digest(out) == digest  # retrained from step 20 to the same parameters
    moved = os.listdir(workdir / "corrupt")
    assert len(moved) == 1 and moved[0].startswith(f"{STEPS}-"), moved
    assert (workdir / "checkpoints" / str(STEPS) / "hybrenet_manifest.json").is_file()


@pytest.mark.slow
def test_a_refusal_of_process_0_stops_every_process_with_the_same_line(tmp_path):
    from hybrenet_jax.train.workdir_lock import WorkdirLock

    workdir = tmp_path / "run"
    workdir.mkdir()
    with WorkdirLock(workdir):  # another run holds the workdir: only process 0 sees it
        start = time.monotonic()
        results = finish_processes(_start(workdir, 2, *MP_FLAGS), timeout=300)
    assert time.monotonic() - start < 240
    lines = []
    for code, out, err in results:
        assert code == 2, err[-3000:]
        errors = [l for l in err.splitlines() if l.startswith("launch.train: error:")]
        assert len(errors) == 1 and "is in use by another run" in errors[0], err[-2000:]
        assert "Traceback" not in err
        lines.append(errors[0])
    assert lines[0] == lines[1]
    assert sorted(os.listdir(workdir)) == ["run.lock"]  # nothing else was written


@pytest.mark.slow
def test_a_file_url_workdir_trains_resumes_and_exports_end_to_end(tmp_path):
    folder = tmp_path / "cloud" / "run"
    url = f"file://{folder}"
    first = run_launch(url, *FLAGS[:2], "--config.total_steps=2", *FLAGS[3:])
    assert first.returncode == 0, first.stderr[-2000:]
    second = run_launch(url, *FLAGS)  # extends the run: resumes from step 2 through the URL
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"summary in {url}/summary.json" in second.stdout
    assert not (tmp_path / "file:").exists()  # no local folder named after the scheme
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["steps"] == 4
    assert sorted(os.listdir(folder / "checkpoints")) == ["2", "4"]
    steps = [json.loads(l)["step"] for l in (folder / "metrics.jsonl").read_text().splitlines()
             if json.loads(l)["split"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 4
    variables, meta = load_variables(url)  # readers take the URL too
    assert meta["step"] == 4
    reference = run_launch(tmp_path / "plain", *FLAGS)
    assert reference.returncode == 0
    assert _digest(second.stdout) == _digest(reference.stdout)  # resume is bit-identical
