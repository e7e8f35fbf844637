"""Analytic counts (ReLUs, MACs, FLOPs, params) from the network description alone.

Conventions (spec §3, the paper's tables):

* ``relus``: scalar ReLUs evaluated for one image (culled/thinned positions excluded, reuse
  factor N divides a site's count by N); ``stage_relus`` per stage, stem in Stage1.
* ``macs``: conv MACs (strided convs at their output resolution) + FC MACs.
* ``flops``: ``macs`` + one per BatchNorm output element + one per element at every ReLU
  position of the base network (a culled or thinned ReLU still counts).
* ``params``: conv weights, BN scale/bias, FC weights and biases (no BN running statistics).
"""

from __future__ import annotations

import dataclasses

from hybrenet_jax.architecture import Architecture, BatchNorm, Conv, Dense, ReluSite, expand
from hybrenet_jax.netspec import NetSpec


@dataclasses.dataclass(frozen=True)
class Counts:
    """Per-image cost counts of one network."""

    relus: int
    stage_relus: tuple[int, ...]
    macs: int
    flops: int
    params: int
    stage_flops: tuple[int, ...]
    relu_positions: int

    @property
    def stage_relu_share(self) -> tuple[float, ...]:
        """Percentage of the network's ReLUs in each stage (0 for a ReLU-free network)."""
        total = self.relus
        return tuple(100.0 * r / total if total else 0.0 for r in self.stage_relus)

    def as_dict(self) -> dict:
        """Plain-JSON view (lists instead of tuples)."""
        d = dataclasses.asdict(self)
        d["stage_relus"] = list(self.stage_relus)
        d["stage_flops"] = list(self.stage_flops)
        d["stage_relu_share"] = [round(x, 4) for x in self.stage_relu_share]
        return d


def layer_flops(layer) -> int:
    """FLOPs of one layer record under the paper's convention."""
    if isinstance(layer, (Conv, Dense)):
        return layer.macs
    if isinstance(layer, BatchNorm):
        return layer.elements
    if isinstance(layer, ReluSite):
        return layer.positions
    return 0


def layer_params(layer) -> int:
    """Trainable parameters of one layer record."""
    return getattr(layer, "params", 0)


def count(net: NetSpec | Architecture) -> Counts:
    """Count ReLUs, MACs, FLOPs and params of a spec (or an already expanded architecture)."""
    arch = net if isinstance(net, Architecture) else expand(net)
    stages = arch.spec.num_stages
    stage_relus = [0] * stages
    stage_flops = [0] * stages
    macs = params = positions = 0
    for layer in arch.layers():
        stage_flops[layer.stage - 1] += layer_flops(layer)
        params += layer_params(layer)
        if isinstance(layer, (Conv, Dense)):
            macs += layer.macs
        elif isinstance(layer, ReluSite):
            stage_relus[layer.stage - 1] += layer.relus
            positions += layer.positions
    return Counts(
        relus=sum(stage_relus),
        stage_relus=tuple(stage_relus),
        macs=macs,
        flops=sum(stage_flops),
        params=params,
        stage_flops=tuple(stage_flops),
        relu_positions=positions,
    )
