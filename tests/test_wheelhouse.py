"""launch/wheelhouse.sh: arguments, resolved pins and the pip commands, without any network.

Every run gets a stand-in ``$PYTHON`` that refuses ``-m pip`` (dry runs) or only logs it (the
real path), and passes anything else (marker resolution, pyproject parsing) to this Python.
"""

from __future__ import annotations

import os
import pathlib
import shlex
import stat
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "launch" / "wheelhouse.sh"
PLATFORM = "manylinux_2_28_x86_64"


def _fake_python(tmp_path: pathlib.Path, allow_pip: bool) -> tuple[pathlib.Path, pathlib.Path]:
    log = tmp_path / "pip-calls.log"
    fake = tmp_path / "fake-python"
    on_pip = f'printf "%s\\n" "$*" >> {shlex.quote(str(log))}; exit 0' if allow_pip else (
        'echo "pip must not run here" >&2; exit 99')
    fake.write_text("#!/usr/bin/env bash\n"
                    f'if [ "${{1:-}}" = -m ] && [ "${{2:-}}" = pip ]; then {on_pip}; fi\n'
                    f'exec {shlex.quote(sys.executable)} "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return fake, log


def run(tmp_path: pathlib.Path, *args: str, allow_pip: bool = False
        ) -> tuple[subprocess.CompletedProcess, list[str]]:
    fake, log = _fake_python(tmp_path, allow_pip)
    env = {**os.environ, "PYTHON": str(fake), "PIP_NO_INDEX": "1"}
    result = subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


def resolved_pins(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, l in enumerate(lines) if "/requirements.txt (Python " in l)
    pins = []
    for line in lines[start + 1:]:
        if not line.startswith("#   "):
            break
        pins.append(line[4:])
    return pins


def commands(stdout: str) -> list[list[str]]:
    return [shlex.split(l) for l in stdout.splitlines() if l and not l.startswith("#")]


def _platforms(cmd: list[str]) -> list[str]:
    return [cmd[i + 1] for i, a in enumerate(cmd) if a == "--platform"]


def test_dry_run_prints_the_pins_and_commands_for_python_312(tmp_path):
    result, calls = run(tmp_path, "--dry-run", "3.12", PLATFORM, "wh")
    assert result.returncode == 0, result.stderr
    assert calls == [] and not (tmp_path / "wh").exists()  # nothing ran, nothing written
    pins = resolved_pins(result.stdout)
    for pin in ("jax[cpu]==0.12.0.1", "jaxlib==0.12.0.1", "flax==0.12.12", "numpy==2.5.5",
                "onnxruntime==1.32.0", "tensorflow-cpu==2.21.0", "optax==0.2.8"):
        assert pin in pins
    assert not any(";" in p or "0.10.2" in p for p in pins)
    mkdir, download, build, install = commands(result.stdout)
    assert mkdir == ["mkdir", "-p", "wh"]
    for cmd in (download, build):
        assert cmd[1:4] == ["-m", "pip", "download"]
        assert "--only-binary=:all:" in cmd
        assert cmd[cmd.index("--python-version") + 1] == "3.12"
        assert cmd[cmd.index("--implementation") + 1] == "cp"
        assert cmd[cmd.index("--dest") + 1] == "wh"
        platforms = _platforms(cmd)
        assert platforms[0] == PLATFORM and "manylinux_2_17_x86_64" in platforms
        assert "manylinux2014_x86_64" in platforms and "manylinux_2_29_x86_64" not in platforms
    assert download[-2:] == ["-r", "wh/requirements.txt"]
    assert build[-2:] == ["setuptools>=77", "wheel"]  # pyproject.toml's build-system
    assert " ".join(install).endswith(
        "pip install --no-index --find-links wh -r wh/requirements.txt -e .")


def test_python_311_gets_todays_pins(tmp_path):
    result, _ = run(tmp_path, "--dry-run", "3.11", PLATFORM, "wh")
    assert result.returncode == 0, result.stderr
    pins = resolved_pins(result.stdout)
    for pin in ("jax[cpu]==0.10.2", "jaxlib==0.10.2", "flax==0.12.8", "numpy==2.4.6",
                "onnxruntime==1.31.1"):
        assert pin in pins
    assert not any("0.12.0.1" in p for p in pins)
    # one pin per package, every one of them a line of requirements.txt
    names = [p.split("==")[0].split("[")[0] for p in pins]
    assert len(names) == len(set(names))
    text = (ROOT / "requirements.txt").read_text()
    assert all(p.replace("[cpu]", "") in text.replace("[cpu]", "") for p in pins)


def test_accelerator_and_no_tfds(tmp_path):
    result, _ = run(tmp_path, "--dry-run", "--jax", "cuda13", "--no-tfds", "3.12", PLATFORM)
    assert result.returncode == 0, result.stderr
    pins = resolved_pins(result.stdout)
    assert "jax[cuda13]==0.12.0.1" in pins and "jax[cpu]==0.12.0.1" not in pins
    assert not any(p.startswith("tensorflow") for p in pins)
    # default wheelhouse name carries the target
    assert commands(result.stdout)[0] == ["mkdir", "-p", f"wheelhouse-py3.12-{PLATFORM}"]


def test_other_platforms_are_passed_as_they_are(tmp_path):
    result, _ = run(tmp_path, "--dry-run", "--jax=cpu", "3.13", "macosx_14_0_arm64", "wh")
    assert result.returncode == 0, result.stderr
    assert _platforms(commands(result.stdout)[1]) == ["macosx_14_0_arm64"]


def test_real_run_writes_the_pins_and_runs_the_printed_commands(tmp_path):
    dry, _ = run(tmp_path, "--dry-run", "3.12", PLATFORM, "wh")
    result, calls = run(tmp_path, "3.12", PLATFORM, "wh", allow_pip=True)
    assert result.returncode == 0, result.stderr
    written = (tmp_path / "wh" / "requirements.txt").read_text().splitlines()
    assert written == resolved_pins(dry.stdout)
    printed = [cmd[1:] for cmd in commands(dry.stdout)[1:3]]
    assert [shlex.split(c) for c in calls] == printed
    assert result.stdout.strip().endswith(
        "pip install --no-index --find-links wh -r wh/requirements.txt -e .")


@pytest.mark.parametrize("args, message", [
    ([], "usage"),
    (["3.12"], "usage"),
    (["3.12", PLATFORM, "wh", "extra"], "usage"),
    (["--bogus", "3.12", PLATFORM], "unknown option --bogus"),
    (["--jax"], "usage"),
    (["--jax", "rocm", "3.12", PLATFORM], "--jax must be cpu, cuda12, cuda13 or tpu"),
    (["3", PLATFORM], "must look like 3.12"),
    (["py3.12", PLATFORM], "must look like 3.12"),
    (["3.10", PLATFORM], "needs Python >= 3.11"),
    (["3.12", "Linux x86"], "pip platform tag"),
])
def test_bad_arguments_exit_2_with_a_message(tmp_path, args, message):
    result, calls = run(tmp_path, "--dry-run", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert calls == [] and result.stdout == ""
