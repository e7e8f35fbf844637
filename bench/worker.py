"""One training step implementation kept alive in its own process (``python -m bench.worker``).

The parent (:mod:`bench.throughput`) starts one worker per implementation of a network
(ours, ours with variants, torch eager, torch.compile), so each has its own threads, XLA flags
and compiled state, and then *interleaves* timing rounds between them: on a shared, noisy
machine every implementation sees the same background load.

Protocol (JSON lines, the worker's stdout lines start with ``@@bench ``):

* the worker builds the step, runs the first (compiling) step and ``warmup`` more, then
  answers ``{"ready": true, "compile_seconds": ..., "warmup_seconds": [...], "params": ...}``
  or ``{"ready": false, "error": "..."}``;
* ``{"run": k}`` -> ``{"wall": [...], "cpu": [...], "loss": ...}`` (k timed steps);
* ``{"quit": true}`` or end of input -> exit.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import Any

PREFIX = "@@bench "


def _say(obj: dict) -> None:
    sys.stdout.write(PREFIX + json.dumps(obj) + "\n")
    sys.stdout.flush()


def _build(config: dict):
    impl = config["impl"]
    if impl == "ours":
        from hybrenet_jax.runtime import configure_xla

        configure_xla()  # the XLA flags launch.train and the CLI use (opt out: plain_xla)
        import jax

        from bench.ours import build_step

        if config.get("device") == "gpu" and jax.default_backend() not in ("gpu", "cuda", "rocm"):
            raise RuntimeError(f"--device gpu but JAX's backend is {jax.default_backend()!r}")
        step = build_step(config["network"], config["batch"], config.get("dtype", "float32"),
                          fast_conv=config.get("fast_conv", False), seed=config.get("seed", 0))
        return step, None
    if impl in ("torch-eager", "torch-compile"):
        import torch

        from bench.torch_reference import TorchStep, count_parameters
        from hybrenet_jax.model_string import spec_from_model_string

        if config.get("torch_threads"):
            torch.set_num_threads(int(config["torch_threads"]))
        spec = spec_from_model_string(config["network"])
        device = "cuda" if config.get("device") == "gpu" else "cpu"
        step = TorchStep(spec, config["batch"], compile=impl == "torch-compile", device=device,
                         dtype=config.get("dtype", "float32"), seed=config.get("seed", 0),
                         channels_last=config.get("channels_last", False))
        return step, count_parameters(step.model)
    raise ValueError(f"unknown implementation {impl!r}")


def serve(config: dict) -> int:
    """Worker main loop (see the module docstring)."""
    from bench.timing import timed_steps

    try:
        step, params = _build(config)
        start = time.perf_counter()
        step.run()
        compile_seconds = time.perf_counter() - start
        warm, _ = timed_steps(step.run, int(config.get("warmup", 2)))
    except Exception as err:  # noqa: BLE001 -- reported to the parent, which carries on
        detail = traceback.format_exception_only(type(err), err)[-1].strip()
        _say({"ready": False, "error": detail[:2000]})
        return 1
    extra = getattr(step, "extra", dict)
    peak = getattr(step, "peak_bytes", lambda: None)
    _say({"ready": True, "compile_seconds": compile_seconds, "warmup_seconds": warm,
          "extra": extra(), "peak_bytes": peak(),
          "params": params, "pid": os.getpid(), "torch_imported": "torch" in sys.modules})
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        if command.get("quit"):
            break
        walls, cpus = timed_steps(step.run, int(command["run"]))
        _say({"wall": walls, "cpu": cpus, "loss": step.loss(), "extra": extra(),
              "peak_bytes": peak()})
    return 0


class Worker:
    """Parent-side handle of one worker process."""

    def __init__(self, label: str, config: dict, env: dict[str, str] | None = None,
                 cwd: str | None = None):
        self.label = label
        self.config = config
        full_env = {**os.environ, **(env or {})}
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, full_env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", json.dumps(config)], cwd=cwd or root,
            env=full_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, bufsize=1, start_new_session=True)
        self._lines: queue.Queue = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                self._lines.put(json.loads(line[len(PREFIX):]))
        self._lines.put(None)

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            self._stderr.append(line)
            del self._stderr[:-40]

    def receive(self, timeout: float | None = None) -> dict:
        """The next message; a dead or silent worker becomes ``{"error": ...}``."""
        try:
            message = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            return {"ready": False, "error": f"no answer within {timeout:.0f} s (killed)"}
        if message is None:
            self.proc.wait()
            tail = "".join(self._stderr[-5:]).strip()
            return {"ready": False,
                    "error": f"worker exited with code {self.proc.returncode}: {tail[-1500:]}"}
        return message

    def send(self, command: dict) -> None:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def run(self, steps: int, timeout: float | None = None) -> dict:
        self.send({"run": steps})
        return self.receive(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"quit": True})
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()

    def pause(self) -> None:
        """SIGSTOP the worker and its children (a compile pool) while others are timed."""
        self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_group(signal.SIGCONT)

    def _signal_group(self, sig: int) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def kill(self) -> None:
        if self.proc.poll() is None:
            self._signal_group(signal.SIGKILL)  # its compile workers too
            self.proc.wait()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    config: dict[str, Any] = json.loads(argv[0])
    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
