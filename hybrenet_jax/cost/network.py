"""Private-inference cost of a whole network: HE for convs/FCs, GC for ReLUs (Delphi).

Walks :func:`hybrenet_jax.architecture.expand`'s layers in execution order:

* ``Conv``: Delphi HE at the layer's input resolution. A ReLU-reuse (grouped) conv costs the
  sum of its dense groups (``Conv.group_convs``: one per group with a kernel; a pass-through
  reuse group costs nothing), each packed on its own (default), or, with ``dense_grouped``,
  the dense ``in_ch -> out_ch`` conv it replaces. The Res2Net links between the groups add
  ciphertexts and are not charged. A RegNet-X grouped conv (``feature_groups`` G) is charged
  the same way, by assumption: G independent dense convs of ``in_ch/G -> out_ch/G`` channels,
  each packed on its own (Delphi has no grouped-conv kernel; packing several groups into one
  ciphertext could be cheaper and is not modelled), or with ``dense_grouped`` the dense conv.
* ``Dense``: Delphi's FC packing.
* ``ReluSite``: its evaluated ReLUs go through garbled circuits.
* BatchNorm folds into the preceding conv; pooling and residual adds are linear on secret
  shares, so all three cost nothing here.

Phases: offline = server HE + client encrypt/decrypt + server garbling; online = client GC
evaluation (the online linear layers are plaintext arithmetic on shares and are not modelled).
"""

from __future__ import annotations

import dataclasses
from typing import Union

from hybrenet_jax.architecture import Architecture, Conv, Dense, ReluSite, expand
from hybrenet_jax.counts import count
from hybrenet_jax.cost.constants import Calibration, load_calibration
from hybrenet_jax.cost.gc import (DEFAULT_CLIENT_DEVICE, DEFAULT_THREADS, check_threads,
                                  gc_cost)
from hybrenet_jax.cost.packing import HeOps, LayerShape, conv_ops, fc_ops
from hybrenet_jax.model_string import spec_from_model_string
from hybrenet_jax.netspec import NetSpec

Network = Union[str, NetSpec, Architecture]


@dataclasses.dataclass(frozen=True)
class LinearCost(LayerShape):
    """HE cost of one conv or FC layer (its geometry: :class:`LayerShape`)."""

    name: str
    stage: int
    groups: tuple[tuple[int, int, int], ...]
    ops: HeOps
    he_seconds: float
    client_he_seconds: float
    he_bytes: float

    def as_dict(self) -> dict:
        """Plain-JSON view (one ``--per-layer`` record)."""
        d = dataclasses.asdict(self)
        d = {"name": d.pop("name"), "stage": d.pop("stage"), **d}  # name first, as printed
        d["groups"] = [list(g) for g in self.groups]
        d["ops"] = self.ops.as_dict()
        return d


@dataclasses.dataclass(frozen=True)
class ReluCost:
    """GC cost of one ReLU site."""

    name: str
    stage: int
    channels: int
    hw: int
    state: str
    relus: int
    gc_seconds: float
    kind: str = "relu"

    def as_dict(self) -> dict:
        """Plain-JSON view (one ``--per-layer`` record)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class NetworkCost:
    """Estimated Delphi private-inference cost of one network for one image."""

    model: str
    dataset: str
    threads: int
    server_device: str
    client_device: str
    dense_grouped: bool
    relus: int
    flops: int
    macs: int
    he_seconds: float
    client_he_seconds: float
    gc_garble_seconds: float
    gc_evaluate_seconds: float
    he_ops: HeOps
    he_bytes: float
    gc_storage_bytes: float
    gc_offline_bytes: float
    gc_online_bytes: float
    stage_he_seconds: tuple[float, ...]
    layers: tuple[Union[LinearCost, ReluCost], ...]

    @property
    def gc_seconds(self) -> float:
        return self.gc_garble_seconds + self.gc_evaluate_seconds

    @property
    def offline_seconds(self) -> float:
        return self.he_seconds + self.client_he_seconds + self.gc_garble_seconds

    @property
    def online_seconds(self) -> float:
        return self.gc_evaluate_seconds

    @property
    def total_seconds(self) -> float:
        return self.offline_seconds + self.online_seconds

    @property
    def offline_bytes(self) -> float:
        return self.he_bytes + self.gc_offline_bytes

    def as_dict(self, per_layer: bool = False) -> dict:
        """Plain-JSON view; ``per_layer`` adds the ``layers`` list."""
        d = {
            "model": self.model, "dataset": self.dataset, "threads": self.threads,
            "server_device": self.server_device, "client_device": self.client_device,
            "dense_grouped": self.dense_grouped,
            "relus": self.relus, "flops": self.flops, "macs": self.macs,
            "he_seconds": self.he_seconds, "client_he_seconds": self.client_he_seconds,
            "gc_garble_seconds": self.gc_garble_seconds,
            "gc_evaluate_seconds": self.gc_evaluate_seconds,
            "gc_seconds": self.gc_seconds,
            "offline_seconds": self.offline_seconds, "online_seconds": self.online_seconds,
            "total_seconds": self.total_seconds,
            "stage_he_seconds": list(self.stage_he_seconds),
            "he_ops": self.he_ops.as_dict(),
            "he_bytes": self.he_bytes, "gc_storage_bytes": self.gc_storage_bytes,
            "offline_bytes": self.offline_bytes, "online_bytes": self.gc_online_bytes,
        }
        if per_layer:
            d["layers"] = [layer.as_dict() for layer in self.layers]
        return d


def conv_groups(layer: Conv, dense_grouped: bool = False) -> tuple[tuple[int, int, int], ...]:
    """The dense convs Delphi runs for ``layer`` (``(in_ch, out_ch, kernel)``, empty groups
    dropped)."""
    if dense_grouped:
        return ((layer.in_ch, layer.out_ch, layer.kernel),)
    return tuple(g for g in layer.group_convs() if g[0] > 0 and g[1] > 0)


def linear_cost(layer: Conv | Dense, cal: Calibration, dense_grouped: bool = False
                ) -> LinearCost:
    """HE cost of one conv/FC layer record."""
    if isinstance(layer, Conv):
        groups = conv_groups(layer, dense_grouped)
        ops = sum((conv_ops(ci, co, k, layer.in_hw) for ci, co, k in groups), HeOps())
        shape = ("conv", layer.in_ch, layer.out_ch, layer.kernel, layer.stride, layer.in_hw)
    else:
        groups = ((layer.in_features, layer.out_features, 1),)
        ops = fc_ops(layer.in_features, layer.out_features)
        shape = ("fc", layer.in_features, layer.out_features, 1, 1, 1)
    return LinearCost(*shape, name=layer.name, stage=layer.stage, groups=groups, ops=ops,
                      he_seconds=cal.he_seconds(ops), client_he_seconds=cal.client_he_seconds(ops),
                      he_bytes=cal.he_bytes(ops))


def _architecture(net: Network, dataset: str) -> tuple[str, Architecture]:
    if isinstance(net, str):
        return net, expand(spec_from_model_string(net, dataset))
    if isinstance(net, NetSpec):
        return net.name, expand(net)
    return net.spec.name, net


def estimate(net: Network, dataset: str = "cifar100", threads: int = DEFAULT_THREADS,
             client_device: str = DEFAULT_CLIENT_DEVICE, dense_grouped: bool = False,
             calibration: Calibration | None = None) -> NetworkCost:
    """Delphi cost of one inference of ``net`` (a model string, spec or architecture).

    ``dataset`` sets a model string's input size and classes (for a spec or architecture it is
    only recorded). ``threads`` divides the GC times; server HE stays single-threaded, as
    Delphi's convolution code runs.
    """
    cal = calibration or load_calibration()
    check_threads(threads)
    cal.device(client_device)  # validate early, with the list of accepted names
    model, arch = _architecture(net, dataset)
    counts = count(arch)
    records: list[Union[LinearCost, ReluCost]] = []
    total_ops = HeOps()
    stage_he = [0.0] * arch.spec.num_stages
    he_seconds = client_seconds = he_bytes = 0.0
    for layer in arch.layers():
        if isinstance(layer, (Conv, Dense)):
            rec = linear_cost(layer, cal, dense_grouped)
            total_ops += rec.ops
            he_seconds += rec.he_seconds
            client_seconds += rec.client_he_seconds
            he_bytes += rec.he_bytes
            stage_he[layer.stage - 1] += rec.he_seconds
            records.append(rec)
        elif isinstance(layer, ReluSite):
            site_gc = gc_cost(layer.relus, threads, client_device, calibration=cal)
            records.append(ReluCost(layer.name, layer.stage, layer.channels, layer.hw,
                                    layer.state, layer.relus, site_gc.seconds))
    gc = gc_cost(counts.relus, threads, client_device, calibration=cal)
    return NetworkCost(
        model=model, dataset=dataset,
        threads=threads, server_device=cal.server_device, client_device=client_device,
        dense_grouped=dense_grouped, relus=counts.relus, flops=counts.flops, macs=counts.macs,
        he_seconds=he_seconds, client_he_seconds=client_seconds,
        gc_garble_seconds=gc.garble_seconds, gc_evaluate_seconds=gc.evaluate_seconds,
        he_ops=total_ops, he_bytes=he_bytes, gc_storage_bytes=gc.storage_bytes,
        gc_offline_bytes=gc.offline_bytes, gc_online_bytes=gc.online_bytes,
        stage_he_seconds=tuple(stage_he), layers=tuple(records),
    )
