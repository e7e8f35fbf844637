"""The SNL procedure end to end: pretrain -> mask search -> binarize -> fine-tune -> record.

Workdir layout (every phase resumes or is skipped when finished)::

    DIR/pretrained/       the network trained normally (unless --pretrained-workdir is given)
    DIR/search/           mask-search checkpoints and search.jsonl (one line per search epoch)
    DIR/search_masks.npz  raw mask values where the search stopped
    DIR/masks.npz         the 0/1 masks (one array per ReLU site, no pickle)
    DIR/finetune/         fine-tuning checkpoints
    DIR/checkpoints/      the final variables: params, batch_stats and relu_masks (orbax)
    DIR/summary.json      relus = kept mask count (= traced count of the sparse masked model)
    DIR/results.jsonl     one line for `hybrenet pareto`
    DIR/run.lock          held for the whole run: a second `hybrenet snl` on DIR is refused
"""

from __future__ import annotations

import logging
import pathlib
import time
from collections.abc import Mapping
from typing import Callable

import jax

from hybrenet_jax.counts import count
from hybrenet_jax.model_string import model_string_with, spec_from_model_string
from hybrenet_jax.netspec import stage_name
from hybrenet_jax.schema import TrainConfig, build_config, updated
from hybrenet_jax.snl.errors import SNLError
from hybrenet_jax.snl.finetune import finetune
from hybrenet_jax.snl.masks import (binarize, load_masks, mask_sites, relu_count, save_masks,
                                    total_relus)
from hybrenet_jax.snl.model import as_float32, build_snl_model, linear_sites
from hybrenet_jax.snl.search import search_masks
from hybrenet_jax.snl.sparse import traced_relus
from hybrenet_jax.train.checkpoint import Checkpointer, load_variables
from hybrenet_jax.train.divergence import finite_numbers
from hybrenet_jax.train.loop import train_once
from hybrenet_jax.train.rundir import (RESULTS, ResultsLog, finished_run_model,
                                       locked_workdir, read_summary, write_summary)
from hybrenet_jax.train.setup import Setup, load_teacher
from hybrenet_jax.variables import validate_variables

Log = Callable[[str], None]


def snl_model(model: str, thin: str, dataset: str) -> str:
    """``model`` with ReLU-Thinning applied first (``thin``: ``S2+S3``, ``all`` or empty)."""
    if not thin:
        return model
    spec = spec_from_model_string(model, dataset)
    stages = "+".join(stage_name(s) for s in range(1, spec.num_stages + 1)
                      if s not in spec.culled) if thin.lower() == "all" else thin
    return model_string_with(model, thin=stages or None)


def check_budget(budget: int, sites, model: str) -> int:
    """Validate a ReLU budget against the maskable ReLUs of ``model``."""
    total = total_relus(sites)
    smallest = min(s.weight for s in sites)
    if budget >= total:
        raise SNLError(f"budget {budget} >= the {total} ReLUs of {model}: nothing to linearize")
    if budget < smallest:
        raise SNLError(f"budget {budget} is below one mask entry ({smallest} ReLUs) of {model}")
    return total


def _pretrained(config: TrainConfig, model: str, workdir: pathlib.Path, given: str | None,
                log: Log) -> str:
    if given:
        recorded = finished_run_model(given, "pretrained")
        if recorded and recorded != model:
            raise SNLError(f"pretrained workdir {given} holds {recorded!r}, not {model!r}")
        return str(given)
    directory = workdir / "pretrained"
    log(f"training the SNL pretrained network {model} in {directory}")
    train_once(updated(config, {"model": model, "distill.kind": "none",
                                "distill.teacher_workdir": ""}), directory, log)
    return str(directory)


def _teacher(config: TrainConfig, setup: Setup, teacher_dir: str):
    if not config.snl.kd:
        return None
    teacher = updated(config, {"distill.teacher_workdir": teacher_dir,
                               "distill.teacher_model": finished_run_model(teacher_dir)})
    return load_teacher(teacher, setup.mesh)


def _initial_variables(spec, pretrained_dir: str) -> tuple[dict, dict]:
    """Pretrained params and BN statistics (best checkpoint if kept), checked against ``spec``."""
    from hybrenet_jax.train.storage import workdir_path  # noqa: PLC0415 (file://, gs:// too)

    which = "best" if (workdir_path(pretrained_dir) / "best").is_dir() else "latest"
    variables, _ = load_variables(pretrained_dir, which)
    variables = validate_variables(spec, variables, f"pretrained run {pretrained_dir}")
    return as_float32(variables["params"]), as_float32(variables.get("batch_stats", {}))


def run_snl(config: TrainConfig | Mapping, model: str, budget: int,
            workdir: str | pathlib.Path, pretrained_workdir: str | None = None,
            teacher_workdir: str | None = None,
            log: Log = logging.getLogger(__name__).info) -> dict:
    """Run SNL on ``model`` for ``budget`` ReLUs; returns (and writes) ``summary.json``.

    Args:
      config: training config (typed, or a mapping built here); ``config.snl`` holds the SNL
        settings.
      model: model string of the network (``config.snl.thin`` is applied to it first).
      budget: ReLUs to keep (count of kept mask entries, in ReLUs).
      workdir: the SNL directory (see the module docstring).
      pretrained_workdir: a finished run of the (thinned) model; default: train one.
      teacher_workdir: KD teacher; default: the pretrained network (as the public scripts).
    """
    start = time.time()
    workdir = pathlib.Path(workdir)
    config = build_config(config)
    settings = config.snl
    model = snl_model(model, settings.thin, config.dataset)
    spec = spec_from_model_string(model, config.dataset)
    sites = mask_sites(spec, settings.granularity, settings.mask_stem)
    total = check_budget(int(budget), sites, model)
    if teacher_workdir:
        finished_run_model(teacher_workdir)
    # the whole procedure holds workdir/run.lock: a second `hybrenet snl` on it is refused
    # (the pretrained run in workdir/pretrained locks that folder itself)
    with locked_workdir(workdir, enabled=jax.process_index() == 0, error=SNLError):
        return _run_snl(config, model, int(budget), workdir, pretrained_workdir,
                        teacher_workdir, spec, sites, total, start, log)


def _run_snl(config: TrainConfig, model: str, budget: int, workdir: pathlib.Path,
             pretrained_workdir: str | None, teacher_workdir: str | None, spec, sites,
             total: int, start: float, log: Log) -> dict:
    """:func:`run_snl` once its inputs are checked and its workdir is locked."""
    settings = config.snl
    done = read_summary(workdir)
    if done is not None:
        log(f"SNL finished already in {workdir}")
        _record(workdir, done)
        return done

    pretrained_dir = _pretrained(config, model, workdir, pretrained_workdir, log)
    setup = Setup.create(config)
    teacher = _teacher(config, setup, teacher_workdir or pretrained_dir)
    params, batch_stats = _initial_variables(spec, pretrained_dir)

    log(f"SNL mask search on {model}: {total} ReLUs -> budget {budget} "
        f"({settings.granularity} masks)")
    found = search_masks(setup, settings, spec, params, batch_stats, teacher, int(budget),
                         workdir / "search", log)
    save_masks(workdir / "search_masks.npz", found.masks)
    binary, kept_info = binarize(found.masks, sites, int(budget), settings.threshold,
                                 settings.fill_to_budget)
    save_masks(workdir / "masks.npz", binary)
    binary = load_masks(workdir / "masks.npz", sites)
    kept = relu_count(binary, sites)
    log(f"SNL binarized: {kept} ReLUs kept ({kept_info['above_threshold']} above threshold, "
        f"{kept_info['filled']} filled)")

    variables = finetune(setup, settings, spec, found.params, found.batch_stats, binary,
                         teacher, workdir / "finetune", log)
    variables = jax.device_get(variables)
    masked = build_snl_model(spec, setup.dtype, settings.granularity, learnable_masks=False,
                             mask_stem=settings.mask_stem)
    metrics = setup.evaluate(setup.eval_step(masked), setup.replicate(variables))
    if not finite_numbers(metrics):  # nothing non-finite reaches summary.json or results
        raise SNLError(f"SNL: the fine-tuned network's test metrics are not finite (loss "
                       f"{metrics['loss']}); nothing was recorded: lower "
                       "snl.finetune_learning_rate and rerun")
    traced = traced_relus(spec, settings.granularity, binary, settings.mask_stem)
    if traced != kept:
        raise RuntimeError(f"traced ReLUs {traced} != kept mask count {kept} (bug)")

    final = Checkpointer(workdir, max_to_keep=1, keep_best=0, use_async=False)
    if found.steps not in final.latest.all_steps():
        final.save(found.steps, variables, {"model": model, "dataset": config.dataset,
                                            "granularity": settings.granularity, "relus": kept},
                   force=True)
    final.close()
    counts = count(spec)
    summary = {
        "model": model, "dataset": config.dataset, "method": "snl",
        "granularity": settings.granularity, "budget": int(budget),
        "distill": "kd" if settings.kd else "none",
        "test_accuracy": metrics["accuracy"], "test_top5": metrics["top5"],
        "test_loss": metrics["loss"], "relus": kept, "traced_relus": traced,
        "relus_before": total, "above_threshold": kept_info["above_threshold"],
        "filled": kept_info["filled"], "fill_to_budget": settings.fill_to_budget,
        "mask_stem": settings.mask_stem,
        "linear_sites": list(linear_sites(spec, settings.mask_stem)),
        "search_epochs": found.epochs,
        "search_steps": found.steps, "search_reached_budget": found.reached,
        "final_lasso": found.lasso, "flops": counts.flops, "macs": counts.macs,
        "params": counts.params, "pretrained_workdir": pretrained_dir,
        "teacher_workdir": (teacher_workdir or pretrained_dir) if settings.kd else "",
        "wall_seconds": time.time() - start,
    }
    write_summary(workdir, summary)
    _record(workdir, summary)
    return summary


def _record(workdir: pathlib.Path, summary: dict) -> None:
    """Append the run's ``results.jsonl`` line (once; accuracy in percent)."""
    results = ResultsLog(workdir / RESULTS)
    if any(r.get("workdir") == str(workdir) for r in results.records()):
        return
    results.append({
        "model": summary["model"], "dataset": summary["dataset"], "role": "snl",
        "network": summary["model"],
        "label": f"SNL {summary['granularity']} {summary['budget']}",
        "distill": summary["distill"], "relus": summary["relus"], "flops": summary["flops"],
        "macs": summary["macs"], "params": summary["params"],
        "accuracy": round(100.0 * summary["test_accuracy"], 4), "budget": summary["budget"],
        "granularity": summary["granularity"], "workdir": str(workdir),
        "mask_stem": summary.get("mask_stem", True),
        "fill_to_budget": summary.get("fill_to_budget", True),
        "wall_seconds": summary["wall_seconds"]})
