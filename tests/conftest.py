"""Shared test helpers."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # configs/ and launch/ are importable from the repo root
    sys.path.insert(0, str(ROOT))

from hybrenet_jax.runtime import configure_xla  # noqa: E402

configure_xla()  # in-process tests run with the XLA flags our entry points use


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_config(**overrides):
    """The default digits config shrunk for tests (tiny model, few steps, quiet)."""
    from configs.default import get_config

    config = get_config()
    config.model = "hrn-2x2x2x:m=4"
    config.batch_size = 32
    config.total_steps = 4
    config.progress = False
    config.tensorboard = False
    config.async_checkpointing = False
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return config


def sgd_step_setup(spec):
    """``(mesh, initial state, jitted train step)`` of ``spec``'s model: SGD, lr 0.05 cosine
    over 10 steps, one device mesh (for tests that run a few steps by hand)."""
    import jax
    import jax.numpy as jnp

    from hybrenet_jax.models import build_model, input_shape
    from hybrenet_jax.train.setup import make_mesh
    from hybrenet_jax.train.state import create_state, learning_rate_schedule, make_optimizer
    from hybrenet_jax.train.steps import LossConfig, make_train_step, replicated

    model = build_model(spec)
    schedule = learning_rate_schedule(0.05, 10)
    opt = make_optimizer(schedule, 0.9, 5e-4)
    mesh = make_mesh()
    state = jax.jit(lambda r: create_state(model.init(r, jnp.zeros(input_shape(spec, 1))), opt),
                    out_shardings=replicated(mesh))(jax.random.PRNGKey(0))
    return mesh, state, make_train_step(model, opt, schedule, LossConfig(), mesh)


class FakeTrainer:
    """Stands in for training (:func:`install_trainer`): records each run, writes a finished
    run (``summary.json``, an empty ``checkpoints/``); ``accuracy(config)`` gives its test
    accuracy, ``during(workdir)`` looks at the workdir while it "trains", and ``fail_on=n``
    makes the n-th run a Ctrl-C."""

    def __init__(self, accuracy=lambda config: 0.5, fail_on: int | None = None, during=None,
                 epochs=lambda config: 0.1):
        self.accuracy = accuracy
        self.fail_on = fail_on
        self.during = during
        self.epochs = epochs
        self.calls: list[tuple[str, str, str]] = []  # (model, distillation, workdir)
        self.configs: list = []

    def __call__(self, config, workdir):
        import json

        self.calls.append((config.model, config.distill.kind, str(workdir)))
        self.configs.append(config)
        if self.during:
            self.during(pathlib.Path(workdir))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise KeyboardInterrupt("simulated interruption")
        workdir = pathlib.Path(workdir)
        (workdir / "checkpoints").mkdir(parents=True, exist_ok=True)
        accuracy = self.accuracy(config)
        summary = {"model": config.model, "dataset": config.dataset,
                   "distill": config.distill.kind, "test_accuracy": accuracy,
                   "best_accuracy": accuracy, "steps": 2, "epochs": self.epochs(config),
                   "wall_seconds": 0.01}
        (workdir / "summary.json").write_text(json.dumps(summary))
        return summary


def install_trainer(monkeypatch, trainer):
    """Stand ``trainer(config, workdir)`` in for training: single runs and populations (whose
    members it trains one after the other, as the pipelines pack them)."""
    from hybrenet_jax.train import loop

    monkeypatch.setattr(loop, "train_and_evaluate", trainer)
    monkeypatch.setattr(loop, "train_population",
                        lambda runs: [trainer(config, workdir) for config, workdir in runs])
    return trainer


def finish_processes(procs, timeout=900) -> list[tuple[int, str, str]]:
    """(returncode, stdout, stderr) of every process, in order; all are killed if one
    outlives the shared ``timeout``."""
    import time

    out = []
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=max(1, deadline - time.monotonic()))
        except Exception:
            for p in procs:
                p.kill()
            raise
        out.append((proc.returncode, stdout, stderr))
    return out


def run_launch(workdir, *flags, env=None, timeout=600, **popen):
    """Run ``python -m launch.train`` on the default config in a subprocess."""
    cmd = [sys.executable, "-m", "launch.train", "--config", str(ROOT / "configs/default.py"),
           f"--workdir={workdir}", "--config.progress=false", "--config.tensorboard=false",
           *flags]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    if popen:
        return subprocess.Popen(cmd, env=full_env, cwd=ROOT, **popen)
    return subprocess.run(cmd, env=full_env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache(tmp_path_factory):
    """Share XLA compilations across tests and their subprocesses (a temp dir per session).

    Many tests train the same tiny network; compiling it once instead of in every test and
    subprocess keeps the suite within CI's budget. Cached executables are the same programs,
    so results (and bit-identity checks) are unchanged.
    """
    import jax

    cache = str(tmp_path_factory.mktemp("xla_cache"))
    os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield
