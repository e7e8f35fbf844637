"""The benchmark's JAX side, report and scaling: tested without torch (no timing assertions)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from bench import report, throughput
from bench.ours import build_step
from bench.timing import median, spread, timed_steps
from bench.worker import Worker

TINY = "hrn-2x2x2x:m=4"


def test_our_step_is_the_real_train_step_and_traces_once():
    step = build_step(TINY, 8)
    walls, cpus = timed_steps(step.run, 2)
    assert len(walls) == len(cpus) == 2 and all(w > 0 for w in walls)
    assert step.step_fn.traces == 1
    assert np.isfinite(step.loss())
    assert step.step_fn.__module__ == "hybrenet_jax.train.steps"


def test_worker_protocol_without_torch():
    worker = Worker("ours", {"impl": "ours", "network": TINY, "batch": 8, "warmup": 1},
                    {"JAX_PLATFORMS": "cpu"})
    try:
        ready = worker.receive(timeout=300)
        assert ready["ready"], ready
        assert ready["torch_imported"] is False
        answer = worker.run(2, timeout=300)
        assert len(answer["wall"]) == 2 and np.isfinite(answer["loss"])
    finally:
        worker.close()
    bad = Worker("bad", {"impl": "nonsense", "network": TINY, "batch": 8})
    message = bad.receive(timeout=300)
    bad.close()
    assert message["ready"] is False and "nonsense" in message["error"]


def test_throughput_json_without_torch(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(throughput, "torch_available", lambda: False)
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"# title\n\nintro\n\n{report.BEGIN}\nold\n{report.END}\n\n## Notes\nkept\n")
    code = throughput.main(["--networks", TINY, "--batch", "8", "--steps", "2", "--rounds", "2",
                            "--warmup", "0", "--no-scaling", "--pipeline-images", "64",
                            "--peak-tflops", "1", "--json", "--quiet",
                            "--write-docs", str(docs)])
    assert code == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.strip()]
    assert len(lines) == 1
    record = lines[0]
    assert record["network"] == TINY
    assert record["ours_images_per_second"] > 0
    for key in ("torch_eager_images_per_second", "torch_compile_images_per_second",
                "ratio_vs_torch_eager"):
        assert key in record and record[key] is None
    assert record["torch_eager_error"] == "torch not installed"
    assert record["pipeline_keeps_up"] in (True, False)
    assert 0 < record["ours_mfu"]
    text = docs.read_text()
    assert text.startswith("# title\n\nintro") and "## Notes\nkept" in text
    assert "old" not in text and f"`{TINY}`" in text and "python -m bench.accelerator" in text


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        throughput.parse_args(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--networks", "--steps", "--json", "--write-docs", "--fast-conv",
                   "--device", "--peak-tflops"):
        assert option in out


def test_defaults_follow_the_device():
    cpu = throughput.parse_args([])
    gpu = throughput.parse_args(["--device", "gpu"])
    assert "wrn22x8" not in cpu.networks and "wrn22x8" in gpu.networks
    assert cpu.batch == [128] and gpu.batch == [128, 512, 1024]
    assert gpu.dtype == ["float32", "bfloat16"] and not gpu.scaling


def test_mfu_and_timing_helpers():
    assert throughput.mfu(10**9, 100.0, 1.0) == pytest.approx(0.6)
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([]) is None
    assert spread([1.0, 1.0, 1.0]) == 0.0 and spread([1.0]) is None


def test_scaling_losses_agree_on_two_simulated_devices():
    from bench.scaling import run_scaling

    result = run_scaling(TINY, 8, steps=2, counts=(1, 2), timeout=300)
    assert [r.get("devices") for r in result["runs"]] == [1, 2], result
    assert result["runs"][1]["batch_devices"] == 2
    assert result["losses_agree"], result


def test_report_renders_saved_report(tmp_path, capsys):
    record = {"network": TINY, "batch": 8, "dtype": "float32", "device": "cpu", "params": 10,
              "macs": 10**6, "ours_images_per_second": 100.0, "ours_compile_seconds": 1.0,
              "torch_eager_images_per_second": 50.0, "torch_compile_images_per_second": None,
              "torch_compile_error": "boom", "ratio_vs_torch_eager": 2.0,
              "ratio_vs_torch_compile": None, "steps_timed": {"ours": 2}}
    saved = {"machine": throughput.machine_info(), "command": "x", "args": {"steps": 2},
             "networks": [record]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(saved))
    docs = tmp_path / "b.md"
    assert report.main([str(path), "--docs", str(docs)]) == 0
    text = docs.read_text()
    assert "**2.00x**" in text and "boom" in text and report.BEGIN in text
    assert "ours/eager 2.00x" in capsys.readouterr().out



def test_docs_tables_are_the_committed_raw_report():
    """docs/benchmarks.md's generated section is exactly what bench/results/ renders to."""
    root = pathlib.Path(__file__).resolve().parents[1]
    raw = sorted((root / "bench" / "results").glob("*.json"))
    assert raw, "bench/results/ holds the raw report behind docs/benchmarks.md"
    docs = (root / "docs" / "benchmarks.md").read_text()
    section = docs[docs.index(report.BEGIN):docs.index(report.END) + len(report.END)]
    rendered = report.generated_markdown(json.loads(raw[-1].read_text())).strip()
    assert section.strip() == rendered


def test_population_bench_smoke_packs_without_changing_the_losses(tmp_path, capsys):
    """The CI smoke of bench.population: every cell reported, packed and sequential members
    compute the same first-step losses (a benchmark of the wrong computation is no
    benchmark), the report written as JSON."""
    from bench import population

    out = tmp_path / "population.json"
    assert population.main(["--cpu-smoke", "--json", "--out", str(out)]) == 0
    report_ = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report_
    assert [row["k"] for row in report_["rows"]] == [1, 2]
    for row in report_["rows"]:
        assert row["max_first_loss_difference"] == 0.0
        assert len(row["first_step_losses"]) == row["k"] == len(row["members"])
        for mode in ("packed", "sequential"):
            assert row[mode]["member_images_per_second"] > 0
        assert row["speedup"] == pytest.approx(row["packed"]["member_images_per_second"]
                                               / row["sequential"]["member_images_per_second"])
    assert population.members_of("hrn", 6)[4] == population.HRN_VARIANTS[0]
    assert population.member_flops("resnet18") == pytest.approx(6 * 555.47e6, rel=1e-3)
