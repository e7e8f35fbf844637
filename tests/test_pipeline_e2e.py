"""The pipelines with real (1-step) training on the embedded digits, and their Pareto report.

One module-scoped pipeline directory is shared: ``hybrenet deepreshape`` trains its teacher
and two variants, ``hybrenet criticality`` distils from that teacher, and ``hybrenet pareto``
reads the ``results.jsonl`` the pipeline wrote.
"""

from __future__ import annotations

import csv
import json
import pathlib

import pytest

from conftest import ROOT
from hybrenet_jax.cli import main
from hybrenet_jax.train import loop as train_loop

CONFIG = str(ROOT / "configs" / "pipeline_digits.py")
SMALL = "hrn-2x2x2x:m=4,depths=1-1-1-1"
TINY = ["--config.total_steps=1", "--config.pipeline.teacher_num_epochs=0",
        f"--config.pipeline.teacher_model={SMALL}", "--config.batch_size=32"]
DEEPRESHAPE = ["deepreshape", "--config", CONFIG, *TINY, "--depths", "1-1-1-1", "--m", "4",
               "--order", "S3,S2,S4,S1", "--networks", "alpha2", "--top", "1",
               "--reuse", "none", "--budgets", "8000"]


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("deepreshape")
    assert main([*DEEPRESHAPE, "--workdir", str(workdir)]) == 0
    return workdir


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_deepreshape_trains_teacher_and_variants(pipeline_dir):
    records = _records(pipeline_dir / "results.jsonl")
    assert [r["role"] for r in records] == ["teacher", "variant", "variant"]
    assert records[0]["model"] == SMALL and records[0]["distill"] == "none"
    variants = records[1:]
    assert {r["model"] for r in variants} == {
        "hrn-2x5x2x:m=4,depths=1-1-1-1,cull=S1,thin=S2+S3+S4",
        "hrn-2x5x2x:m=2,depths=1-1-1-1,cull=S1,thin=S2+S3+S4"}
    for r in records:
        summary = json.loads((pathlib.Path(r["workdir"]) / "summary.json").read_text())
        assert pathlib.Path(r["workdir"]).parent.name in ("models", pipeline_dir.name)
        assert r["accuracy"] == pytest.approx(100 * summary["test_accuracy"], abs=1e-3)
        assert r["relus"] == summary["relus"] and r["flops"] == summary["flops"]
        assert summary["steps"] == 1
    assert all(r["distill"] == "kd" and r["relus"] <= 8000 for r in variants)
    assert all(r["teacher"] == SMALL for r in variants)


def test_rerun_trains_nothing(pipeline_dir, monkeypatch, capsys):
    before = (pipeline_dir / "results.jsonl").read_text()

    def no_training(config, workdir):
        raise AssertionError(f"{config.model} was trained again")

    monkeypatch.setattr(train_loop, "train_and_evaluate", no_training)
    assert main([*DEEPRESHAPE, "--workdir", str(pipeline_dir), "--json"]) == 0
    assert (pipeline_dir / "results.jsonl").read_text() == before
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(printed) == 2 and all(p["role"] == "variant" for p in printed)


def test_pareto_reads_the_pipeline_results(pipeline_dir, tmp_path, capsys):
    out = tmp_path / "report"
    results = pipeline_dir / "results.jsonl"
    assert main(["pareto", str(results), "--out", str(out), "--no-published"]) == 0
    assert "0 bad line(s) skipped" in capsys.readouterr().out
    with (out / "pareto.csv").open() as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    for rec in _records(results):
        row = rows[rec["model"]]
        assert row["source"] == "ours" and row["dataset"] == "digits"
        assert float(row["accuracy"]) == pytest.approx(rec["accuracy"])  # percent, unscaled
        assert float(row["relus"]) == rec["relus"]
    assert (out / "pareto.md").is_file()


def test_criticality_with_kd_from_the_pipeline_teacher(pipeline_dir, tmp_path, capsys):
    workdir = tmp_path / "crit"
    argv = ["criticality", "--config", CONFIG, *TINY, SMALL, "--workdir", str(workdir),
            "--teacher-workdir", str(pipeline_dir / "teacher"), "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["distill"] == "kd" and len(result["stages"]) == 4
    assert sorted(result["order"]) == ["S1", "S2", "S3", "S4"]
    assert min(s["criticality"] for s in result["stages"]) == 0.0
    for stage in result["stages"]:
        summary = json.loads((workdir / f"stage_{stage['stage']}" / "summary.json").read_text())
        assert summary["distill"] == "kd" and summary["model"] == stage["model"]
        assert stage["accuracy"] == pytest.approx(100 * summary["test_accuracy"])
        assert summary["population"] == 4  # the stage runs were packed (auto: 4 on CPU)
    assert (workdir / "criticality.md").read_text().count("| S") == 4


def test_dkd_sweep_trains_each_beta_longer_and_reports_the_best(pipeline_dir, tmp_path, capsys):
    """Real DKD runs: one per beta, warm-up steps added to the schedule, best per variant."""
    workdir = tmp_path / "dkd"
    # 1 base step + round(0.05 x 44 steps per epoch) = 2 warm-up steps on top
    argv = [*DEEPRESHAPE[:-1], "3000", "--config.distill.dkd_warmup_epochs=0.05",
            "--distill", "dkd", "--dkd-betas", "2", "0.8", "--teacher-workdir",
            str(pipeline_dir / "teacher"), "--workdir", str(workdir)]
    assert main(argv) == 0
    records = _records(workdir / "results.jsonl")
    runs = [r for r in records if r["role"] == "variant"]
    assert [r["dkd_beta"] for r in runs] == [0.8, 2.0]
    assert {r["model"] for r in runs} == {"hrn-2x5x2x:m=2,depths=1-1-1-1,cull=S1,thin=S2+S3+S4"}
    for r in runs:
        summary = json.loads((pathlib.Path(r["workdir"]) / "summary.json").read_text())
        assert summary["distill"] == "dkd" and summary["steps"] == 3
        assert f"-dkd-b{r['dkd_beta']:g}-x0.05-" in pathlib.Path(r["workdir"]).name
    (best,) = [r for r in records if r["role"] == "dkd_best"]
    assert best["accuracy"] == max(r["accuracy"] for r in runs)
    assert [s["dkd_beta"] for s in best["dkd_sweep"]] == [0.8, 2.0]
    out = tmp_path / "report"
    assert main(["pareto", str(workdir / "results.jsonl"), "--out", str(out),
                 "--no-published"]) == 0
    assert "0 bad line(s) skipped" in capsys.readouterr().out
    text = (out / "pareto.md").read_text()
    assert "### DKD beta sweeps" in text and "best of 0.8/2" in text


def test_packed_variants_equal_the_same_runs_one_by_one(pipeline_dir, tmp_path, capsys):
    """The pipeline packs its variant runs by default (one population here); --pack 1 trains
    them one by one: the same parameters, accuracies and records."""
    workdir = tmp_path / "alone"
    argv = [*DEEPRESHAPE, "--teacher-workdir", str(pipeline_dir / "teacher"), "--pack", "1",
            "--workdir", str(workdir)]
    assert main(argv) == 0
    packed = {r["model"]: r for r in _records(pipeline_dir / "results.jsonl")
              if r["role"] == "variant"}
    alone = {r["model"]: r for r in _records(workdir / "results.jsonl")
             if r["role"] == "variant"}
    assert packed.keys() == alone.keys() and len(packed) == 2
    for model, record in packed.items():
        assert record["accuracy"] == alone[model]["accuracy"]
        summaries = [json.loads((pathlib.Path(r["workdir"]) / "summary.json").read_text())
                     for r in (record, alone[model])]
        assert summaries[0]["params_digest"] == summaries[1]["params_digest"]
        assert summaries[0]["population"] == 2 and "population" not in summaries[1]
    capsys.readouterr()
    assert main([*DEEPRESHAPE, "--dry-run"]) == 0
    assert "train as 1 population(s) of up to 2" in capsys.readouterr().out
