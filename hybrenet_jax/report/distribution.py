"""Stage-wise distribution of ReLUs and FLOPs: stacked bars per network."""

from __future__ import annotations

import pathlib
from typing import Sequence

from hybrenet_jax.counts import count
from hybrenet_jax.report.points import ReportError
from hybrenet_jax.model_string import spec_from_model_string
from hybrenet_jax.netspec import parse_stage_name, stage_name, stage_names
from hybrenet_jax.report.plots import DPI, check_image_path, new_figure, save_figure

#: Figure height (inches) and width per network (inches, plus a margin) of each of 2 panels.
HEIGHT_IN = 4.8
PER_NETWORK_IN = 0.9
MARGIN_IN = 2.4
_STAGE_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def figure_pixels(networks: int) -> tuple[int, int]:
    """PNG width and height in pixels of a distribution plot of ``networks`` networks."""
    return (round(2 * (MARGIN_IN + PER_NETWORK_IN * networks) * DPI),
            round(HEIGHT_IN * DPI))


def parse_order(text: str, num_stages: int) -> tuple[int, ...]:
    """``"S3,S2,S4,S1"`` -> ``(3, 2, 4, 1)``; must name every stage exactly once."""
    stages = tuple(parse_stage_name(tok, num_stages) for tok in text.split(","))
    if sorted(stages) != list(range(1, num_stages + 1)):
        raise ReportError(
            f"--order {text!r} must list each of the {num_stages} stages exactly once "
            f"(most critical first), e.g. "
            + stage_names(range(num_stages, 0, -1)))
    return stages


def stage_shares(models: Sequence[str], dataset: str) -> list[tuple[list[float], list[float]]]:
    """Per model: (ReLU share %, FLOPs share %) of each stage."""
    out = []
    for model in models:
        c = count(spec_from_model_string(model, dataset))
        flops = [100.0 * f / c.flops for f in c.stage_flops]
        out.append((list(c.stage_relu_share), flops))
    return out


def plot_distribution(models: Sequence[str], path: str | pathlib.Path,
                      dataset: str = "cifar100", order: str | None = None) -> pathlib.Path:
    """Stacked bars of each network's stage-wise share of ReLUs and of FLOPs.

    With ``order`` (criticality, most critical first) each stage is labelled with its rank.
    """
    if not models:
        raise ReportError("plot-distribution needs at least one model string")
    path = check_image_path(path)  # before the counts and the drawing
    shares = stage_shares(models, dataset)
    num_stages = max(len(r) for r, _ in shares)
    ranks: dict[int, int] = {}
    if order:
        if any(len(r) != num_stages for r, _ in shares):
            raise ReportError("--order needs networks with the same number of stages")
        ranks = {stage: i + 1 for i, stage in enumerate(parse_order(order, num_stages))}
    width_px, height_px = figure_pixels(len(models))
    fig = new_figure(width_px / DPI, height_px / DPI)
    axes = fig.subplots(1, 2)
    x = range(len(models))
    for ax, which, title in ((axes[0], 0, "ReLUs"), (axes[1], 1, "FLOPs")):
        bottom = [0.0] * len(models)
        for s in range(num_stages):
            values = [share[which][s] if s < len(share[which]) else 0.0 for share in shares]
            label = stage_name(s + 1) + (f" (criticality #{ranks[s + 1]})" if ranks else "")
            most = ranks.get(s + 1) == 1
            bars = ax.bar(x, values, bottom=bottom, color=_STAGE_COLORS[s % 6], label=label,
                          edgecolor="black" if most else "white", linewidth=1.5 if most else 0.5)
            for bar, v, b in zip(bars, values, bottom):
                if v >= 6:
                    text = f"{v:.0f}%" + (f"\n#{ranks[s + 1]}" if ranks else "")
                    ax.text(bar.get_x() + bar.get_width() / 2, b + v / 2, text, ha="center",
                            va="center", fontsize="x-small", color="white",
                            fontweight="bold" if most else "normal")
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_xticks(list(x), models, rotation=30, ha="right", fontsize="x-small")
        ax.set_ylim(0, 100)
        ax.set_ylabel(f"share of {title} (%)")
        ax.set_title(f"stage-wise {title} ({dataset})")
    axes[1].legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if ranks:
        fig.suptitle("criticality order: " + stage_names(
            (s for s, _ in sorted(ranks.items(), key=lambda kv: kv[1])), " > "))
    return save_figure(fig, path)
