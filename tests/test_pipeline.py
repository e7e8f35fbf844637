"""Control flow of the ReLU-optimization pipelines, with a fast fake training function.

The fake stands in for ``train_and_evaluate``: it writes ``summary.json`` (and an empty
``checkpoints/``) like a finished run, with an accuracy chosen by the test, so ordering,
skipping, resuming and the CLI can be checked in milliseconds. Real training is exercised
in ``test_pipeline_e2e.py``.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from conftest import ROOT, FakeTrainer, install_trainer, tiny_config
from hybrenet_jax.cli import main
from hybrenet_jax.design import DesignError
from hybrenet_jax.config import apply_overrides, load_config, split_overrides
from hybrenet_jax.pipeline.criticality import (load_result, measure_criticality,
                                               stage_only_model)
from hybrenet_jax.pipeline.deepreduce import plan_deepreduce
from hybrenet_jax.pipeline.deepreshape import plan_deepreshape
from hybrenet_jax.errors import ConfigError
from hybrenet_jax.pipeline.errors import PipelineError
from hybrenet_jax.pipeline.naming import run_dir_name
from hybrenet_jax.train.rundir import RunDirError, TrainingError

DIGITS_CONFIG = str(ROOT / "configs" / "pipeline_digits.py")
SMALL = "hrn-2x2x2x:m=4,depths=1-1-1-1"
#: Paper ResNet18(m=16) KD accuracies per stage-only network (spec §4).
PAPER_ACC = {"S1": 52.67, "S2": 62.10, "S3": 64.64, "S4": 59.70}


@pytest.fixture
def fake(monkeypatch):
    def install(**kw):
        if "accuracy" in kw:
            by_model = kw.pop("accuracy")
            kw["accuracy"] = lambda config: by_model(config.model)
        return install_trainer(monkeypatch, FakeTrainer(**kw))
    return install


def paper_accuracy(model: str) -> float:
    """Fraction accuracy of a stage-only ResNet18 from the paper table (by kept stage)."""
    culled = model.split("cull=")[1].split(",")[0].split("+")
    kept = ({"S1", "S2", "S3", "S4"} - set(culled)).pop()
    return PAPER_ACC[kept] / 100


# -- configs and names ------------------------------------------------------------------------
def test_config_file_and_overrides():
    config = load_config(DIGITS_CONFIG + ":resnet18:m=8")
    assert config.model == "resnet18:m=8" and config.dataset == "digits"
    apply_overrides(config, ["num_epochs=2", "distill.kind=dkd", "tensorboard=true",
                             "learning_rate=0.5", "pipeline.teacher_model=resnet18"])
    assert (config.num_epochs, config.distill.kind, config.tensorboard) == (2, "dkd", True)
    assert config.learning_rate == 0.5 and config.pipeline.teacher_model == "resnet18"
    with pytest.raises(ConfigError, match="no such config field"):
        apply_overrides(config, ["num_epoch=2"])
    with pytest.raises(ConfigError, match="expected an integer"):
        apply_overrides(config, ["num_epochs=two"])
    with pytest.raises(ConfigError, match="cannot import|expected an existing"):
        load_config(str(ROOT / "configs" / "nope.py"))
    assert split_overrides(["--config.a=1", "X", "--config.b.c", "2", "--dry-run"]) == \
        (["a=1", "b.c=2"], ["X", "--dry-run"])


def test_run_dir_names_are_safe_and_distinct():
    a = run_dir_name("hrn-2x5x3x:m=16,cull=S1,thin=S2+S3+S4", "cifar100", "kd")
    assert a.startswith("hrn-2x5x3x_m_16_cull_S1_thin_S2_S3_S4-kd-")
    assert not set(a) & set(":,=+/ ")
    assert a != run_dir_name("hrn-2x5x3x:m=16,cull=S1,thin=S2+S3+S4", "cifar100", "dkd")
    assert run_dir_name("a:b", "digits") != run_dir_name("a_b", "digits")


# -- criticality --------------------------------------------------------------------------------
def test_stage_only_model_culls_every_other_stage():
    assert stage_only_model("resnet18:m=16", 2, 4) == "resnet18:m=16,cull=S1+S3+S4"
    assert stage_only_model("wrn22x8", 1, 3) == "wrn22x8:cull=S2+S3"


def test_criticality_reproduces_the_paper_table(tmp_path, fake):
    trainer = fake(accuracy=paper_accuracy)
    config = tiny_config(dataset="cifar100")
    result = measure_criticality(config, "resnet18:m=16", tmp_path, log=lambda m: None)
    assert [round(v, 2) for v in result.values] == [0.0, 7.39, 9.84, 6.07]
    assert result.order_text == "S3>S2>S4>S1"
    assert result.relus == (81920, 32768, 16384, 8192)
    assert [c[1] for c in trainer.calls] == ["none"] * 4  # no teacher: plain CE
    saved = json.loads((tmp_path / "criticality.json").read_text())
    assert saved["order"] == ["S3", "S2", "S4", "S1"]
    assert saved["stages"][2] == {"stage": "S3", "model": "resnet18:m=16,cull=S1+S2+S4",
                                  "relus": 16384, "accuracy": pytest.approx(64.64),
                                  "criticality": pytest.approx(9.84, abs=0.01), "rank": 1}
    table = (tmp_path / "criticality.md").read_text()
    assert "| S3 | 16.38 | 64.64 | 9.84 | 1 |" in table and "**S3>S2>S4>S1**" in table
    loaded = load_result(tmp_path)
    assert loaded.order == result.order and loaded.accuracies == result.accuracies


def test_criticality_resumes_after_an_interruption(tmp_path, fake):
    config = tiny_config(dataset="cifar100")
    fake(accuracy=paper_accuracy, fail_on=3)
    with pytest.raises(KeyboardInterrupt):
        measure_criticality(config, "resnet18:m=16", tmp_path, log=lambda m: None)
    assert not (tmp_path / "criticality.json").exists()
    again = fake(accuracy=paper_accuracy)
    result = measure_criticality(config, "resnet18:m=16", tmp_path, log=lambda m: None)
    assert [pathlib.Path(c[2]).name for c in again.calls] == ["stage_S3", "stage_S4"]
    assert result.order_text == "S3>S2>S4>S1"


def test_criticality_rejects_optimized_models_and_missing_teachers(tmp_path, fake):
    fake()
    config = tiny_config()
    with pytest.raises(PipelineError, match="base network"):
        measure_criticality(config, SMALL + ",thin=S1", tmp_path)
    with pytest.raises(RunDirError, match="does not exist"):
        measure_criticality(config, SMALL, tmp_path, teacher_workdir=str(tmp_path / "none"))


def test_finished_runs_of_another_distillation_are_not_reused(tmp_path, fake):
    fake()
    config = tiny_config()
    measure_criticality(config, SMALL, tmp_path / "crit", log=lambda m: None)  # plain CE
    teacher = tmp_path / "teacher"
    FakeTrainer()(tiny_config(), teacher)  # a finished teacher run
    with pytest.raises(TrainingError, match="distill=none, not kd"):
        measure_criticality(config, SMALL, tmp_path / "crit", teacher_workdir=str(teacher),
                            log=lambda m: None)


# -- planning -------------------------------------------------------------------------------------
def test_deepreshape_plan_reproduces_the_paper_networks():
    plan = plan_deepreshape((2, 2, 2, 2), "S3,S2,S4,S1", "cifar100", reuse_factors=(4,))
    names = {c.name for _, c in plan.networks}
    assert names == {"hrn-5x5x3x", "hrn-5x7x2x", "hrn-6x6x2x", "hrn-7x5x2x", "hrn-2x5x3x",
                     "hrn-2x7x2x", "hrn-6x6x2x", "hrn-2x6x2x", "hrn-2x5x2x"}
    by_model = {p.model: p for p in plan.variants}
    # Paper table (spec §6): HRN-2x5x3x(m=16) culled S1, thinned S2-S4: 52.2K ReLUs.
    assert by_model["hrn-2x5x3x:cull=S1,thin=S2+S3+S4"].counts.relus == 52224
    assert by_model["hrn-2x5x3x:cull=S1,thin=S2+S3+S4,reuse=4"].counts.relus == 13056
    assert len(by_model) == len(plan.variants)


def test_deepreshape_budgets_keep_variants_within_the_largest(tmp_path):
    plan = plan_deepreshape((2, 2, 2, 2), "S3,S2,S4,S1", "cifar100", budgets=(20000, 60000))
    assert plan.variants and all(p.counts.relus <= 60000 for p in plan.variants)
    assert plan.over_budget and all(p.counts.relus > 60000 for p in plan.over_budget)
    assert {p.fits((20000, 60000)) for p in plan.variants} == {20000, 60000}
    with pytest.raises(PipelineError, match="smallest is"):
        plan_deepreshape((2, 2, 2, 2), "S3,S2,S4,S1", "cifar100", budgets=(100,))
    with pytest.raises(DesignError):
        plan_deepreshape((2, 2, 2, 2), "S1,S2,S3", "cifar100")


def test_deepreduce_plan_culls_least_critical_first():
    plan = plan_deepreduce("resnet18", "S3,S2,S4,S1", "cifar100")
    labels = {p.label: p for p in plan.variants}
    assert labels["base"].counts.relus == 557056
    assert labels["culled S1"].model == "resnet18:cull=S1"
    assert labels["culled S1+S4"].model == "resnet18:cull=S1+S4"
    assert labels["culled S1+S2+S4"].counts.stage_relus == (0, 0, 65536, 0)
    thinned = labels["culled S1, thinned"]
    assert thinned.model == "resnet18:cull=S1,thin=S2+S3+S4"
    assert thinned.counts.relus == (131072 + 65536 + 32768) // 2
    assert labels["culled S1, thinned + ScaleCh 0.5"].model == \
        "resnet18:m=32,cull=S1,thin=S2+S3+S4"
    wrn = plan_deepreduce("wrn22x8", "S2,S3,S1", "cifar100", max_culled=1)
    assert {p.model for p in wrn.variants} == {
        "wrn22x8", "wrn22x8:thin=S1+S2+S3", "wrn22x8:m=8,thin=S1+S2+S3", "wrn22x8:cull=S1",
        "wrn22x8:cull=S1,thin=S2+S3", "wrn22x8:m=8,cull=S1,thin=S2+S3"}
    with pytest.raises(PipelineError, match="max-culled"):
        plan_deepreduce("resnet18", "S3,S2,S4,S1", "cifar100", max_culled=4)


# -- CLI ------------------------------------------------------------------------------------------
def test_deepreshape_dry_run_json_lists_the_plan_without_training(capsys, fake):
    trainer = fake()
    code = main(["deepreshape", "--depths", "2-2-2-2", "--order", "S3,S2,S4,S1",
                 "--budgets", "60k", "--dry-run", "--json"])
    assert code == 0 and trainer.calls == []
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["role"] == "teacher" and rows[0]["model"] == "resnet18"
    variants = [r for r in rows if r["role"] == "variant"]
    assert variants and all({"model", "relus", "flops", "distill"} <= set(r) for r in variants)
    assert all(r["relus"] <= 60000 and r["distill"] == "kd" for r in variants)
    r = next(r for r in variants if r["model"] == "hrn-2x5x3x:cull=S1,thin=S2+S3+S4")
    # the teacher's forward pass is shared by the members of a population (--pack)
    members = sum(v["population"] == r["population"] for v in variants)
    assert r["train_flops_estimate"] == pytest.approx(3 * r["flops"] * 390 * 128 * 200
                                                      + rows[0]["flops"] * 390 * 128 * 200
                                                      / members)
    alone = main(["deepreshape", "--depths", "2-2-2-2", "--order", "S3,S2,S4,S1",
                  "--budgets", "60k", "--dry-run", "--json", "--pack", "1"])
    assert alone == 0
    r1 = next(json.loads(line) for line in capsys.readouterr().out.splitlines()
              if json.loads(line)["model"] == r["model"])
    assert r1["train_flops_estimate"] == 3 * r["flops"] * 390 * 128 * 200 \
        + rows[0]["flops"] * 390 * 128 * 200


def test_deepreduce_dry_run_text(capsys):
    assert main(["deepreduce", "resnet18", "--order", "S3,S2,S4,S1", "--dry-run",
                 "--max-culled", "1", "--distill", "none"]) == 0
    out = capsys.readouterr().out
    assert "resnet18:cull=S1,thin=S2+S3+S4" in out and "6 training runs" in out
    assert "teacher" not in out.split("\n\n")[0]  # no distillation: no teacher run


@pytest.mark.parametrize("argv, fragment", [
    (["deepreshape", "--order", "S3,S2,S4,S1"], "--config is required"),
    (["deepreshape", "--config", DIGITS_CONFIG, "--order", "S3,S2,S4,S1"], "--workdir"),
    (["deepreshape", "--order", "S3,S3,S4,S1", "--dry-run"], "exactly once"),
    (["deepreshape", "--order", "S3,S2,S4,S1", "--budgets", "10", "--dry-run"], "smallest is"),
    (["deepreshape", "--order", "S3,S2,S4,S1", "--budgets", "x", "--dry-run"], "not a ReLU"),
    (["deepreduce", "resnet18", "--order", "S3,S2,S4,S1", "--dry-run",
      "--teacher-workdir", "/nonexistent/teacher"], "does not exist"),
    (["criticality", "--config", DIGITS_CONFIG, "resnet18:cull=S1", "--no-teacher"],
     "base network"),
    (["criticality", "--config", DIGITS_CONFIG, SMALL, "--no-teacher", "--config.num_epoch=1"],
     "no such config field"),
    (["criticality", "--config", DIGITS_CONFIG, SMALL], "uses KD accuracies"),
    (["deepreshape", "--order", "S3,S2,S4,S1", "--dry-run", "--dkd-betas", "2"],
     "--distill dkd"),
])
def test_bad_input_exits_2_with_a_message(argv, fragment, capsys, fake):
    trainer = fake()
    assert main(argv) == 2
    assert fragment in capsys.readouterr().err
    assert trainer.calls == []


@pytest.mark.parametrize("argv, fragment", [
    (["criticality", "--config", DIGITS_CONFIG, SMALL, "--no-teacher", "--teacher-workdir",
      "/nonexistent"], "not allowed with"),
    (["deepreshape", "--order", "S3,S2,S4,S1", "--dry-run", "--distill", "dkd",
      "--dkd-betas", "two"], "'two': not a number"),
    (["deepreshape", "--order", "S3,S2,S4,S1", "--dry-run", "--distill", "dkd",
      "--dkd-betas", "0"], "positive"),  # bounded when parsed (issue 24): a usage error
])
def test_argument_errors_exit_2(argv, fragment, capsys, fake):
    trainer = fake()
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and fragment in capsys.readouterr().err
    assert trainer.calls == []


def test_criticality_refuses_without_a_teacher_in_one_line(tmp_path, fake, capsys):
    trainer = fake()
    argv = ["criticality", "--config", DIGITS_CONFIG, SMALL, "--workdir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "KD" in err and "--no-teacher" in err
    assert trainer.calls == [] and not (tmp_path / "stage_S1").exists()


def test_criticality_no_teacher_warns_once_and_uses_cross_entropy(tmp_path, fake, capsys):
    trainer = fake(accuracy=lambda model: 0.5 + 0.1 * ("cull=S1+S2+S4" in model))
    argv = ["criticality", "--config", DIGITS_CONFIG, SMALL, "--workdir", str(tmp_path),
            "--no-teacher", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err.count("warning") == 1 and "cross-entropy" in captured.err
    assert [c[1] for c in trainer.calls] == ["none"] * 4
    result = json.loads(captured.out)
    assert result["distill"] == "none" and result["order"][0] == "S3"


def _deepreshape_argv(workdir: pathlib.Path, *extra: str) -> list[str]:
    return ["deepreshape", "--config", DIGITS_CONFIG, "--depths", "1-1-1-1", "--m", "4",
            "--networks", "alpha2", "--top", "1", "--reuse", "4", "--workdir", str(workdir),
            *extra]


def test_deepreshape_resumes_after_interrupt_and_skips_finished(tmp_path, fake, capsys):
    # runs one by one (--pack 1): each finished run is recorded before the next starts
    argv = _deepreshape_argv(tmp_path, "--order", "S3,S2,S4,S1", "--json", "--pack", "1")
    first = fake(fail_on=3)  # teacher, variant 1, then interrupted in variant 2
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    assert [c[0] for c in first.calls[:2]] == ["hrn-2x2x2x:m=8", "hrn-2x5x2x:m=4,depths=1-1-1-1"]
    results = tmp_path / "results.jsonl"
    assert len(results.read_text().splitlines()) == 2  # teacher + first variant
    second = fake()
    assert main(argv) == 0
    trained = [c[0] for c in second.calls]
    assert "hrn-2x2x2x:m=8" not in trained and "hrn-2x5x2x:m=4,depths=1-1-1-1" not in trained
    assert trained[0] == first.calls[2][0]  # the interrupted variant runs again first
    assert all(c[1] == "kd" for c in second.calls)
    assert all(c[2].startswith(str(tmp_path / "models")) for c in second.calls)
    records = [json.loads(line) for line in results.read_text().splitlines()]
    models = [r["model"] for r in records]
    assert len(models) == len(set(models)) == 1 + 4  # teacher + base, thinned, ScaleCh, Re2 4
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["model"] for p in printed] == models[1:]
    third = fake()
    assert main(argv) == 0 and third.calls == []  # everything finished: nothing retrained
    assert len(results.read_text().splitlines()) == 5
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["order"] == "S3>S2>S4>S1" and len(plan["variants"]) == 4
    assert "| variant |" in (tmp_path / "results.md").read_text()


def test_an_interrupted_population_resumes_and_reads_its_finished_members(tmp_path, fake):
    """Packed (the default): an interrupt inside the population records none of it; the
    rerun reads the member that had finished (its summary.json) instead of training it, and
    trains the rest."""
    argv = _deepreshape_argv(tmp_path, "--order", "S3,S2,S4,S1", "--json")
    first = fake(fail_on=3)  # teacher, member 1 finished, interrupted in member 2
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    results = tmp_path / "results.jsonl"
    assert len(results.read_text().splitlines()) == 1  # the teacher
    second = fake()
    assert main(argv) == 0
    trained = [c[0] for c in second.calls]
    assert first.calls[1][0] not in trained and trained[0] == first.calls[2][0]
    models = [json.loads(line)["model"] for line in results.read_text().splitlines()]
    assert len(models) == len(set(models)) == 1 + 4


def test_deepreshape_measures_the_order_first(tmp_path, fake, capsys):
    accuracy = {"cull=S2+S3+S4": 0.50, "cull=S1+S3+S4": 0.60, "cull=S1+S2+S4": 0.70,
                "cull=S1+S2+S3": 0.55}

    def acc(model):
        return next((v for k, v in accuracy.items() if model.endswith(k)), 0.9)

    trainer = fake(accuracy=acc)
    assert main(_deepreshape_argv(tmp_path, "--measure-order", "--distill", "dkd")) == 0
    roles = [pathlib.Path(c[2]).parent.name for c in trainer.calls]
    assert roles[:5] == [tmp_path.name, "criticality", "criticality", "criticality",
                         "criticality"]
    assert [c[1] for c in trainer.calls[1:5]] == ["kd"] * 4  # criticality always uses KD
    assert all(c[1] == "dkd" for c in trainer.calls[5:])
    measured = load_result(tmp_path / "criticality")
    assert measured.order_text == "S3>S2>S4>S1"
    assert measured.model == "hrn-2x2x2x:m=4,depths=1-1-1-1"
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["order"] == "S3>S2>S4>S1"
    # The measured order belongs to another network than the one asked for now.
    assert main(_deepreshape_argv(tmp_path, "--measure-order", "--criticality-model",
                                  "resnet18:m=4")) == 2
    assert "holds the criticality of" in capsys.readouterr().err


def test_external_teacher_must_be_a_finished_run(tmp_path, fake, capsys):
    fake()
    (tmp_path / "half").mkdir()
    argv = _deepreshape_argv(tmp_path / "run", "--order", "S3,S2,S4,S1", "--teacher-workdir",
                             str(tmp_path / "half"))
    assert main(argv) == 2
    assert "holds no finished training run" in capsys.readouterr().err


def test_deepreduce_trains_its_variants_like_deepreshape(tmp_path, fake, capsys):
    trainer = fake(accuracy=lambda model: 0.8 if "thin" in model else 0.9)
    argv = ["deepreduce", SMALL, "--config", DIGITS_CONFIG, "--order", "S3,S2,S4,S1",
            "--max-culled", "1", "--scales", "none", "--distill", "none",
            "--workdir", str(tmp_path)]
    assert main(argv) == 0
    assert [c[0] for c in trainer.calls] == [
        SMALL, SMALL + ",thin=S1+S2+S3+S4", SMALL + ",cull=S1", SMALL + ",cull=S1,thin=S2+S3+S4"]
    assert all(c[1] == "none" for c in trainer.calls)  # no distillation: no teacher either
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["accuracy"] for r in records] == [90.0, 80.0, 90.0, 80.0]  # percent
    assert records[3]["relus"] == records[3]["stage_relus"][1] + records[3]["stage_relus"][2] \
        + records[3]["stage_relus"][3]
    out = capsys.readouterr().out
    assert "culled S1, thinned" in out and "results.jsonl" in out


def test_the_pipelines_set_each_runs_distillation_whatever_the_config_says(capsys):
    """configs/dkd.py distils every run (200 epochs + the 20-epoch warm-up, a config field
    the training loop reads); a pipeline decides distillation per run: the teacher trains
    without it, each DKD run gets the warm-up once (220, not 240) and a KD run none."""
    from hybrenet_jax.cli import main

    def rows(config: str, distill: str) -> list[dict]:
        betas = ["--dkd-betas", "2"] if distill == "dkd" else []
        code = main(["deepreshape", "--config", str(ROOT / config), "--depths", "2-2-2-2",
                     "--order", "S3,S2,S4,S1", "--distill", distill, *betas, "--dry-run",
                     "--json"])
        assert code == 0
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    for config in ("configs/dkd.py", "configs/kd.py", "configs/cifar100_hrn.py"):
        dkd = rows(config, "dkd")
        assert [(r["role"], r["distill"], r["epochs"]) for r in dkd[:2]] == \
            [("teacher", "none", 200.0), ("variant", "dkd", 220.0)]
        kd = rows(config, "kd")
        assert {(r["distill"], r["epochs"]) for r in kd if r["role"] == "variant"} == \
            {("kd", 200.0)}


def test_a_config_file_that_fails_is_one_config_error(tmp_path):
    bad = tmp_path / "configs"
    bad.mkdir()
    (bad / "__init__.py").write_text("")
    (bad / "boom.py").write_text("def get_config(arg=None):\n    raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match="loading it failed .*RuntimeError: boom"):
        load_config(str(bad / "boom.py"))
    (bad / "none.py").write_text("X = 1\n")
    with pytest.raises(ConfigError, match="defines no get_config"):
        load_config(str(bad / "none.py"))
