"""Bad input everywhere gets a clear error; fuzzing keeps invariants; nothing is lost."""

from __future__ import annotations

import errno
import math
import re
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, tiny_config
from hybrenet_jax.cost import estimate
from hybrenet_jax.counts import count
from hybrenet_jax.design import equalize_width
from hybrenet_jax.errors import DesignError, HybrenetError
from hybrenet_jax.model_string import spec_from_model_string

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- model strings -------------------------------------------------------------------------
ALPHABET = "resnt18hrn-x0123456789:=,+Smdpthculwigvq_ "


@FUZZ
@given(st.text(alphabet=ALPHABET, max_size=40))
def test_random_text_parses_or_gives_a_clear_error(text):
    try:
        spec = spec_from_model_string(text)
    except HybrenetError as err:
        assert str(err)  # a message, never an empty or foreign exception
    else:
        assert count(spec).relus >= 0


@st.composite
def valid_model(draw):
    stages = 4
    mult = draw(st.lists(st.integers(1, 6), min_size=3, max_size=3))
    depths = draw(st.lists(st.integers(1, 3), min_size=4, max_size=4))
    m = draw(st.sampled_from([8, 16, 32]))
    base = "hrn-" + "".join(f"{x}x" for x in mult) + f":m={m},depths=" + "-".join(map(str, depths))
    stage = draw(st.integers(1, stages))
    return base, stage


@FUZZ
@given(valid_model())
def test_thinning_halves_culling_zeroes_reuse_divides(case):
    base, s = case
    ref = count(spec_from_model_string(base))
    thin = count(spec_from_model_string(f"{base},thin=S{s}"))
    cull = count(spec_from_model_string(f"{base},cull=S{s}"))
    stem = spec_from_model_string(base).stem_width * 32 * 32 if s == 1 else 0
    assert thin.stage_relus[s - 1] * 2 == ref.stage_relus[s - 1] - stem
    assert cull.stage_relus[s - 1] == 0
    assert thin.flops == cull.flops == ref.flops  # removed ReLUs still count in FLOPs
    reuse = count(spec_from_model_string(f"{base},cull=S1,reuse=4"))
    assert reuse.relus * 4 == count(spec_from_model_string(f"{base},cull=S1")).relus
    assert reuse.flops < ref.flops


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=3, max_size=4), st.randoms())
def test_design_on_random_depths_and_orders(depths, rnd):
    order = list(range(1, len(depths) + 1))
    rnd.shuffle(order)
    try:
        cands = equalize_width(depths, order, bound=24)
    except DesignError as err:
        assert "no integer stage multipliers" in str(err)
        return
    for c in cands:
        blocks = list(c.counts.stage_relus)
        blocks[0] -= 16 * 32 * 32  # the stem is ignored by the inequalities
        assert all(blocks[a - 1] > blocks[b - 1] for a, b in zip(order, order[1:]))


@settings(max_examples=30, deadline=None)
@given(valid_model(), st.sampled_from([1, 2, 4, 8]))
def test_cost_is_finite_positive_and_grows_with_relus(case, threads):
    base, _ = case
    full = estimate(base, threads=threads)
    culled = estimate(f"{base},cull=S1+S2+S3+S4", threads=threads)
    assert math.isfinite(full.total_seconds) and full.he_seconds > 0
    assert culled.gc_seconds == 0 and full.gc_seconds > 0
    assert culled.he_seconds == pytest.approx(full.he_seconds)


# -- training: bad overrides, divergence, disk full ----------------------------------------
@pytest.mark.parametrize("args,fragment", [
    (["--config.bogus=1"], "--config.bogus: no such config field"),
    (["--config.batch_size=abc"], "--config.batch_size='abc': expected an integer"),
    (["--config=configs/nonexistent.py"], "'configs/nonexistent.py': expected an existing"),
    (["--config.distill.bogus", "1"], "--config.distill.bogus: no such config field"),
    (["--config.model"], "--config.model: missing value"),
    (["--workdir"], "expected one argument"),
    (["--config.model=hrn-2x2x2x:m=0"], "m='0' must be a positive integer"),
])
def test_launch_usage_errors_exit_2_with_one_message(tmp_path, args, fragment):
    cmd = [sys.executable, "-m", "launch.train", f"--workdir={tmp_path}"]
    if not any(a.startswith("--config=") for a in args):
        cmd.append("--config=configs/default.py")
    proc = subprocess.run(cmd + args, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr[-1500:]
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_bad_model_string_is_refused_before_the_workdir_is_made(tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "launch.train", "--config=configs/default.py",
         f"--workdir={workdir}", "--config.model=hrn-2x2x2x:m=8,cull=S9"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and "stage 'S9' does not exist" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not workdir.exists()


def test_diverging_loss_stops_with_clear_message_and_keeps_last_checkpoint(tmp_path):
    from hybrenet_jax.train import TrainingError, train_and_evaluate
    from hybrenet_jax.train.checkpoint import load_variables

    good = train_and_evaluate(tiny_config(total_steps=2), tmp_path)
    bad = tiny_config(total_steps=12, learning_rate=1e12, log_every_steps=1, warmup_epochs=0.0)
    with pytest.raises(TrainingError, match=r"diverged: non-finite loss or metrics at step \d+;"
                                            r".* the last checkpoint, step 2 in .*, is finite;"
                                            r".* resume from step 2"):
        train_and_evaluate(bad, tmp_path)
    _, meta = load_variables(tmp_path)
    assert meta["step"] == 2 and meta["digest"] == good["params_digest"]
    assert (tmp_path / "summary.json").exists()


def test_divergence_before_the_first_checkpoint_does_not_claim_one(tmp_path):
    from hybrenet_jax.train import TrainingError, train_and_evaluate

    bad = tiny_config(total_steps=12, learning_rate=1e12, log_every_steps=1, warmup_epochs=0.0)
    with pytest.raises(TrainingError, match="no checkpoint was saved yet") as err:
        train_and_evaluate(bad, tmp_path)
    assert "resume" not in str(err.value) and "start over" in str(err.value)


def test_disk_full_on_checkpoint_write_is_reported(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    from hybrenet_jax.train import train_and_evaluate
    from hybrenet_jax.train.checkpoint import CheckpointError

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ocp.CheckpointManager, "save", full)
    with pytest.raises(CheckpointError, match=r"the disk is full \(ENOSPC\); no checkpoint was "
                                              r"saved yet.*rerun"):
        train_and_evaluate(tiny_config(total_steps=1), tmp_path)


def test_a_full_disk_reported_by_tensorstore_is_named_with_the_last_intact_step():
    from hybrenet_jax.train.checkpoint import _write_error, is_disk_full

    try:
        try:
            raise ValueError("RESOURCE_EXHAUSTED: Error writing local file \"/w/d/x\"\n" * 50)
        except ValueError as inner:
            raise RuntimeError("save failed") from inner
    except RuntimeError as err:
        outer = err
    assert is_disk_full(outer) and not is_disk_full(ValueError("shape mismatch"))
    message = str(_write_error(outer, "checkpoint step 8 to /w/checkpoints", 6))
    assert "the disk is full (ENOSPC); the last intact checkpoint is step 6" in message
    assert "\n" not in message and len(message) < 400


def test_a_full_disk_while_writing_the_summary_is_one_clear_error(tmp_path, monkeypatch):
    import pathlib

    from hybrenet_jax.train import TrainingError, train_and_evaluate

    write_text = pathlib.Path.write_text

    def full_for_summary(self, *args, **kwargs):
        if self.name.startswith("summary.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", full_for_summary)
    with pytest.raises(TrainingError, match=r"writing .*summary.json failed: the disk is full"):
        train_and_evaluate(tiny_config(total_steps=1), tmp_path)


# -- security: no pickle or eval on anything we read ---------------------------------------
def test_no_pickle_or_eval_in_the_library():
    pattern = re.compile(r"\bimport pickle\b|\bpickle\.load|\beval\(|allow_pickle=True|"
                         r"\bexec\(|torch\.load\(")
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "hybrenet_jax").rglob("*.py")
                 if pattern.search(p.read_text())]
    assert offenders == []


# -- config overrides (the pipeline verbs' --config.a.b=v) ----------------------------------
FIELD = st.sampled_from(["seed", "batch_size", "learning_rate", "model", "flip", "distill.kind",
                         "distill.temperature", "distill", "bogus", "distill.bogus", "seed.x", ""])
VALUE = st.one_of(st.integers(-5, 500).map(str), st.floats(-1e3, 1e3).map(repr),
                  st.sampled_from(["true", "false", "abc", "", "hrn-2x2x2x:m=4", "1e-3"]))


@FUZZ
@given(FIELD, VALUE)
def test_config_overrides_apply_with_the_field_type_or_fail_clearly(field, value):
    from configs.default import get_config
    from hybrenet_jax.config import apply_overrides

    config = get_config()
    before = config.to_dict()
    try:
        apply_overrides(config, [f"{field}={value}"])
    except HybrenetError as err:
        assert str(err)
        assert config.to_dict() == before  # a rejected override changes nothing
        return
    target, leaf = config, field
    for part in field.split(".")[:-1]:
        target = target[part]
    leaf = field.split(".")[-1]
    assert type(target[leaf]) is type(_lookup(before, field))  # the field keeps its type


def _lookup(tree, dotted):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def test_a_full_disk_while_writing_metrics_is_one_clear_error(tmp_path, monkeypatch):
    import errno

    from hybrenet_jax.train import TrainingError, train_and_evaluate
    from hybrenet_jax.train.metrics import MetricWriter

    def full(self, step, split, scalars):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(MetricWriter, "write", full)
    with pytest.raises(TrainingError, match=r"writing .*metrics.jsonl failed: the disk is full "
                                            r"\(ENOSPC\)"):
        train_and_evaluate(tiny_config(total_steps=2, log_every_steps=1), tmp_path)
