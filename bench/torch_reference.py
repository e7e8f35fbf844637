"""PyTorch reference implementation of our networks, written for the throughput benchmark.

The modules are the usual CIFAR ResNet code (as the SNL / DeepReDuce code bases train these
networks): a 3x3 stem conv-BN-ReLU, post-activation BasicBlocks
``conv-BN-ReLU-conv-BN (+ shortcut) -ReLU`` with a 1x1 conv-BN projection shortcut where the
shape changes, global average pooling and a linear classifier; WideResNets use
pre-activation blocks; RegNet-X uses X blocks ``1x1-BN-ReLU-3x3 grouped (nn.Conv2d groups)
-BN-ReLU-1x1-BN (+ shortcut) -ReLU`` as pycls writes them. Every residual block is wired from
its description (``Block.branch_index``). NCHW layout, float32 parameters, ``nn.BatchNorm2d``
with momentum 0.1 (= Flax's 0.9) and eps 1e-5.

Widths, depths and every ReLU decision come from our description: the blocks are built from
:func:`hybrenet_jax.architecture.expand` of the :class:`~hybrenet_jax.netspec.NetSpec`, so a
culled/thinned ReLU is the identity here too and a ReLU-reuse (Re2) conv and its BatchNorm
run the groups of :meth:`hybrenet_jax.architecture.Conv.groups` in order: one dense conv per
group (the reuse group the identity or a strided 1x1 conv), each group's output normalised by
its slice of the BatchNorm and, where the group links, added onto the next group's input before
its conv; the ReLU applies only to the last (ReLU) group. Parameter counts equal
``counts.count(spec).params`` (tested).

The training step is eager PyTorch: ``zero_grad``, forward, cross-entropy, ``backward``,
``torch.optim.SGD(momentum=0.9, weight_decay=5e-4)`` -- or that whole step function
``torch.compile``-d (:class:`TorchStep`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hybrenet_jax.architecture import (RESIDUAL, BatchNorm, Block, Conv, Dense, Pool, ReluSite,
                                       expand)
from hybrenet_jax.netspec import NetSpec

LEARNING_RATE = 0.1
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4


class Relu(nn.Module):
    """One ReLU position: identity when culled/thinned; only the last C/N channels under reuse."""

    def __init__(self, site: ReluSite):
        super().__init__()
        self.kept = site.kept
        self.start = site.relu_start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.kept:
            return x
        if self.start == 0:
            return F.relu(x)
        return torch.cat([x[:, :self.start], F.relu(x[:, self.start:])], dim=1)


def _conv2d(cin: int, cout: int, k: int, stride: int, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False, groups=groups)


class ReuseConv2d(nn.Module):
    """A Re2 conv and its BatchNorm: groups in order, each normalised by its BN slice, linked."""

    def __init__(self, c: Conv, bn: nn.BatchNorm2d):
        super().__init__()
        self.groups = c.groups()
        self.convs = nn.ModuleDict({g.name: _conv2d(g.in_ch, g.out_ch, g.kernel, c.stride)
                                    for g in self.groups if not g.is_identity})
        self.bn = bn

    def _norm(self, y: torch.Tensor, start: int) -> torch.Tensor:
        bn, stop = self.bn, start + y.shape[1]
        # slices of the running buffers are views: training updates them in place
        return F.batch_norm(y, bn.running_mean[start:stop], bn.running_var[start:stop],
                            bn.weight[start:stop], bn.bias[start:stop], self.training,
                            bn.momentum, bn.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs: list[torch.Tensor] = []
        for g in self.groups:
            h = x[:, g.in_start:g.in_stop]
            if g.link:
                h = torch.cat([h[:, :g.link] + outs[-1][:, :g.link], h[:, g.link:]], dim=1)
            if not g.is_identity:
                h = self.convs[g.name](h)
            outs.append(self._norm(h, g.out_start))
        return torch.cat(outs, dim=1)


def make_layers(records) -> list[nn.Module]:
    """One torch module per layer record; a Re2 conv takes over the BatchNorm after it (whose
    own slot becomes ``nn.Identity``)."""
    modules: list[nn.Module] = [make_layer(r) for r in records]
    for i, record in enumerate(records):
        if isinstance(record, Conv) and record.reuse > 1:
            modules[i] = ReuseConv2d(record, modules[i + 1])
            modules[i + 1] = nn.Identity()
    return modules


def make_layer(record) -> nn.Module:
    """The torch module of one layer record of :func:`expand` (Re2 convs: :func:`make_layers`)."""
    if isinstance(record, Conv):
        return _conv2d(record.in_ch, record.out_ch, record.kernel, record.stride,
                       record.feature_groups)
    if isinstance(record, BatchNorm):
        return nn.BatchNorm2d(record.channels, eps=1e-5, momentum=0.1)
    if isinstance(record, ReluSite):
        return Relu(record)
    if isinstance(record, Pool):
        if record.kind == "global":
            return nn.AdaptiveAvgPool2d(1)
        return nn.AvgPool2d(2, 2)
    if isinstance(record, Dense):
        return nn.Sequential(nn.Flatten(), nn.Linear(record.in_features, record.out_features))
    raise TypeError(f"no torch layer for {record!r}")


class ResidualBlock(nn.Module):
    """Any residual block, wired as ``architecture.Block`` states it: the main path up to the
    block's branch point (``pre``), then ``after_add(main(a) + shortcut(a) or x)``."""

    def __init__(self, block: Block):
        super().__init__()
        k = block.branch_index()
        self.pre = nn.Sequential(*make_layers(block.main[:k]))
        self.main = nn.Sequential(*make_layers(block.main[k:]))
        self.shortcut = (nn.Sequential(*make_layers(block.shortcut))
                         if block.shortcut else None)
        self.after_add = nn.Sequential(*make_layers(block.after_add))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.pre(x)
        s = self.shortcut(a) if self.shortcut is not None else x
        return self.after_add(self.main(a) + s)


class PlainBlock(nn.Module):
    """A stem, a head or a final BN-ReLU: its layers in sequence."""

    def __init__(self, block: Block):
        super().__init__()
        self.main = nn.Sequential(*make_layers(block.main))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class ReferenceNet(nn.Module):
    """The torch network of a ResNet-, WRN- or RegNet-X-family spec (NCHW input)."""

    def __init__(self, spec: NetSpec):
        super().__init__()
        if spec.family not in ("resnet", "wrn", "regnetx"):
            raise ValueError(f"the torch reference covers the resnet, wrn and regnetx families, "
                             f"not {spec.family!r}")
        self.spec = spec
        self.blocks = nn.ModuleList(
            (ResidualBlock if b.kind in RESIDUAL else PlainBlock)(b) for b in expand(spec).blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (conv and linear weights, biases, BN scale and shift)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# -- loading our variables (for the equivalence test) -----------------------------------------
def _named_layers(model: ReferenceNet):
    """``(record, torch module)`` for every layer, in :func:`expand` order."""
    for record_block, module in zip(expand(model.spec).blocks, model.blocks):
        if isinstance(module, ResidualBlock):
            k = record_block.branch_index()
            groups = [(record_block.main[:k], module.pre), (record_block.main[k:], module.main),
                      (record_block.shortcut, module.shortcut or ()),
                      (record_block.after_add, module.after_add)]
        else:
            groups = [(record_block.main, module.main)]
        for records, modules in groups:
            yield from zip(records, modules)


def _set(param: torch.Tensor, value: np.ndarray) -> None:
    value = torch.from_numpy(np.array(value, dtype=np.float32, copy=True))
    if tuple(param.shape) != tuple(value.shape):
        raise ValueError(f"shape {tuple(value.shape)} does not fit {tuple(param.shape)}")
    with torch.no_grad():
        param.copy_(value)


def _set_conv(conv: nn.Conv2d, kernel_hwio: np.ndarray) -> None:
    _set(conv.weight, np.transpose(np.asarray(kernel_hwio), (3, 2, 0, 1)))


def load_flax_variables(model: ReferenceNet, variables: Mapping[str, Any]) -> None:
    """Copy Flax variables (``params``/``batch_stats`` of our model) into the torch model."""
    params, stats = variables["params"], variables.get("batch_stats", {})
    previous = None
    for record, module in _named_layers(model):
        if isinstance(record, Conv):
            p = params[record.name]
            if isinstance(module, ReuseConv2d):
                for name, conv in module.convs.items():
                    _set_conv(conv, p[name]["kernel"])
            else:
                _set_conv(module, p["kernel"])
        elif isinstance(record, BatchNorm):
            if isinstance(module, nn.Identity):  # applied inside the Re2 conv before it
                module = previous.bn
            _set(module.weight, params[record.name]["scale"])
            _set(module.bias, params[record.name]["bias"])
            _set(module.running_mean, stats[record.name]["mean"])
            _set(module.running_var, stats[record.name]["var"])
        elif isinstance(record, Dense):
            linear = module[1]
            _set(linear.weight, np.asarray(params[record.name]["kernel"]).T)
            _set(linear.bias, params[record.name]["bias"])
        previous = module


# -- the training step ----------------------------------------------------------------------
class TorchStep:
    """One SGD training step on a fixed batch, eager or ``torch.compile``-d as a whole.

    Tuned the way PyTorch users run on a GPU: ``channels_last`` activations and weights,
    ``torch.backends.cudnn.benchmark``, bfloat16 ``autocast`` for the bfloat16 rows, and with
    ``compile=True`` the whole step (zero_grad, forward, loss, backward, optimizer) inside one
    ``torch.compile``-d function (dynamo breaks the graph at ``backward`` and compiles the
    forward, the backward via AOTAutograd and the optimizer update).
    """

    def __init__(self, spec: NetSpec, batch: int, compile: bool = False, device: str = "cpu",
                 dtype: str = "float32", seed: int = 0, channels_last: bool = False):
        torch.manual_seed(seed)
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.model = ReferenceNet(spec).to(self.device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LEARNING_RATE,
                                         momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        gen = np.random.default_rng(seed)
        x = gen.standard_normal((batch, spec.in_channels, spec.input_size, spec.input_size),
                                dtype=np.float32)
        y = gen.integers(0, spec.classes, batch)
        self.x = torch.from_numpy(x).to(self.device).contiguous(memory_format=self.memory_format)
        self.y = torch.from_numpy(y).to(self.device)
        self.autocast = dtype == "bfloat16"
        self.compiled = compile
        self._step = torch.compile(self._eager_step) if compile else self._eager_step
        self.model.train()
        self._loss: torch.Tensor | None = None

    def _eager_step(self) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            logits = self.model(self.x)
        loss = F.cross_entropy(logits.float(), self.y)
        loss.backward()
        self.optimizer.step()
        return loss

    def run(self) -> None:
        self._loss = self._step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def loss(self) -> float:
        return float(self._loss.detach()) if self._loss is not None else float("nan")

    def peak_bytes(self) -> int | None:
        """Peak device memory allocated by tensors so far (CUDA only)."""
        return torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None

    def extra(self) -> dict:
        """torch.compile's graph counters (how often dynamo compiled), else nothing."""
        if not self.compiled:
            return {}
        from torch._dynamo.utils import counters

        return {"dynamo_" + k: v for k, v in counters["stats"].items()}


def versions() -> dict[str, str]:
    """torch version and its CPU math back-end facts."""
    return {"torch": torch.__version__, "torch_threads": str(torch.get_num_threads()),
            "mkldnn": str(torch.backends.mkldnn.is_available())}
