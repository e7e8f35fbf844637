"""The typed config (hybrenet_jax/schema.py): defaults, rules, one boundary, one line per error."""

from __future__ import annotations

import dataclasses

import ml_collections
import pytest

from conftest import ROOT, tiny_config
from hybrenet_jax.cli import main
from hybrenet_jax.config import base_config, complete
from hybrenet_jax.errors import ConfigError
from hybrenet_jax.schema import (RULES, Betas, Bool, Choice, Float, Int, Text, TrainConfig,
                                 as_dict, build_config, field_value, updated)

DEFAULT = str(ROOT / "configs" / "default.py")


def test_the_defaults_are_the_paper_recipe_and_round_trip():
    config = build_config(base_config())
    assert config == TrainConfig()
    assert (config.batch_size, config.num_epochs, config.learning_rate, config.weight_decay,
            config.momentum) == (128, 200, 0.1, 4e-4, 0.9)
    assert (config.distill.temperature, config.distill.dkd_beta,
            config.distill.dkd_warmup_epochs, config.distill.dkd_warmup_extra) == \
        (4.0, 1.0, 20.0, True)
    assert (config.snl.lasso, config.snl.threshold, config.pipeline.teacher_model) == \
        (1e-5, 1e-2, "resnet18")
    assert build_config(as_dict(config)) == config


def test_every_section_field_has_a_rule_of_a_known_kind():
    sections = {"distill", "pipeline", "snl"}
    for section in sections:
        for f in dataclasses.fields(type(getattr(TrainConfig(), section))):
            assert f"{section}.{f.name}" in RULES
    assert not sections & set(RULES)  # a section is not a field
    assert {type(r) for r in RULES.values()} == {Int, Float, Bool, Choice, Text, Betas}


def test_a_config_holds_only_what_it_changes():
    small = ml_collections.ConfigDict({"model": "hrn-2x2x2x:m=4", "dataset": "digits",
                                       "snl": {"granularity": "channel"}})
    config = build_config(small)
    assert (config.model, config.dataset, config.snl.granularity) == \
        ("hrn-2x2x2x:m=4", "digits", "channel")
    assert config.snl.lasso == 1e-5 and config.batch_size == 128  # defaults elsewhere
    assert complete(small).distill.kind == "none"  # the overrides can reach every field


def test_the_typed_config_is_immutable_and_changes_are_checked_again():
    config = build_config(tiny_config())
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batch_size = 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.snl.lasso = 1.0
    changed = updated(config, {"snl.granularity": "channel", "batch_size": 16})
    assert (changed.snl.granularity, changed.batch_size, config.batch_size) == \
        ("channel", 16, 32)
    assert field_value(changed, "snl.granularity") == "channel"
    with pytest.raises(ConfigError, match="batch_size=0: must be in"):
        updated(config, {"batch_size": 0})


@pytest.mark.parametrize("given,fragment", [
    ({"modle": "resnet18"}, "unknown field(s) modle in the config"),
    ({"snl": {"lasoo": 1.0}}, "unknown field(s) snl.lasoo in section 'snl'"),
    ({"distill": 3}, "distill must be a section of fields"),
    ({"model": "resnet99"}, "resnet99"),
])
def test_unknown_fields_and_bad_sections_are_one_line(given, fragment):
    with pytest.raises(ConfigError) as caught:
        build_config({**as_dict(build_config(tiny_config())), **given})
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("override,fragment", [
    ("seed=-1", "seed=-1: must be in"),  # Int
    ("snl.finetune_steps=-3", "snl.finetune_steps=-3: must be in"),  # Int in a section
    ("learning_rate=0", "learning_rate=0.0: must be > 0.0"),  # Float, open bound
    ("distill.temperature=0", "distill.temperature=0.0: must be in [0.01, 1000.0]"),  # Float
    ("snl.threshold=1", "snl.threshold=1.0: must be < 1.0"),  # Float, open upper bound
    ("learning_rate=nan", "learning_rate=nan: must be a finite number"),  # Float
    ("flip=maybe", "expected true or false"),  # Bool
    ("optimizer=lamb", "optimizer='lamb': accepted: sgd, adam"),  # Choice
    ("pipeline.distill=ce", "pipeline.distill='ce': accepted: none, kd, dkd"),  # Choice
    ("pipeline.teacher_model= ", "pipeline.teacher_model=' ': must not be empty"),  # Text
    ("pipeline.dkd_betas=0.8,-1", "DKD beta '-1' must be a positive number"),  # Betas
    ("snl.granularity=layer", "snl.granularity='layer': accepted: pixel, channel"),
])
def test_a_bad_value_of_every_field_type_is_one_line_and_exit_2(tmp_path, capsys, override,
                                                                  fragment):
    code = main(["train", "--config", DEFAULT, f"--config.{override}", "--workdir",
                 str(tmp_path / "run")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and fragment in err[0], err
    assert not (tmp_path / "run").exists()  # refused before anything was made
