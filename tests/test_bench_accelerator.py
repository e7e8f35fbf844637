"""bench.accelerator: the GPU acceptance run, exercised on the CPU (``--cpu-smoke``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.accelerator import (Budget, checks, goals, groups, parse_args,
                               render_markdown)
from bench.peaks import peak_for
from bench.throughput import _parse_peak, parse_args as throughput_args, worker_env
from conftest import ROOT


def _run(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "bench.accelerator", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_cpu_smoke_runs_every_part_and_passes(tmp_path):
    done = _run("--cpu-smoke", "--out", str(tmp_path), "--quiet")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    data = json.loads((tmp_path / "accelerator.json").read_text())
    assert data["finished"] and data["mode"] == "cpu-smoke"
    assert data["checks"] == {"main_job": True, "resume_bit_identical": True,
                              "export_verify": True, "population_equals_single_runs": True,
                              "our_step_ran": True}
    assert [r["k"] for r in data["population"]["rows"]] == [1, 2]
    assert (tmp_path / "population.json").is_file()
    env = data["environment"]
    assert env["jax"]["backend"] == "cpu" and env["packages"]["jax"]
    job = data["main_job"]
    assert job["steps"] == 16 and job["backend"] == "cpu" and job["params_digest"]
    dur = data["durability"]
    for key in ("project_defaults", "xla_defaults"):  # the same kernels on the CPU
        assert dur[key]["killed_after_checkpoint"] >= dur["kill_after_checkpoint"]
        assert dur[key]["params_digest"] == dur[key]["reference_digest"]
    assert any(line.startswith("ok") and "onnxruntime" in line for line in data["export"]["checks"])
    rows = data["steps"]
    assert {(r["batch"], r["dtype"]) for r in rows} == {(8, "bfloat16"), (8, "float32")}
    for r in rows:
        assert r["ours_images_per_second"] > 0 and r["ours_compile_seconds"] > 0
        assert r["steps_timed"]["ours"] == 2
        assert r["torch_eager_images_per_second"] is None  # no torch in a smoke run
    assert data["pipeline"][0]["feed_images_per_second"] > 0
    markdown = (tmp_path / "accelerator.md").read_text()
    assert "## Training step (one device)" in markdown and "| main_job | yes |" in markdown
    assert (tmp_path / "main_job.log").exists()


def test_budget_exhausted_still_writes_a_finished_report(tmp_path):
    done = _run("--cpu-smoke", "--out", str(tmp_path), "--budget-s", "0.01", "--quiet",
                "--skip", "main_job", "durability", "export", "pipeline")
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((tmp_path / "accelerator.json").read_text())
    assert data["finished"]
    assert data["steps"] and all(r["skipped"].startswith("budget") for r in data["steps"])
    assert data["checks"] == {"main_job": None, "resume_bit_identical": None,
                              "export_verify": None, "population_equals_single_runs": None,
                              "our_step_ran": None}
    assert "skipped: budget" in (tmp_path / "accelerator.md").read_text()


def test_groups_put_the_goal_batch_first_and_compile_only_there(tmp_path):
    args = parse_args(["--out", str(tmp_path), "--networks", "a", "b", "--batch", "128", "512"])
    assert [(g.network, g.batch, g.torch_compile) for g in groups(args)] == [
        ("a", 512, True), ("b", 512, True), ("a", 128, False), ("b", 128, False)]
    smoke = parse_args(["--out", str(tmp_path), "--cpu-smoke"])
    assert smoke.device == "cpu" and not smoke.torch and smoke.steps == 2
    assert all(not g.torch_compile for g in groups(smoke))


def test_budget_timeouts_never_exceed_what_is_left():
    import time

    budget = Budget(time.monotonic() + 30)
    assert 25 < budget.timeout(600) <= 30 and budget.timeout(5) == 5
    assert Budget(time.monotonic() - 1).timeout(600) == 1.0


def test_workers_see_one_gpu_and_no_preallocation(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert worker_env("gpu") == {"CUDA_VISIBLE_DEVICES": "3",
                                 "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    assert worker_env("cpu") == {"JAX_PLATFORMS": "cpu"}


def test_peaks_per_dtype():
    assert peak_for("NVIDIA H100 80GB HBM3") == {"bfloat16": 989.4, "float32": 494.7}
    assert peak_for("NVIDIA H100 PCIe")["bfloat16"] == 756.5
    assert peak_for("NVIDIA H200")["float32"] == 494.7
    assert peak_for("Some CPU") == {} and peak_for(None) == {}
    assert _parse_peak("bfloat16=989") == ("bfloat16", 989.0)
    assert _parse_peak("100") == ("*", 100.0)
    args = throughput_args(["--peak-tflops", "float32=400", "--peak-tflops", "bfloat16=800"])
    assert args.peak_tflops == {"float32": 400.0, "bfloat16": 800.0}
    args = throughput_args(["--peak-tflops", "100"])
    assert args.peak_tflops == {"float32": 100.0, "bfloat16": 100.0}
    with pytest.raises(SystemExit):
        throughput_args(["--peak-tflops", "int8=5"])


def _row(network, batch, dtype, ours, eager=None, compiled=None, mfu=None):
    return {"network": network, "batch": batch, "dtype": dtype, "device": "gpu",
            "ours_images_per_second": ours, "torch_eager_images_per_second": eager,
            "torch_compile_images_per_second": compiled,
            "ratio_vs_torch_eager": ours / eager if eager else None,
            "ratio_vs_torch_compile": ours / compiled if compiled else None, "ours_mfu": mfu}


def test_goals_and_checks_from_a_report():
    data = {"steps": [_row("wrn22x8", 512, "bfloat16", 100, eager=70, compiled=110, mfu=0.45),
                      _row("wrn22x8", 128, "bfloat16", 10, eager=100),
                      {"network": "x", "batch": 512, "dtype": "float32", "skipped": "budget"}],
            "pipeline": [{"batch": 512, "feed_images_per_second": 150}],
            "main_job": {"passed": True}, "export": {"passed": False},
            "population": {"rows": [
                {"k": k, "batch": 128, "dtype": "bfloat16", "family": "hrn", "speedup": 1.5,
                 "packed": {"member_images_per_second": ips, "mfu": mfu},
                 "sequential": {"member_images_per_second": ips / 1.5},
                 "first_step_losses": [(2.0, 2.0)] * k, "max_first_loss_difference": 0.0}
                for k, ips, mfu in ((1, 100.0, 0.05), (8, 350.0, 0.2))]}}
    met = {g["goal"]: g["met"] for g in goals(data)}
    assert met == {"wrn22x8 b512 bfloat16: ours >= 1.0x torch.compile": False,
                   "wrn22x8 b512 bfloat16: ours >= 1.3x PyTorch eager": True,
                   "wrn22x8 b512 bfloat16: MFU >= 40%": True,
                   "population: K=8 packed >= 3x the member-images/s of one run": True,
                   "population: K=8 packed MFU >= 30%": False,
                   "input pipeline b512 >= 2x the fastest step": False}
    assert checks(data) == {"main_job": True, "resume_bit_identical": None,
                            "export_verify": False, "population_equals_single_runs": True,
                            "our_step_ran": True}
    data["population"]["rows"][1]["max_first_loss_difference"] = 0.5
    assert checks(data)["population_equals_single_runs"] is False
    markdown = render_markdown(data)
    assert "| wrn22x8 | 512 | bfloat16 | 100 | 70 | 110 | 1.43 | 0.91 |" in markdown
    assert "| export_verify | **no** |" in markdown
    assert "skipped: budget" in markdown
    assert "| hrn | 128 | bfloat16 | 8 | 350 | 233 | 1.50 | 20.0% | 5.0e-01 |" in markdown



def test_docs_accelerator_section_is_the_committed_report():
    """docs/benchmarks.md's accelerator tables are exactly what the committed raw report
    renders to (regenerate: python -m bench.accelerator --render REPORT --docs PATH)."""
    from bench.accelerator import DOCS_BEGIN, DOCS_END, docs_section

    reports = sorted((ROOT / "bench" / "results").glob("*-accelerator/accelerator.json"))
    assert reports, "bench/results/ holds the accelerator report behind docs/benchmarks.md"
    docs = (ROOT / "docs" / "benchmarks.md").read_text()
    section = docs[docs.index(DOCS_BEGIN):docs.index(DOCS_END) + len(DOCS_END)]
    source = str(reports[-1].relative_to(ROOT))
    assert section == docs_section(json.loads(reports[-1].read_text()), source)
