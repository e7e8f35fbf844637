"""SNL: mask counting and binarization, the sparse traced model, and a tiny end-to-end run."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, tiny_config
from hybrenet_jax.cli import main
from hybrenet_jax.counts import count
from hybrenet_jax.model_string import spec_from_model_string
from hybrenet_jax.models import build_model, input_shape
from hybrenet_jax.errors import ConfigError
from hybrenet_jax.report.points import point_from_record
from hybrenet_jax.schema import build_config
from hybrenet_jax.snl import run as snl_run
from hybrenet_jax.snl.masks import (STEM_SITE, binarize, load_masks, mask_sites, relu_count,
                                    save_masks, total_relus)
from hybrenet_jax.snl.model import build_snl_model
from hybrenet_jax.snl.errors import SNLError
from hybrenet_jax.snl.sparse import build_sparse_model, dense_traced_relus, traced_relus
from hybrenet_jax.train.checkpoint import load_variables

SMALL = "hrn-2x2x2x:m=4,depths=1-1-1-1"
STEM_RELUS = 4 * 32 * 32  # m=4 channels at 32x32 (digits)


def _random_masks(sites, seed=0):
    rng = np.random.default_rng(seed)
    return {s.name: rng.random(s.shape).astype(np.float32) for s in sites}


@pytest.mark.parametrize("granularity", ["pixel", "channel"])
def test_mask_sites_cover_every_kept_relu(granularity):
    spec = spec_from_model_string(SMALL + ",thin=S2", "digits")
    sites = mask_sites(spec, granularity, mask_stem=True)
    assert total_relus(sites) == count(spec).relus
    ones = {s.name: np.ones(s.shape) for s in sites}
    assert relu_count(ones, sites) == count(spec).relus
    # Default (public SNL): the stem has no ReLU, so it has no mask and counts nothing.
    public = mask_sites(spec, granularity)
    assert STEM_SITE in {s.name for s in sites} and STEM_SITE not in {s.name for s in public}
    assert total_relus(public) == count(spec).relus - STEM_RELUS
    assert "stage2_block1_relu2" not in {s.name for s in sites}  # thinned: already linear
    weight = {s.name: s.weight for s in sites}["stage3_block1_relu1"]
    assert weight == (64 if granularity == "channel" else 1)  # 8x8 maps in Stage3


def test_binarize_keeps_the_largest_entries_within_the_budget():
    spec = spec_from_model_string(SMALL, "digits")
    sites = mask_sites(spec, "pixel")
    masks = {s.name: np.zeros(s.shape, np.float32) for s in sites}
    first = sites[0].name
    masks[first].ravel()[:100] = np.linspace(1.0, 0.02, 100)  # 100 entries above 1e-2
    masks[first].ravel()[100:130] = 0.005  # 30 below the threshold, above the rest
    binary, info = binarize(masks, sites, 120, 1e-2, fill=True)
    assert relu_count(binary, sites) == info["kept"] == 120
    assert info == {"above_threshold": 100, "kept": 120, "filled": 20}
    assert binary[first].ravel()[:120].all() and not binary[first].ravel()[120:].any()
    strict, info = binarize(masks, sites, 120, 1e-2, fill=False)  # public SNL rule
    assert info["kept"] == 100 and relu_count(strict, sites) == 100
    capped, info = binarize(masks, sites, 50, 1e-2)  # search ended above the budget
    assert info["kept"] == 50 and capped[first].ravel()[:50].all()


def test_binarize_per_channel_counts_spatial_positions():
    spec = spec_from_model_string(SMALL, "digits")
    sites = mask_sites(spec, "channel")
    masks = _random_masks(sites)
    budget = total_relus(sites) // 3
    binary, info = binarize(masks, sites, budget, 1e-2)
    assert info["kept"] <= budget and budget - info["kept"] < min(s.weight for s in sites)
    assert relu_count(binary, sites) == info["kept"]


def _random_variables(model, x) -> dict:
    """Random weights without compiling ``model.init`` (XLA CPU takes ~10 s for that)."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    rng = np.random.default_rng(2)
    params = jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype),
                          shapes["params"])
    stats = jax.tree_util.tree_map_with_path(
        lambda p, s: jnp.full(s.shape, 1.0 if p[-1].key == "var" else 0.0, s.dtype),
        shapes["batch_stats"])
    return {"params": params, "batch_stats": stats}


@pytest.mark.parametrize("granularity, mask_stem", [("pixel", True), ("channel", True),
                                                    ("pixel", False)])
def test_sparse_model_matches_masked_model_and_traces_the_kept_count(granularity, mask_stem):
    spec = spec_from_model_string(SMALL, "digits")
    sites = mask_sites(spec, granularity, mask_stem)
    binary, info = binarize(_random_masks(sites, 1), sites, total_relus(sites) // 4, 1e-2,
                            fill=True)
    # The blended mask model evaluates max(x, 0) everywhere: every position is traced ...
    assert dense_traced_relus(spec, granularity) == total_relus(sites) + \
        (0 if mask_stem else STEM_RELUS)
    # ... the sparse model only where a mask keeps the ReLU (never at a linear stem).
    assert traced_relus(spec, granularity, binary, mask_stem) == info["kept"] == \
        relu_count(binary, sites)
    dense = build_snl_model(spec, mask_granularity=granularity, learnable_masks=False,
                            mask_stem=mask_stem)
    x = jax.random.normal(jax.random.PRNGKey(1), input_shape(spec, 3))
    variables = _random_variables(dense, x)
    assert set(variables["batch_stats"]) >= {"stem_bn"}
    variables["relu_masks"] = {k: {"mask": jnp.asarray(m)} for k, m in binary.items()}
    sparse = build_sparse_model(spec, granularity, binary, mask_stem=mask_stem)
    out = jax.jit(sparse.apply)(variables, x)
    np.testing.assert_allclose(out, jax.jit(dense.apply)(variables, x), rtol=1e-6, atol=1e-6)
    if not mask_stem:  # the stem is linear: not the plain network's stem ReLU
        plain = build_model(spec, mask_granularity=granularity, learnable_masks=False)
        with_stem = {**variables, "relu_masks": {**variables["relu_masks"], STEM_SITE: {
            "mask": jnp.ones((32, 32, 4) if granularity == "pixel" else (4,))}}}
        assert not np.allclose(out, jax.jit(plain.apply)(with_stem, x), atol=1e-3)
    all_kept = {**variables, "relu_masks": {k: {"mask": jnp.ones_like(v["mask"])}
                                            for k, v in variables["relu_masks"].items()}}
    assert not np.allclose(out, jax.jit(dense.apply)(all_kept, x), atol=1e-3)  # masks matter


def test_masks_round_trip_without_pickle(tmp_path):
    sites = mask_sites(spec_from_model_string(SMALL, "digits"), "channel")
    masks = _random_masks(sites)
    save_masks(tmp_path / "m.npz", masks)
    loaded = load_masks(tmp_path / "m.npz", sites)
    assert all(np.array_equal(loaded[k], masks[k]) for k in masks)
    with pytest.raises(SNLError, match="not shaped"):
        load_masks(tmp_path / "m.npz", mask_sites(spec_from_model_string(SMALL, "digits"),
                                                 "pixel"))


def test_settings_defaults_and_validation():
    config = tiny_config()
    settings = build_config(config).snl
    assert (settings.search_learning_rate, settings.lasso, settings.lasso_growth) == \
        (1e-3, 1e-5, 1.1)
    assert (settings.threshold, settings.max_epochs, settings.finetune_epochs) == \
        (1e-2, 2000, 100)
    # public SNL: no fill to the budget, no stem ReLU (both available as options)
    assert (settings.fill_to_budget, settings.mask_stem) == (False, False)
    config.snl.update({"fill_to_budget": True, "mask_stem": True})
    assert (build_config(config).snl.fill_to_budget, build_config(config).snl.mask_stem) == \
        (True, True)
    config.snl.granularity = "layer"
    with pytest.raises(ConfigError, match="snl.granularity='layer': accepted: pixel, channel"):
        build_config(config)


def _snl_config():
    config = tiny_config(model=SMALL, total_steps=2)
    config.snl.update({"epoch_steps": 1, "mask_learning_rate": 0.2, "lasso": 1e-2,
                       "lasso_patience_epochs": 0, "max_epochs": 80, "finetune_steps": 2})
    return config


@pytest.fixture(scope="module")
def snl_dir(tmp_path_factory):
    """A tiny SNL run interrupted in fine-tuning, then completed by a rerun."""
    workdir = tmp_path_factory.mktemp("snl")
    sites = mask_sites(spec_from_model_string(SMALL, "digits"), "pixel")
    budget = int(0.3 * total_relus(sites))
    original = snl_run.finetune

    def interrupted(*args, **kw):
        raise KeyboardInterrupt("simulated interruption")

    snl_run.finetune = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            snl_run.run_snl(_snl_config(), SMALL, budget, workdir, log=lambda m: None)
    finally:
        snl_run.finetune = original
    search_log = (workdir / "search" / "search.jsonl").read_text()
    assert (workdir / "masks.npz").is_file() and not (workdir / "summary.json").exists()
    summary = snl_run.run_snl(_snl_config(), SMALL, budget, workdir, log=lambda m: None)
    assert (workdir / "search" / "search.jsonl").read_text() == search_log  # not searched again
    return workdir, budget, sites, summary


def test_snl_reaches_the_budget_and_reports_the_traced_count(snl_dir):
    workdir, budget, sites, summary = snl_dir
    # public SNL's rule: every mask above the threshold, nothing below it re-admitted
    assert 0 < summary["relus"] <= budget
    assert summary["relus"] == summary["above_threshold"] and summary["filled"] == 0
    assert summary["fill_to_budget"] is False and summary["mask_stem"] is False
    assert summary["linear_sites"] == [STEM_SITE] and STEM_SITE not in {s.name for s in sites}
    assert summary["search_reached_budget"] and summary["search_epochs"] < 80
    masks = load_masks(workdir / "masks.npz", sites)
    assert relu_count(masks, sites) == summary["relus"] == summary["traced_relus"]
    assert traced_relus(spec_from_model_string(SMALL, "digits"), "pixel", masks) == \
        summary["relus"]
    assert summary["relus_before"] == total_relus(sites) and summary["distill"] == "kd"
    assert summary["relus_before"] == count(spec_from_model_string(SMALL, "digits")).relus \
        - STEM_RELUS
    assert json.loads((workdir / "summary.json").read_text()) == summary


def test_snl_writes_variables_and_a_pareto_readable_result(snl_dir):
    workdir, _, sites, summary = snl_dir
    variables, meta = load_variables(workdir)
    assert meta["relus"] == summary["relus"] and meta["granularity"] == "pixel"
    assert "stage1_block1_conv1" in variables["params"]
    assert not any("mask" in v for v in variables["params"].values())
    lines = (workdir / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1
    point = point_from_record(json.loads(lines[0]), "snl")
    assert point.relus == summary["relus"] and point.model == SMALL
    assert point.accuracy == pytest.approx(100 * summary["test_accuracy"], abs=1e-3)


def test_finished_snl_run_is_skipped(snl_dir, monkeypatch):
    workdir, budget, _, summary = snl_dir

    def no_search(*args, **kw):
        raise AssertionError("searched again")

    monkeypatch.setattr(snl_run, "search_masks", no_search)
    assert snl_run.run_snl(_snl_config(), SMALL, budget, workdir, log=lambda m: None) == summary
    assert len((workdir / "results.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("extra, fragment", [
    (["--budget", "10000000"], "nothing to linearize"),
    (["--budget", "10", "--config.snl.thin=all", "--config.snl.granularity=channel"],
     "below one mask entry"),
    (["--budget", "100", "--config.snl.lasso=x"], "expected a number"),
])
def test_snl_cli_rejects_bad_budgets(extra, fragment, tmp_path, capsys):
    argv = ["snl", "--config", str(ROOT / "configs" / "snl_digits.py"), SMALL,
            "--workdir", str(tmp_path / "snl"), *extra]
    assert main(argv) == 2
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "snl" / "pretrained").exists()


@pytest.mark.parametrize("mask_stem", [False, True])
def test_search_model_masks_the_stem_only_when_asked(mask_stem):
    spec = spec_from_model_string(SMALL, "digits")
    model = build_snl_model(spec, mask_granularity="pixel", learnable_masks=True,
                            mask_stem=mask_stem)
    x = jnp.zeros(input_shape(spec, 1))
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)["params"]
    masked = {name for name, leaf in params.items() if "mask" in leaf}
    assert masked == {s.name for s in mask_sites(spec, "pixel", mask_stem)}
    assert (STEM_SITE in masked) is mask_stem


def test_snl_cli_options_restore_fill_and_stem_mask(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_run(config, model, budget, workdir, *args, **kw):
        seen.update(config.snl.__dict__)
        return {"model": model, "granularity": "pixel", "relus": 1, "relus_before": 2,
                "budget": budget, "traced_relus": 1, "test_accuracy": 0.5}

    monkeypatch.setattr(snl_run, "run_snl", fake_run)
    argv = ["snl", "--config", str(ROOT / "configs" / "snl_digits.py"), SMALL, "--budget",
            "5000", "--workdir", str(tmp_path)]
    assert main(argv) == 0
    assert (seen["fill_to_budget"], seen["mask_stem"]) == (False, False)
    assert main(argv + ["--fill-to-budget", "--mask-stem"]) == 0
    assert (seen["fill_to_budget"], seen["mask_stem"]) == (True, True)
    capsys.readouterr()
