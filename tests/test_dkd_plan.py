"""DKD as the DeepReShape paper runs it: the beta sweep, the warm-up epochs, best-per-variant.

Training is replaced by a fake that records each run's config and writes ``summary.json``
with an accuracy chosen from the run's DKD beta, so the plan, the results and the report can
be checked in milliseconds.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from conftest import ROOT, FakeTrainer, install_trainer, tiny_config
from hybrenet_jax.cli import main
from hybrenet_jax.errors import ConfigError
from hybrenet_jax.pipeline.estimate import planned_epochs
from hybrenet_jax.report.markdown import render
from hybrenet_jax.report.points import load_results
from hybrenet_jax.schema import PAPER_DKD_BETAS, build_config, parse_dkd_betas, schedule_steps

DIGITS_CONFIG = str(ROOT / "configs" / "pipeline_digits.py")
PAPER_DKD = [0.8, 1.0, 2.0, 6.0]
#: Accuracy (fraction) of a DKD run by its beta: beta 2 wins, except where a test says.
BY_BETA = {0.8: 0.70, 1.0: 0.72, 2.0: 0.75, 6.0: 0.71}


@pytest.fixture
def trainer(monkeypatch):
    return install_trainer(monkeypatch, FakeTrainer(
        accuracy=lambda config: (BY_BETA.get(config.distill.dkd_beta, 0.9)
                                 if config.distill.kind == "dkd" else 0.9),
        epochs=planned_epochs))


def _dry_run(capsys, *extra: str) -> list[dict]:
    argv = ["deepreshape", "--order", "S3,S2,S4,S1", "--networks", "alpha2", "--top", "1",
            "--reuse", "4", "--dry-run", "--json", *extra]
    assert main(argv) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


# -- the plan -------------------------------------------------------------------------------
def test_dkd_dry_run_plans_one_run_per_paper_beta_with_20_extra_epochs(capsys, trainer):
    rows = _dry_run(capsys, "--distill", "dkd")
    assert trainer.configs == []
    teacher, variants = rows[0], rows[1:]
    assert teacher["role"] == "teacher" and teacher["distill"] == "none"
    assert teacher["dkd_beta"] is None and teacher["epochs"] == 200
    models = sorted({r["model"] for r in variants})
    assert len(models) == 4  # base, thinned, ScaleCh 0.5, Re2 4 of HRN-2x5x2x
    for model in models:
        runs = [r for r in variants if r["model"] == model]
        assert [r["dkd_beta"] for r in runs] == PAPER_DKD
        assert all(r["distill"] == "dkd" for r in runs)
        assert all(r["epochs"] == 220 and r["extra_epochs"] == 20 for r in runs)
        names = [pathlib.Path(r["workdir"]).name for r in runs]
        assert len(set(names)) == 4
        assert all(f"-dkd-b{b:g}-x20-" in n for b, n in zip(PAPER_DKD, names))
    # 220 epochs of 390 batches of 128 images, plus one teacher forward per image, shared by
    # the members of the run's population (--pack)
    r = variants[0]
    members = sum(v["population"] == r["population"] for v in variants)
    assert r["train_images"] == 220 * 390 * 128
    assert r["train_flops_estimate"] == pytest.approx(3 * r["flops"] * r["train_images"]
                                                      + teacher["flops"] * r["train_images"]
                                                      / members)


def test_dkd_betas_and_the_ramp_inside_the_base_schedule_are_configurable(capsys, trainer):
    rows = _dry_run(capsys, "--distill", "dkd", "--dkd-betas", "6", "0.8", "6",
                    "--dkd-warmup", "inside")
    variants = [r for r in rows if r["role"] == "variant"]
    assert sorted({r["dkd_beta"] for r in variants}) == [0.8, 6.0]
    assert len(variants) == 4 * 2  # sorted, duplicates dropped
    assert all(r["epochs"] == 200 and r["extra_epochs"] == 0 for r in variants)
    assert all("-x" not in pathlib.Path(r["workdir"]).name for r in variants)


def test_kd_plan_is_unchanged_one_run_per_variant(capsys, trainer):
    rows = _dry_run(capsys)
    variants = [r for r in rows if r["role"] == "variant"]
    assert len(variants) == 4
    assert all(r["distill"] == "kd" and r["dkd_beta"] is None and r["epochs"] == 200
               for r in variants)


def test_dry_run_text_names_beta_and_epochs(capsys, trainer):
    argv = ["deepreshape", "--order", "S3,S2,S4,S1", "--networks", "alpha2", "--top", "1",
            "--reuse", "none", "--distill", "dkd", "--dkd-betas", "2", "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert "epochs" in header and "distill" in header
    assert "dkd b=2" in out and " 220 " in out
    assert "4 training runs" in out  # teacher + 3 variants x 1 beta


def test_paper_defaults_and_bad_betas():
    assert PAPER_DKD_BETAS == tuple(PAPER_DKD)
    assert parse_dkd_betas("0.8,1,2,6") == tuple(PAPER_DKD)
    assert parse_dkd_betas([2, "0.8"]) == (0.8, 2.0)
    for bad in ("", "0", "-1", "nan", "x"):
        with pytest.raises(ConfigError):
            parse_dkd_betas(bad)
    with pytest.raises(ConfigError, match="pipeline.dkd_betas='0.8,x'"):
        build_config(tiny_config(**{"pipeline.dkd_betas": "0.8,x"}))


def _dkd(**fields):
    return build_config(tiny_config(**{"distill.kind": "dkd", "distill.teacher_workdir": "T",
                                       "dataset": "cifar100", "batch_size": 128, **fields}))


def test_the_dkd_warm_up_is_trained_on_top_of_epoch_and_step_based_schedules():
    epochs = _dkd(total_steps=0, num_epochs=200)
    assert epochs.distill.dkd_warmup_extra  # the paper's 200 + 20 is the default
    assert schedule_steps(epochs, 390) == 220 * 390 and planned_epochs(epochs) == 220
    assert schedule_steps(_dkd(total_steps=1000), 390) == 1000 + 20 * 390
    half = _dkd(total_steps=0, num_epochs=10, **{"distill.dkd_warmup_epochs": 0.5})
    assert schedule_steps(half, 390) == 10 * 390 + 195
    inside = _dkd(total_steps=0, num_epochs=200, **{"distill.dkd_warmup_extra": False})
    assert schedule_steps(inside, 390) == 200 * 390 and planned_epochs(inside) == 200
    plain = build_config(tiny_config(dataset="cifar100", total_steps=0, num_epochs=3))
    assert schedule_steps(plain, 390) == 3 * 390  # no warm-up without DKD


def test_configs_follow_the_paper_not_the_dkd_authors_default():
    from hybrenet_jax.config import base_config
    from configs.dkd import get_config as dkd_config

    assert base_config().distill.dkd_beta != 8.0
    c = dkd_config("cifar100/hrn-2x5x3x")
    assert c.distill.kind == "dkd" and c.distill.dkd_alpha == 1.0
    assert c.distill.dkd_beta in PAPER_DKD and c.distill.dkd_beta != 8.0
    assert c.distill.dkd_warmup_epochs == 20 and c.num_epochs == base_config().num_epochs
    c.distill.teacher_workdir = "T"
    assert c.distill.dkd_warmup_extra and planned_epochs(build_config(c)) == 220


# -- training, results.jsonl and the report ------------------------------------------------
def _train_argv(workdir: pathlib.Path, *extra: str) -> list[str]:
    return ["deepreshape", "--config", DIGITS_CONFIG, "--depths", "1-1-1-1", "--m", "4",
            "--networks", "alpha2", "--top", "1", "--reuse", "none", "--order",
            "S3,S2,S4,S1", "--distill", "dkd", "--workdir", str(workdir), *extra]


def test_sweep_trains_every_beta_with_extra_epochs_and_records_the_best(tmp_path, trainer,
                                                                          capsys):
    assert main(_train_argv(tmp_path, "--dkd-betas", "0.8", "2", "6", "--json")) == 0
    students = [c for c in trainer.configs if c.distill.kind == "dkd"]
    assert len(students) == 3 * 3  # base, thinned, ScaleCh x 3 betas
    assert [c.distill.dkd_beta for c in students[:3]] == [0.8, 2.0, 6.0]
    # pipeline_digits: 4 epochs + distill.dkd_warmup_epochs (1) on top; the teacher keeps 8
    assert all(c.num_epochs == 4 and c.distill.dkd_warmup_epochs == 1.0
               and c.distill.dkd_warmup_extra and planned_epochs(c) == 5 for c in students)
    assert trainer.configs[0].distill.kind == "none" and trainer.configs[0].num_epochs == 8
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text()
               .splitlines()]
    runs = [r for r in records if r["role"] == "variant"]
    best = [r for r in records if r["role"] == "dkd_best"]
    assert len(runs) == 9 and len(best) == 3
    assert {r["dkd_beta"] for r in runs} == {0.8, 2.0, 6.0}
    assert all(r["distill"] == "dkd" and r["extra_epochs"] == 1.0 for r in runs)
    for b in best:
        assert b["dkd_beta"] == 2.0 and b["accuracy"] == 75.0
        assert b["dkd_betas"] == [0.8, 2.0, 6.0]
        assert [s["accuracy"] for s in b["dkd_sweep"]] == [70.0, 75.0, 71.0]
        winner = next(r for r in runs if r["model"] == b["model"] and r["dkd_beta"] == 2.0)
        assert b["workdir"] == winner["workdir"]
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["role"] for p in printed[:4]] == ["variant"] * 3 + ["dkd_best"]
    table = (tmp_path / "results.md").read_text()
    assert "dkd best b=2 of 0.8/2/6" in table and "dkd b=0.8" in table
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["dkd_betas"] == [0.8, 2.0, 6.0] and plan["dkd_extra_epochs"] == 1.0

    # Rerun: nothing trained, no second summary line.
    before = len(trainer.configs)
    assert main(_train_argv(tmp_path, "--dkd-betas", "0.8", "2", "6")) == 0
    assert len(trainer.configs) == before
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == len(records)

    # A wider sweep trains only the new beta and records the new best.
    trainer.accuracy = lambda c: 0.80 if c.distill.dkd_beta == 1.0 else 0.1
    assert main(_train_argv(tmp_path, "--dkd-betas", "0.8", "1", "2", "6")) == 0
    assert [c.distill.dkd_beta for c in trainer.configs[before:]] == [1.0] * 3
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text()
               .splitlines()]
    latest = [r for r in records if r["role"] == "dkd_best"][-3:]
    assert all(b["dkd_beta"] == 1.0 and b["accuracy"] == 80.0 for b in latest)


def test_inside_warmup_trains_the_base_epochs(tmp_path, trainer):
    assert main(_train_argv(tmp_path, "--dkd-betas", "1", "--dkd-warmup", "inside")) == 0
    students = [c for c in trainer.configs if c.distill.kind == "dkd"]
    assert students and all(c.num_epochs == 4 and not c.distill.dkd_warmup_extra
                            and planned_epochs(c) == 4 for c in students)


def test_report_shows_each_run_and_uses_the_best_per_variant(tmp_path, trainer, capsys):
    assert main(_train_argv(tmp_path, "--dkd-betas", "0.8", "2", "6")) == 0
    points, problems = load_results([tmp_path / "results.jsonl"])
    assert problems == []
    ours = [p for p in points if p.distill.startswith("dkd")]
    assert len(ours) == 3  # one point per variant, not one per beta or per summary line
    for p in ours:
        assert p.accuracy == 75.0 and p.dkd_beta == 2.0
        assert p.sweep == ((0.8, 70.0), (2.0, 75.0), (6.0, 71.0))
        assert "b=2" in p.distill and "best of 0.8/2/6" in p.distill
    text = render(points, {"digits": "ours"}, [], [])
    assert "### DKD beta sweeps" in text
    row = next(line for line in text.splitlines()
               if line.startswith(f"| {ours[0].label} |") and "**75.00**" in line)
    assert "70.00" in row and "71.00" in row and row.rstrip().endswith("| 2 |")


def test_report_keeps_single_runs_and_ties_go_to_the_smaller_beta(tmp_path):
    base = {"model": "hrn-2x5x3x", "dataset": "cifar100", "relus": 186368, "flops": 1.79e8,
            "distill": "dkd", "extra_epochs": 20.0}
    lines = [{**base, "dkd_beta": 6.0, "accuracy": 77.0},
             {**base, "dkd_beta": 1.0, "accuracy": 77.0},
             {**base, "role": "dkd_best", "dkd_beta": 1.0, "accuracy": 77.0},
             {**base, "distill": "kd", "accuracy": 76.0},
             {**base, "dkd_beta": 2.0, "accuracy": 70.0, "extra_epochs": 0.0}]
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    points, problems = load_results([path])
    assert problems == []
    assert [(p.distill.split()[0], p.dkd_beta, p.accuracy) for p in points] == [
        ("dkd", 1.0, 77.0), ("kd", None, 76.0), ("dkd", 2.0, 70.0)]
    assert points[0].sweep == ((1.0, 77.0), (6.0, 77.0))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**base, "dkd_beta": -1, "accuracy": 50.0}) + "\n")
    points, problems = load_results([bad])
    assert points == [] and "dkd_beta" in problems[0]
