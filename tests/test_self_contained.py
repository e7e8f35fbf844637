"""The package carries its own facts: it works from a copy with nothing beside it (#14)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from conftest import ROOT

IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def _lonely_copy(tmp_path):
    """hybrenet_jax/, configs/ and pyproject.toml copied into an otherwise empty tree."""
    repo = tmp_path / "alone" / "repo"
    repo.mkdir(parents=True)
    for name in ("hybrenet_jax", "configs"):
        shutil.copytree(ROOT / name, repo / name, ignore=IGNORE)
    shutil.copy(ROOT / "pyproject.toml", repo)
    assert sorted(p.name for p in repo.parent.iterdir()) == ["repo"]  # no ../shared here
    return repo


def _run(repo, *args):
    env = {**os.environ, "PYTHONPATH": str(repo), "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300)


def test_pareto_and_calibration_check_from_a_lonely_copy(tmp_path):
    repo = _lonely_copy(tmp_path)
    where = _run(repo, "-c", "import hybrenet_jax; print(hybrenet_jax.__file__)")
    assert where.stdout.strip().startswith(str(repo)), where.stdout + where.stderr

    report = _run(repo, "-m", "hybrenet_jax", "pareto", "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "report" / "pareto.md").read_text()
    assert "HybReNet" in text and "SNL" in text  # the published points were read

    check = _run(repo, "-m", "hybrenet_jax.cost.calibrate", "--check")
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_built_wheel_carries_every_reference_file(tmp_path):
    """The wheel setuptools builds from pyproject.toml (in-process: no network, no build
    isolation) holds every file of reference_data/ and the calibration, byte for byte."""
    import zipfile

    from hybrenet_jax import reference_data

    repo = _lonely_copy(tmp_path)
    shutil.copy(ROOT / "README.md", repo)  # pyproject's readme
    dist = tmp_path / "dist"
    built = _run(repo, "-c", "import sys; from setuptools import build_meta as b; "
                             f"print(b.build_wheel({str(dist)!r}))")
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = dist / built.stdout.strip().splitlines()[-1]
    package = ROOT / "hybrenet_jax"
    wanted = [p for p in reference_data.DATA_DIR.rglob("*")
              if p.is_file() and p.suffix not in (".pyc", ".py")]
    wanted.append(package / "cost" / "calibration.json")
    assert len(wanted) >= 5
    with zipfile.ZipFile(wheel) as zipped:
        for path in wanted:
            name = path.relative_to(ROOT).as_posix()
            assert zipped.read(name) == path.read_bytes(), name
