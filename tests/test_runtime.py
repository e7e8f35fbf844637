"""The XLA flags our entry points add before JAX starts (hybrenet_jax.runtime)."""

from __future__ import annotations

import pytest

from hybrenet_jax import runtime
from hybrenet_jax.runtime import EIGEN_CONVOLUTIONS, OPT_OUT, configure_xla


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


@pytest.mark.parametrize("version", [None, (0, 9), (0, 11), (1, 0)])
def test_unknown_jaxlib_gets_no_flag(monkeypatch, version):
    # XLA aborts the process on a flag it does not know: only versions known to have it
    monkeypatch.setattr(runtime, "_jaxlib_version", lambda: version)
    env: dict[str, str] = {}
    assert not configure_xla(env) and env == {}


def test_started_backend_is_left_alone(monkeypatch):
    monkeypatch.setattr(runtime, "_backend_started", lambda: True)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv(OPT_OUT, raising=False)
    assert not configure_xla()
    import os
    assert "XLA_FLAGS" not in os.environ


def test_installed_jaxlib_is_one_the_flag_is_known_for(monkeypatch):
    monkeypatch.undo()  # the real version, not the fixture's
    assert runtime._jaxlib_version() is not None
    assert runtime._FLAG_JAXLIB[0] <= runtime._jaxlib_version() < runtime._FLAG_JAXLIB[1], (
        "jaxlib moved past the versions hybrenet_jax.runtime knows: check that "
        f"{EIGEN_CONVOLUTIONS} still exists and still helps (docs/benchmarks.md), then widen")


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
