"""Matplotlib (Agg canvas, no pyplot state) plots of accuracy-vs-cost frontiers."""

from __future__ import annotations

import errno
import pathlib
from typing import Mapping, Sequence

from hybrenet_jax.report.frontier import Metric, costed, pareto_front
from hybrenet_jax.report.points import OURS, Point, ReportError

#: One panel per dataset, this many inches each, saved at DPI (so the PNG size is exact).
PANEL_INCHES = (6.4, 4.8)
DPI = 100

_COLORS = {OURS: "black", "HybReNet": "tab:red", "SNL": "tab:blue", "SENet": "tab:green",
           "SNL+Thinning": "tab:purple", "ConvNeXt": "tab:orange"}
_MARKERS = {OURS: "*", "HybReNet": "o", "SNL": "s", "SENet": "^", "SNL+Thinning": "D",
            "ConvNeXt": "v"}
_SPARE_COLORS = ("tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


def figure_pixels(panels: int) -> tuple[int, int]:
    """PNG width and height in pixels of a figure with ``panels`` side-by-side panels."""
    return round(PANEL_INCHES[0] * panels * DPI), round(PANEL_INCHES[1] * DPI)


def image_formats() -> tuple[str, ...]:
    """File suffixes (without the dot) the Agg canvas can write, e.g. ``png``, ``pdf``, ``svg``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return tuple(sorted(FigureCanvasAgg.get_supported_filetypes()))


def check_image_path(path: str | pathlib.Path) -> pathlib.Path:
    """Check, before anything is drawn, that an image can be written at ``path``.

    Raises:
      ReportError: one line: the suffix is not an image format (naming the accepted ones),
        ``path`` is a folder, or its folder is missing or not a folder.
    """
    path = pathlib.Path(path)
    shown = shown_path(path)
    suffix = path.suffix.lower().lstrip(".")
    formats = image_formats()
    if suffix not in formats:
        what = f"unknown image format {shown_path('.' + suffix)!r}" if suffix else (
            "no image suffix")
        raise ReportError(f"output file {shown}: {what}; accepted: "
                          + ", ".join(f".{f}" for f in formats))
    try:
        if path.is_dir():
            raise ReportError(f"output file {shown} is a folder; give a file name such as "
                              f"{shown_path(path / 'plot.png')}")
        parent = path.parent
        if not parent.exists():
            raise ReportError(f"output file {shown}: folder {shown_path(parent)} does not "
                              "exist; create it first")
        if not parent.is_dir():
            raise ReportError(f"output file {shown}: {shown_path(parent)} is not a folder")
    except OSError as err:  # e.g. a name too long for the file system
        raise ReportError(f"output file {shown}: {err.strerror or err}") from None
    return path


def shown_path(path: str | pathlib.Path, limit: int = 160) -> str:
    """``path`` as text, shortened in the middle to ``limit`` characters for messages."""
    text = str(path)
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return f"{text[:half]}[...]{text[-half:]}"


def save_figure(fig, path: str | pathlib.Path) -> pathlib.Path:
    """``fig.savefig(path)`` at :data:`DPI`; a write that fails is one :class:`ReportError`."""
    from hybrenet_jax.train.rundir import atomic_file  # noqa: PLC0415

    path = pathlib.Path(path)
    try:  # rendered to memory, then a temporary sibling renamed over path
        with atomic_file(path, "wb") as f:
            fig.savefig(f, dpi=DPI, format=path.suffix.lstrip(".").lower() or "png")
    except OSError as err:
        raise ReportError(f"cannot write {shown_path(path)}: {os_reason(err, path)}") from None
    return path


def os_reason(err: OSError, path: pathlib.Path) -> str:
    """``err``'s reason, saying "does not accept new files" where the folder exists but a
    file cannot be created in it (``/proc``, which answers "No such file or directory")."""
    if err.errno == errno.ENOENT and path.parent.is_dir() and not path.exists():
        return f"{path.parent} does not accept new files"
    return err.strerror or str(err)


def new_figure(width_in: float, height_in: float):
    """A matplotlib Figure drawn by the Agg canvas (no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style(method: str, spare: dict[str, str]) -> tuple[str, str]:
    if method not in _COLORS and method not in spare:
        spare[method] = _SPARE_COLORS[len(spare) % len(_SPARE_COLORS)]
    return _COLORS.get(method) or spare[method], _MARKERS.get(method, "P")


def _log_x(ax) -> None:
    """Log x axis labelled at 1-2-5 steps in plain numbers (no crowded minor labels)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_metric(points: Sequence[Point], metric: Metric, path: str | pathlib.Path,
                subjects: Mapping[str, str] | None = None) -> pathlib.Path:
    """Accuracy vs ``metric`` (log x), one panel per dataset: every method's points and its
    frontier line; the subject method of each dataset (``subjects``) is drawn on top."""
    datasets = sorted({p.dataset for p in points}) or ["(no points)"]
    fig = new_figure(PANEL_INCHES[0] * len(datasets), PANEL_INCHES[1])
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    spare: dict[str, str] = {}
    for ax, dataset in zip(axes, datasets):
        subject = (subjects or {}).get(dataset)
        group = costed([p for p in points if p.dataset == dataset], metric)
        methods = sorted({p.method for p in group}, key=lambda m: (m == subject, m))
        for method in methods:
            mine = [p for p in group if p.method == method]
            color, marker = _style(method, spare)
            emphasis = method == subject
            ax.scatter([metric.get(p) / metric.scale for p in mine],
                       [p.accuracy for p in mine], color=color, marker=marker,
                       s=90 if emphasis else 30, alpha=0.9, zorder=3 if emphasis else 2,
                       label=method + (" (frontier compared)" if emphasis else ""))
            front = pareto_front(mine, metric)
            ax.plot([metric.get(p) / metric.scale for p in front],
                    [p.accuracy for p in front], color=color,
                    linewidth=2.2 if emphasis else 1.0, zorder=3 if emphasis else 1)
        if group:
            _log_x(ax)
            ax.legend(fontsize="small", loc="lower right")
        else:
            ax.text(0.5, 0.5, f"no points with {metric.key}", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set_xlabel(metric.label)
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(dataset)
        ax.grid(True, which="both", alpha=0.3)
    return save_figure(fig, path)
