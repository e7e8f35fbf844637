"""A full disk is one line, last, naming what failed (issue #24, class 6).

The real thing: a workdir on a tmpfs of a few MiB (root may mount one, as CI's container
does), where Orbax's asynchronous savers fail in background threads and asyncio tasks. Was:
4-90 tracebacks (up to 896 stderr lines), the one-line error buried among them, sometimes
naming the save after the one that failed.
"""

from __future__ import annotations

import errno
import json
import logging
import subprocess
import threading

import pytest

from conftest import run_launch
from hybrenet_jax.train.checkpoint import quiet_disk_full_noise


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.strip()[:80]})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_mid_run_is_one_last_line_and_a_rerun_with_space_loses_nothing(
        small_disk):
    workdir = small_disk / "run"
    flags = ("--config.total_steps=40", "--config.checkpoint_every_steps=4",
             "--config.eval_every_steps=4", "--config.checkpoint_keep=5")
    full = run_launch(workdir, *flags)
    assert full.returncode == 2
    lines = [ln for ln in full.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in full.stderr and len(lines) <= 3, full.stderr[-3000:]
    last = lines[-1]
    assert last.startswith("launch.train: error: writing ") and "the disk is full" in last
    # the save it names is one that is not on disk (not a later one than the failure)
    step = int(last.split(" step ")[1].split()[0])
    kind = "best" if "best checkpoint" in last else "checkpoints"
    assert not (workdir / kind / str(step) / "hybrenet_manifest.json").exists()
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = run_launch(workdir, *flags)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["steps"] == 40
    train_steps = [json.loads(ln)["step"] for ln in (workdir / "metrics.jsonl").read_text()
                   .splitlines() if json.loads(ln)["split"] == "train"]
    assert train_steps == sorted(set(train_steps))  # nothing logged twice


def test_background_disk_full_noise_is_dropped_and_other_records_kept(caplog):
    quiet_disk_full_noise()  # a run starts: nothing reported yet
    quiet_disk_full_noise()  # idempotent
    full = OSError(errno.ENOSPC, "No space left on device")
    with caplog.at_level(logging.ERROR):
        for name in ("asyncio", "absl"):
            try:
                raise ValueError("RESOURCE_EXHAUSTED: Error writing local file") from full
            except ValueError:
                logging.getLogger(name).exception("Task exception was never retrieved")
        logging.getLogger("absl").error("_SignalingThread.run() raised an exception: "
                                        "[Errno 28] No space left on device")
        logging.getLogger("asyncio").error("an unrelated failure")
    assert [r.getMessage() for r in caplog.records] == ["an unrelated failure"]
    seen = []
    before = threading.excepthook
    try:
        threading.excepthook = lambda args: seen.append(args.exc_type)
        quiet_disk_full_noise()  # wraps the hook now installed
        for exc in (full, RuntimeError("other")):
            def fail(exc=exc):
                raise exc
            thread = threading.Thread(target=fail)
            thread.start()
            thread.join()
    finally:
        threading.excepthook = before
    assert seen == [RuntimeError]


def test_once_a_full_disk_is_reported_the_savers_stay_quiet(caplog):
    """After the one line (a save failed on a full disk), what the failed save's threads and
    tasks say next (asyncio's "Event loop is closed", never-awaited coroutines) is dropped."""
    from hybrenet_jax.train import checkpoint

    quiet_disk_full_noise()
    error = checkpoint._write_error(OSError(errno.ENOSPC, "No space left on device"),
                                    "checkpoint step 4 to W", 2)
    assert "the disk is full" in str(error) and "step 2" in str(error)
    seen = []
    before = threading.excepthook
    try:
        threading.excepthook = lambda args: seen.append(args.exc_type)
        quiet_disk_full_noise()
        checkpoint._write_error(OSError(errno.ENOSPC, "full"), "x", 2)
        with caplog.at_level(logging.ERROR):
            logging.getLogger("asyncio").error("Exception in callback: Event loop is closed")

        def fail():
            raise RuntimeError("Event loop is closed")
        thread = threading.Thread(target=fail)
        thread.start()
        thread.join()
    finally:
        threading.excepthook = before
        quiet_disk_full_noise()  # the next run starts quiet-free
    assert seen == [] and not caplog.records
    assert checkpoint._DISK_FULL_REPORTED is False


def test_an_export_that_fails_on_a_full_disk_leaves_the_earlier_export_intact(tmp_path,
                                                                              monkeypatch):
    """The hostile pass: a full disk left a truncated zip / empty .onnx where the earlier
    export was. Every output file is written through a temporary sibling and a rename."""
    import pathlib

    import onnx
    from onnx import helper

    from hybrenet_jax.export.errors import ExportError
    from hybrenet_jax.export.onnx_export import save_onnx

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    model = helper.make_model(graph)
    out = tmp_path / "m.onnx"
    save_onnx(model, out)
    before = out.read_bytes()
    real = pathlib.Path.write_bytes

    def full(self, data):
        real(self, data[: len(data) // 2])  # half written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_bytes", full)
    with pytest.raises(ExportError, match="No space left"):
        save_onnx(model, out)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
