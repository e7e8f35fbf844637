"""The XLA flags our entry points add before JAX starts (hybrenet_jax.runtime)."""

from __future__ import annotations

import pytest

from hybrenet_jax import runtime
from hybrenet_jax.runtime import (DETERMINISM_OPT_OUT, DETERMINISTIC_GPU, EIGEN_CONVOLUTIONS, OPT_OUT,
                                  configure_xla)


@pytest.fixture(autouse=True)
def _known_jaxlib(monkeypatch):
    monkeypatch.setattr(runtime, "_jaxlib_version", lambda: (0, 10))
    monkeypatch.setattr(runtime, "_accelerator_plugin_installed", lambda: False)


def test_flag_is_appended_to_the_users_flags():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert configure_xla(env)
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {EIGEN_CONVOLUTIONS}"
    assert not configure_xla(env)  # idempotent
    assert env["XLA_FLAGS"].count("ynn_fusion_type") == 1


def test_flag_is_added_to_an_empty_environment():
    env: dict[str, str] = {}
    assert configure_xla(env) and env["XLA_FLAGS"] == EIGEN_CONVOLUTIONS


@pytest.mark.parametrize("value", ["0", "false", "OFF", "no"])
def test_opt_out_leaves_flags_alone(value):
    env = {OPT_OUT: value, "XLA_FLAGS": "--a"}
    assert not configure_xla(env) and env == {OPT_OUT: value, "XLA_FLAGS": "--a"}


def test_users_own_ynn_setting_wins():
    env = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}
    assert not configure_xla(env)
    assert env["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type="


@pytest.mark.parametrize("version", [(0, 10), (0, 11), (0, 12)])
def test_flag_on_every_jaxlib_it_was_measured_to_help(monkeypatch, version):
    # measured with python -m bench.xla_flag_check (docs/benchmarks.md)
    monkeypatch.setattr(runtime, "_jaxlib_version", lambda: version)
    env: dict[str, str] = {}
    assert configure_xla(env) and env["XLA_FLAGS"] == EIGEN_CONVOLUTIONS


@pytest.mark.parametrize("version", [None, (0, 9), (0, 13), (1, 0), (1, 12)])
def test_unknown_jaxlib_gets_no_flag(monkeypatch, version):
    # XLA aborts the process on a flag it does not know: only versions known to have it
    monkeypatch.setattr(runtime, "_jaxlib_version", lambda: version)
    env: dict[str, str] = {}
    assert not configure_xla(env) and env == {}


@pytest.mark.parametrize("text, version", [
    ("0.10.2", (0, 10)), ("0.12.0.1", (0, 12)), ("0.11.2.dev20261101", (0, 11)), ("x.y", None),
])
def test_jaxlib_version_is_read_from_the_installed_distribution(monkeypatch, text, version):
    monkeypatch.undo()  # the real reader, over a fake installed version
    monkeypatch.setattr(runtime.importlib.metadata, "version", lambda name: text)
    assert runtime._jaxlib_version() == version


def test_no_jaxlib_installed_gets_no_flag(monkeypatch):
    monkeypatch.undo()

    def missing(name):
        raise runtime.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(runtime.importlib.metadata, "version", missing)
    monkeypatch.setattr(runtime, "_accelerator_plugin_installed", lambda: False)
    assert runtime._jaxlib_version() is None
    env: dict[str, str] = {}
    assert not configure_xla(env) and env == {}


def test_started_backend_is_left_alone(monkeypatch):
    monkeypatch.setattr(runtime, "_backend_started", lambda: True)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv(OPT_OUT, raising=False)
    assert not configure_xla()
    import os
    assert "XLA_FLAGS" not in os.environ


@pytest.mark.parametrize("platforms, plugin, added", [
    ("", False, True),          # a CPU-only install
    ("", True, False),          # a GPU/TPU install: JAX will pick the accelerator
    ("cpu", True, True),        # ... unless the user forces the CPU
    ("cuda", False, False),
    ("tpu,cpu", False, True),
    ("CUDA", True, False),
])
def test_flag_only_where_jax_runs_on_the_cpu(monkeypatch, platforms, plugin, added):
    monkeypatch.setattr(runtime, "_accelerator_plugin_installed", lambda: plugin)
    env = {"JAX_PLATFORMS": platforms} if platforms else {}
    env[DETERMINISM_OPT_OUT] = "0"  # the GPU's flag is tested below
    assert configure_xla(env) is added
    assert (EIGEN_CONVOLUTIONS in env.get("XLA_FLAGS", "")) is added


@pytest.mark.parametrize("names, found", [
    (["numpy", "jax", "jaxlib"], False),
    (["jax", "jax-cuda12-plugin", "jax-cuda12-pjrt"], True),
    (["jax", "libtpu"], True),
    (["jax", "jax_rocm60_plugin"], True),
])
def test_accelerator_plugins_are_recognised(monkeypatch, names, found):
    class Dist:
        def __init__(self, name):
            self.metadata = {"Name": name}

    monkeypatch.undo()  # the real detector, over fake installed distributions
    monkeypatch.setattr(runtime.importlib.metadata, "distributions",
                        lambda: [Dist(n) for n in names])
    assert runtime._accelerator_plugin_installed() is found


@pytest.mark.parametrize("platforms, plugin", [("", True), ("cuda", False), ("tpu", False)])
@pytest.mark.parametrize("version", [(0, 10), (0, 11), (0, 12)])
def test_no_cpu_flag_on_gpu_or_tpu_on_any_jaxlib(monkeypatch, platforms, plugin, version):
    monkeypatch.setattr(runtime, "_jaxlib_version", lambda: version)
    monkeypatch.setattr(runtime, "_accelerator_plugin_installed", lambda: plugin)
    monkeypatch.setattr(runtime, "_gpu_plugin_installed", lambda: False)
    env = {"JAX_PLATFORMS": platforms} if platforms else {}
    configure_xla(env)
    assert EIGEN_CONVOLUTIONS not in env.get("XLA_FLAGS", "")


@pytest.mark.parametrize("platforms, gpu_plugin, added", [
    ("", True, True),        # a CUDA/ROCm install
    ("", False, False),      # CPU-only (or TPU) install
    ("cuda", False, True),
    ("gpu,cpu", False, True),
    ("tpu", True, False),    # the user forces another platform
    ("cpu", True, False),
])
def test_deterministic_kernels_where_jax_runs_on_a_gpu(monkeypatch, platforms, gpu_plugin,
                                                       added):
    monkeypatch.setattr(runtime, "_gpu_plugin_installed", lambda: gpu_plugin)
    monkeypatch.setattr(runtime, "_accelerator_plugin_installed", lambda: gpu_plugin)
    env = {"JAX_PLATFORMS": platforms} if platforms else {}
    configure_xla(env)
    assert (DETERMINISTIC_GPU in env.get("XLA_FLAGS", "")) is added


def test_deterministic_kernels_opt_out_and_user_setting(monkeypatch):
    monkeypatch.setattr(runtime, "_gpu_plugin_installed", lambda: True)
    env = {"JAX_PLATFORMS": "cuda", DETERMINISM_OPT_OUT: "0"}
    assert not configure_xla(env) and "XLA_FLAGS" not in env
    env = {"JAX_PLATFORMS": "cuda", "XLA_FLAGS": "--xla_gpu_deterministic_ops=false"}
    assert not configure_xla(env)
    assert env["XLA_FLAGS"] == "--xla_gpu_deterministic_ops=false"  # the user's choice stays
    env = {"JAX_PLATFORMS": "cuda", "XLA_FLAGS": "--xla_gpu_autotune_level=0"}
    assert configure_xla(env)
    assert env["XLA_FLAGS"] == f"--xla_gpu_autotune_level=0 {DETERMINISTIC_GPU}"
    env = {"JAX_PLATFORMS": "cuda", OPT_OUT: "0"}  # opting out of all our defaults
    assert not configure_xla(env) and "XLA_FLAGS" not in env


def test_gpu_plugin_detection_ignores_tpu(monkeypatch):
    class Dist:
        def __init__(self, name):
            self.metadata = {"Name": name}

    monkeypatch.setattr(runtime.importlib.metadata, "distributions",
                        lambda: [Dist("jax"), Dist("libtpu")])
    assert not runtime._gpu_plugin_installed()
    monkeypatch.setattr(runtime.importlib.metadata, "distributions",
                        lambda: [Dist("jax"), Dist("jax-cuda13-plugin")])
    assert runtime._gpu_plugin_installed()


@pytest.mark.parametrize("version", [(0, 10), (0, 12)])
def test_opt_out_wins_on_every_jaxlib(monkeypatch, version):
    monkeypatch.setattr(runtime, "_jaxlib_version", lambda: version)
    env = {OPT_OUT: "0", "JAX_PLATFORMS": "cpu"}
    assert not configure_xla(env) and "XLA_FLAGS" not in env


# -- the benchmark that decides _FLAG_JAXLIB (bench/xla_flag_check.py): its logic, no timing --
def test_flag_check_times_the_flag_against_no_defaults():
    from bench.xla_flag_check import setting_env

    with_flag, without = setting_env("flag", "--a"), setting_env("no_flag", "--a")
    assert with_flag == {"JAX_PLATFORMS": "cpu", OPT_OUT: "0",
                         "XLA_FLAGS": f"--a {EIGEN_CONVOLUTIONS}"}
    assert without == {"JAX_PLATFORMS": "cpu", OPT_OUT: "0", "XLA_FLAGS": "--a"}
    for env in (with_flag, without):  # the worker's configure_xla adds nothing to either
        flags = env["XLA_FLAGS"]
        assert not configure_xla(env) and env["XLA_FLAGS"] == flags


@pytest.mark.parametrize("adds, rejected, speedups, ok, hint", [
    (True, False, [1.9, 2.4], True, "adds it"),
    (True, False, [1.1, 1.3], True, "below the 1.2x bar"),   # helps a little: fine
    (False, False, [1.1], True, "leaves it off"),            # ... either way
    (False, False, [0.9], True, "leaves it off"),
    (False, True, [None], True, "rejects"),
    (False, False, [1.5], False, "add (0, 10) to _FLAG_JAXLIB"),
    (True, False, [1.5, 0.95], False, "take this version out"),
    (True, True, [None], False, "remove this version"),
    (True, False, [None], False, "a worker failed"),
])
def test_flag_check_verdict(adds, rejected, speedups, ok, hint):
    from bench.xla_flag_check import verdict

    result, message = verdict(adds, rejected, speedups, min_speedup=1.2)
    assert result is ok and hint in message


def test_flag_check_follows_the_runtime(monkeypatch):
    from bench import xla_flag_check

    assert xla_flag_check.runtime_adds_flag()  # the fixture: jaxlib 0.10 on the CPU
    monkeypatch.setattr(runtime, "_jaxlib_version", lambda: (0, 13))
    assert not xla_flag_check.runtime_adds_flag()
