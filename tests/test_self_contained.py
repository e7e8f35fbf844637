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


def test_package_data_is_declared_for_installs():
    """A wheel carries the reference files: pyproject's package-data names every one of them."""
    import fnmatch
    import tomllib

    from hybrenet_jax import reference_data

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]["hybrenet_jax"]
    package = ROOT / "hybrenet_jax"
    files = [p.relative_to(package).as_posix() for p in reference_data.DATA_DIR.rglob("*")
             if p.is_file() and p.suffix != ".pyc" and p.name != "__init__.py"]
    assert len(files) >= 4
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name
