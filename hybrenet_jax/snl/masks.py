"""ReLU masks: where they live, how many ReLUs they keep, and binarization to a budget.

A mask sits at every kept ReLU site of the network (culled/thinned sites are already linear).
Shapes follow :class:`hybrenet_jax.models.ReluGate`: ``(C,)`` per channel, ``(H, W, C)`` per
pixel. One mask entry stands for ``weight`` scalar ReLUs of one image: ``H*W`` per channel,
1 per pixel. The ReLU count of a set of masks is the sum of the weights of its kept entries.

Flat entry indices (used by :mod:`hybrenet_jax.snl.sparse`) are C-order over the mask shape,
which for a per-pixel mask equals the index into one image's NHWC activation ``x[b].ravel()``.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import zipfile
from typing import Mapping

import numpy as np

from hybrenet_jax.architecture import ReluSite, expand
from hybrenet_jax.netspec import NetSpec
from hybrenet_jax.schema import GRANULARITIES
from hybrenet_jax.snl.errors import SNLError
from hybrenet_jax.train.rundir import atomic_file, writing

Masks = dict[str, np.ndarray]
#: Name of the stem's ReLU site (ResNet-family networks; WRN and VGG have none). SNL leaves
#: it unmasked and linear by default, as in the public SNL models (see snl/model.py).
STEM_SITE = "stem_relu"


@dataclasses.dataclass(frozen=True)
class MaskSite:
    """One masked ReLU site: its name (the Flax module name), mask shape and entry weight."""

    name: str
    site: ReluSite
    shape: tuple[int, ...]
    weight: int

    @property
    def relus(self) -> int:
        """ReLUs of the site when every entry is kept (= ``site.relus``)."""
        return int(np.prod(self.shape)) * self.weight


def mask_sites(spec: NetSpec, granularity: str, mask_stem: bool = False) -> list[MaskSite]:
    """The masked sites of ``spec`` in execution order.

    Every kept ReLU site, except the stem's unless ``mask_stem``: public SNL has no stem
    ReLU, so by default the stem is linear and outside the masks (:mod:`.model`).
    """
    if granularity not in GRANULARITIES:
        raise SNLError(f"granularity={granularity!r}; accepted: {', '.join(GRANULARITIES)}")
    if spec.reuse > 1:
        raise SNLError("SNL masks are defined on plain ReLU layers; remove reuse= from the "
                       "model string")
    sites = []
    for site in expand(spec).relu_sites():
        if not site.kept or (site.name == STEM_SITE and not mask_stem):
            continue
        if granularity == "channel":
            sites.append(MaskSite(site.name, site, (site.channels,), site.hw ** 2))
        else:
            sites.append(MaskSite(site.name, site, (site.hw, site.hw, site.channels), 1))
    if not sites:
        raise SNLError(f"{spec.name or 'the network'} has no ReLUs left to linearize")
    return sites


def total_relus(sites: list[MaskSite]) -> int:
    """ReLUs of the network with every mask entry kept."""
    return sum(s.relus for s in sites)


def masks_from_params(params: Mapping, sites: list[MaskSite]) -> Masks:
    """Mask values (host numpy) out of a Flax ``params`` tree of a learnable-mask model."""
    return {s.name: np.asarray(params[s.name]["mask"], np.float32) for s in sites}


def strip_masks(params: Mapping, sites: list[MaskSite]) -> dict:
    """``params`` without the mask entries (the tree of the unmasked model)."""
    names = {s.name for s in sites}
    out = {}
    for key, value in params.items():
        if key in names:
            rest = {k: v for k, v in value.items() if k != "mask"}
            if rest:
                out[key] = rest
        else:
            out[key] = value
    return out


def with_masks(params: Mapping, masks: Mapping[str, np.ndarray]) -> dict:
    """``params`` with ``{site: {"mask": value}}`` entries added (learnable-mask tree)."""
    out = dict(params)
    for name, value in masks.items():
        out[name] = {**dict(out.get(name, {})), "mask": value}
    return out


def relu_count(masks: Mapping[str, np.ndarray], sites: list[MaskSite],
               threshold: float = 0.5) -> int:
    """ReLUs kept by ``masks``: weights of entries above ``threshold``."""
    return int(sum(int(np.count_nonzero(np.asarray(masks[s.name]) > threshold)) * s.weight
                   for s in sites))


def binarize(masks: Mapping[str, np.ndarray], sites: list[MaskSite], budget: int,
             threshold: float, fill: bool = False) -> tuple[Masks, dict]:
    """0/1 masks keeping at most ``budget`` ReLUs; entries with larger values go first.

    Entries are visited from the largest mask value down (ties: execution order, then flat
    index) and kept while the running ReLU count stays within ``budget``. With ``fill`` off (the
    default) only entries above ``threshold`` are eligible — SNL's rule, which after a
    successful search keeps every such entry. With ``fill`` on (ours), the largest entries below
    the threshold may fill the remaining budget too (so the kept count lands within one entry's
    weight of the budget).

    Returns:
      ``(binary masks, info)`` with info ``above_threshold`` (ReLUs above the threshold),
      ``kept`` (ReLUs kept) and ``filled`` (ReLUs re-admitted below the threshold).
    """
    values = np.concatenate([np.asarray(masks[s.name], np.float64).ravel() for s in sites])
    weights = np.concatenate([np.full(int(np.prod(s.shape)), s.weight, np.int64)
                              for s in sites])
    order = np.lexsort((np.arange(values.size), -values))  # value desc, then position
    eligible = values[order] > threshold if not fill else np.ones(values.size, bool)
    keep = np.zeros(values.size, bool)
    used = 0
    for position, ok in zip(order, eligible):
        if not ok:
            break
        w = int(weights[position])
        if used + w <= budget:
            keep[position] = True
            used += w
        elif weights.min() == weights.max() or used >= budget:
            break
    binary: Masks = {}
    offset = 0
    for s in sites:
        n = int(np.prod(s.shape))
        binary[s.name] = keep[offset:offset + n].reshape(s.shape).astype(np.float32)
        offset += n
    below = values <= threshold
    return binary, {"above_threshold": int(weights[~below].sum()),
                    "kept": int(weights[keep].sum()),
                    "filled": int(weights[keep & below].sum())}


def kept_indices(binary: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """Flat (C-order) indices of the kept entries of each 0/1 mask."""
    return {name: tuple(int(i) for i in np.flatnonzero(np.asarray(m).ravel() > 0.5))
            for name, m in binary.items()}


def save_masks(path: str | os.PathLike, masks: Mapping[str, np.ndarray]) -> None:
    """Write masks to an ``.npz`` (plain arrays, no pickle), atomically."""
    path = pathlib.Path(path)
    with writing(path), atomic_file(path, "wb") as f:  # a unique temporary name, then rename
        np.savez(f, **{k: np.asarray(v, np.float32) for k, v in masks.items()})


def load_masks(path: str | os.PathLike, sites: list[MaskSite] | None = None) -> Masks:
    """Read masks written by :func:`save_masks` (shapes checked against ``sites``)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            masks = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise SNLError(f"masks file {path} does not exist") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise SNLError(f"masks file {path} is damaged ({type(err).__name__}: "
                       f"{str(err)[:100]}); delete it and rerun to binarize again") from None
    if sites is not None:
        for s in sites:
            if s.name not in masks or masks[s.name].shape != s.shape:
                raise SNLError(f"{path}: mask of {s.name} is missing or not shaped {s.shape}")
    return masks
