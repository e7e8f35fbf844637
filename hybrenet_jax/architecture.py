"""Layer-level expansion of a :class:`~hybrenet_jax.netspec.NetSpec`.

:func:`expand` turns a spec into an :class:`Architecture`: named blocks holding layer records
(convs, BatchNorms, ReLU sites, pools, dense layers) in execution order. The analytic counts,
the Flax model, the cost model and the exporter all walk this one structure.

Layer names are stable and readable (``stem_conv``, ``stage2_block1_conv1``,
``stage2_block1_relu1``, ``head_fc``) so parameter paths and exports stay legible.

ReLU placement rules
--------------------
* Post-activation BasicBlock (family ``resnet``): ``conv1-bn1-relu1-conv2-bn2 (+shortcut)
  -relu2``. Thinning keeps ``relu1`` (the inner ReLU, as DeepReDuce's released models do)
  and drops ``relu2``; thinning Stage1 also drops the stem ReLU.
* Pre-activation block (family ``wrn``): ``bn1-relu1-conv1-bn2-relu2-conv2 (+shortcut)``, the
  projection shortcut reading the activated input; a final ``bn-relu`` before pooling belongs to
  the last stage. Thinning keeps ``relu2`` (the inner ReLU) and drops ``relu1`` and the final ReLU.
* X block (family ``regnetx``, RegNet-X's residual bottleneck with ratio 1):
  ``conv1 (1x1)-bn1-relu1-conv2 (3x3, groups of group_width channels, the block's stride)-bn2
  -relu2-conv3 (1x1)-bn3 (+shortcut: 1x1 conv-BN where the shape changes)-relu3``. Thinning
  keeps ``relu2`` (the inner ReLU, after the grouped conv) and drops ``relu1`` and ``relu3``;
  thinning Stage1 also drops the stem ReLU. ReLU-reuse is not defined for X blocks (rejected
  by :class:`~hybrenet_jax.netspec.NetSpec`). Geometry ``cifar`` (the project's convention):
  3x3 stride-1 stem conv-BN-ReLU of ``stem_width`` (32) channels, Stage1 unstrided; ``imagenet``
  (RegNet's own): stride-2 stem and a stride-2 first block in every stage.
* Plain layer (family ``vgg``): ``conv-bn-relu``; thinning keeps the 1st, 3rd, ... layer of a
  stage. The classifier's two hidden ReLUs belong to the last stage (thinning keeps the first).
* Culling removes every ReLU of a stage; a culled or thinned ReLU becomes the identity but its
  position still counts in the paper's FLOPs convention.

ReLU-reuse (Re2) with factor N
------------------------------
A conv that feeds a kept ReLU of a network with ``reuse=N`` (every such conv inside the stages,
or with ``reuse_layers=alternate`` only ``conv1`` of each BasicBlock / the odd VGG layers of a
stage) becomes a Re2 layer: its input and output channels are split into groups, the same way
(:func:`reuse_split`), evaluated in order, and the ReLU after it applies only to the **last**
group (C·H·W/N scalar ReLUs):

* ``reuse_split=three`` (the paper's layer), N >= 4: ``[reuse C/4 | linear C - C/4 - C/N |
  relu C/N]``. The reuse group passes its input channels on (identity when the layer keeps
  its shape, else a 1x1 conv with the layer's stride); the linear and relu groups are kxk
  convs of their own input channels. N = 2: ``[linear C/2 | relu C/2]``.
* ``reuse_split=equal``: N equal divisions ``[linear C/N | ... | linear C/N | relu C/N]``, each
  a kxk conv (N = 2 is the same layer as ``three``).

Each group's output gets its slice of the BatchNorm that follows the conv (the BatchNorm record
covers all C channels; per channel it is the same function). With ``reuse_link=on`` (default)
the groups are linked Res2Net-style: before a group's conv, the previous group's normalised
output is added to its input -- the first ``min(previous out, this in)`` channels of each
(:class:`ReuseGroup` ``link``). A strided layer has no links: the previous group's output is at
the output resolution, the next group's input at the input resolution (Res2Net's downsampling
blocks drop the links too). The links add no MACs or params. ``docs/relu_reuse.md`` explains
the choices.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Literal, Sequence, Union

from hybrenet_jax.errors import DescriptionError
from hybrenet_jax.netspec import NetSpec

KEPT, CULLED, THINNED = "kept", "culled", "thinned"


def reuse_split(channels: int, factor: int, split: str = "three") -> tuple[int, ...]:
    """Channel widths of the Re2 groups of a layer, in channel order (the ReLU group last).

    ``factor == 1`` means no reuse: ``(channels,)``. See the module docstring.
    """
    if factor == 1:
        return (channels,)
    if split == "equal":
        return (channels // factor,) * factor
    if factor == 2:
        return (channels - channels // 2, channels // 2)
    reuse, relu = channels // 4, channels // factor
    return (reuse, channels - reuse - relu, relu)


def reuse_group_names(factor: int, split: str = "three") -> tuple[str, ...]:
    """Names of the Re2 groups (also their parameter paths), in channel order."""
    if factor == 1:
        return ("",)
    if split == "three" and factor > 2:
        return ("reuse", "linear_group", "relu_group")
    linear = factor - 1
    if linear == 1:
        return ("linear_group", "relu_group")
    return tuple(f"linear_group{i}" for i in range(1, linear + 1)) + ("relu_group",)


def reuse_divisor(factor: int, split: str = "three") -> int:
    """What every width of a Re2 layer must be a multiple of (1 without reuse)."""
    if factor == 1:
        return 1
    return factor if (split == "equal" or factor == 2) else max(4, factor)


def _check_reuse_divides(channels: int, factor: int, split: str, where: str) -> None:
    need = reuse_divisor(factor, split)
    if channels % need:
        raise DescriptionError(
            f"reuse={factor} does not divide the {channels} channels of {where}; with "
            f"reuse_split={split} every affected width must be a multiple of {need}"
        )


@dataclasses.dataclass(frozen=True)
class ReuseGroup:
    """One channel group of a Re2 layer (or the whole of a plain conv).

    Reads input channels ``[in_start, in_stop)``, writes output channels
    ``[out_start, out_stop)``. ``kernel`` 0 passes the input on (identity); otherwise a
    ``kernel x kernel`` conv with the layer's stride. ``link`` > 0: before the conv, the first
    ``link`` channels of the previous group's (BatchNorm-ed) output are added onto the first
    ``link`` input channels of this group.
    """

    name: str
    in_start: int
    in_stop: int
    out_start: int
    out_stop: int
    kernel: int
    link: int = 0

    @property
    def in_ch(self) -> int:
        return self.in_stop - self.in_start

    @property
    def out_ch(self) -> int:
        return self.out_stop - self.out_start

    @property
    def is_identity(self) -> bool:
        return self.kernel == 0


def _bounds(widths: tuple[int, ...]) -> list[tuple[int, int]]:
    out, start = [], 0
    for w in widths:
        out.append((start, start + w))
        start += w
    return out


@dataclasses.dataclass(frozen=True)
class Conv:
    """A kxk convolution (no bias). ``reuse > 1`` makes it a Re2 layer (:meth:`groups`);
    ``feature_groups`` > 1 makes it a grouped conv (RegNet-X: ``in_ch / feature_groups`` input
    channels per group, the ``feature_group_count`` of JAX, ONNX ``group``)."""

    name: str
    stage: int
    in_ch: int
    out_ch: int
    kernel: int
    stride: int
    in_hw: int
    reuse: int = 1
    reuse_split: str = "three"
    reuse_link: bool = True
    feature_groups: int = 1

    def __post_init__(self) -> None:
        g = self.feature_groups
        if g < 1 or self.in_ch % g or self.out_ch % g:
            raise DescriptionError(f"{self.name}: {g} conv groups do not divide {self.in_ch} "
                                   f"-> {self.out_ch} channels")
        if g > 1 and self.reuse > 1:
            raise DescriptionError(f"{self.name}: a grouped conv cannot be a ReLU-reuse layer")

    @property
    def out_hw(self) -> int:
        return self.in_hw // self.stride

    def groups(self) -> tuple[ReuseGroup, ...]:
        """The groups this layer evaluates, in order (one group without reuse)."""
        names = reuse_group_names(self.reuse, self.reuse_split)
        ins = _bounds(reuse_split(self.in_ch, self.reuse, self.reuse_split))
        outs = _bounds(reuse_split(self.out_ch, self.reuse, self.reuse_split))
        linked = self.reuse_link and self.stride == 1
        groups: list[ReuseGroup] = []
        for name, (i0, i1), (o0, o1) in zip(names, ins, outs):
            kernel = self.kernel
            if name == "reuse":
                kernel = 1 if self.reuse_needs_projection else 0
            link = min(groups[-1].out_ch, i1 - i0) if (linked and groups) else 0
            groups.append(ReuseGroup(name, i0, i1, o0, o1, kernel, link))
        return tuple(groups)

    def group_convs(self) -> tuple[tuple[int, int, int], ...]:
        """Dense sub-convolutions ``(in_ch, out_ch, kernel)`` this layer is made of (a grouped
        conv: ``feature_groups`` convs of ``in_ch/G -> out_ch/G`` channels)."""
        g = self.feature_groups
        if g > 1:
            return ((self.in_ch // g, self.out_ch // g, self.kernel),) * g
        return tuple((g.in_ch, g.out_ch, g.kernel) for g in self.groups() if not g.is_identity)

    @property
    def reuse_needs_projection(self) -> bool:
        """Whether the reuse group needs a 1x1 conv (shape changes) instead of the identity."""
        return self.in_ch != self.out_ch or self.stride != 1

    @property
    def macs(self) -> int:
        """Multiply-accumulates, counted at the output resolution (links are free)."""
        return self.params * self.out_hw**2

    @property
    def params(self) -> int:
        return sum(k * k * ci * co for ci, co, k in self.group_convs())


@dataclasses.dataclass(frozen=True)
class BatchNorm:
    """BatchNorm over ``channels`` feature maps of side ``hw`` (scale and bias are params)."""

    name: str
    stage: int
    channels: int
    hw: int

    @property
    def elements(self) -> int:
        return self.channels * self.hw**2

    @property
    def params(self) -> int:
        return 2 * self.channels


@dataclasses.dataclass(frozen=True)
class ReluSite:
    """A ReLU position of the base network and what the description does with it."""

    name: str
    stage: int
    channels: int
    hw: int
    state: str = KEPT
    reuse: int = 1

    @property
    def positions(self) -> int:
        """Scalar activations at this position in the base network (paper FLOPs count them)."""
        return self.channels * self.hw**2

    @property
    def kept(self) -> bool:
        return self.state == KEPT

    @property
    def active_channels(self) -> int:
        """Channels that pass through a ReLU (0 when culled/thinned, C/N with reuse N)."""
        return self.channels // self.reuse if self.kept else 0

    @property
    def relu_start(self) -> int:
        """First channel of the ReLU group (the last C/N channels under reuse N)."""
        return self.channels - self.channels // self.reuse

    @property
    def relus(self) -> int:
        """Scalar ReLUs evaluated for one image."""
        return self.active_channels * self.hw**2


PoolKind = Literal["avg2", "global"]


@dataclasses.dataclass(frozen=True)
class Pool:
    """Average pooling: ``kind`` is ``"avg2"`` (2x2, stride 2) or ``"global"``."""

    name: str
    stage: int
    kind: PoolKind
    channels: int
    in_hw: int


@dataclasses.dataclass(frozen=True)
class Dense:
    """A fully connected layer with bias."""

    name: str
    stage: int
    in_features: int
    out_features: int

    @property
    def macs(self) -> int:
        return self.in_features * self.out_features

    @property
    def params(self) -> int:
        return self.in_features * self.out_features + self.out_features


Layer = Union[Conv, BatchNorm, ReluSite, Pool, Dense]
#: What a :class:`Block` is (its wiring); :data:`RESIDUAL` are the kinds with a residual add.
BlockKind = Literal["stem", "basic", "bottleneck", "preact", "plain", "head"]
#: Block kinds with a residual add (wired as :class:`Block` says).
RESIDUAL = ("basic", "bottleneck", "preact")


def branch_index(main: Sequence, branch_after: str) -> int:
    """Index just after the layer of ``main`` named ``branch_after`` (0 when it is empty).

    Works on layer records and on their folded forms alike (both carry ``name``)."""
    if not branch_after:
        return 0
    names = [layer.name for layer in main]
    if branch_after not in names:
        raise DescriptionError(f"branch point {branch_after!r} is not a main-path layer")
    return names.index(branch_after) + 1


@dataclasses.dataclass(frozen=True)
class Block:
    """A named unit of the network.

    ``kind`` is ``"stem"``, ``"basic"`` (post-activation residual), ``"bottleneck"`` (RegNet-X
    X block), ``"preact"`` (pre-activation residual), ``"plain"`` (VGG layer) or ``"head"``.
    Every residual kind (:data:`RESIDUAL`) is wired the same way, read from the description::

        a = main[:k](x)        # k: just after the layer named ``branch_after`` (0 if empty)
        s = shortcut(a) if shortcut else x
        out = after_add(main[k:](a) + s)

    ``branch_after`` is where a projection shortcut branches off the main path: empty for
    post-activation blocks (it reads the block input), the first BN-ReLU's ReLU for
    pre-activation blocks (it reads the activated input). The model, the export and the
    PyTorch reference all use :meth:`branch_index`.
    """

    name: str
    stage: int
    kind: BlockKind
    main: tuple[Layer, ...]
    shortcut: tuple[Layer, ...] = ()
    after_add: tuple[Layer, ...] = ()
    branch_after: str = ""

    def branch_index(self) -> int:
        """How many main-path layers run before the shortcut branches off."""
        return branch_index(self.main, self.branch_after)

    def layers(self) -> Iterator[Layer]:
        """All layers of the block, main path first."""
        yield from self.main
        yield from self.shortcut
        yield from self.after_add


@dataclasses.dataclass(frozen=True)
class Architecture:
    """The expanded network: blocks in execution order plus the spec they came from."""

    spec: NetSpec
    blocks: tuple[Block, ...]

    def layers(self) -> Iterator[Layer]:
        """Every layer record in execution order."""
        for block in self.blocks:
            yield from block.layers()

    def relu_sites(self) -> tuple[ReluSite, ...]:
        return tuple(l for l in self.layers() if isinstance(l, ReluSite))

    def convs(self) -> tuple[Conv, ...]:
        return tuple(l for l in self.layers() if isinstance(l, Conv))


@dataclasses.dataclass(frozen=True)
class _Position:
    """Where one residual block sits: stage, name, widths, stride, input and output size."""

    stage: int
    name: str
    cin: int
    width: int
    stride: int
    hw: int
    out_hw: int


class _Builder:
    """Accumulates blocks while walking a spec; one method per block family."""

    def __init__(self, spec: NetSpec):
        self.spec = spec
        self.blocks: list[Block] = []

    def relu_state(self, stage: int, keep_when_thinned: bool) -> str:
        if stage in self.spec.culled:
            return CULLED
        if stage in self.spec.thinned and not keep_when_thinned:
            return THINNED
        return KEPT

    def relu(self, name: str, stage: int, channels: int, hw: int, keep_when_thinned: bool,
             reusable: bool = True) -> ReluSite:
        """A ReLU site; ``reusable`` says whether Re2 may apply to it (see ``reuse_layers``)."""
        state = self.relu_state(stage, keep_when_thinned)
        reuse = self.spec.reuse if (state == KEPT and reusable) else 1
        if reuse > 1:
            _check_reuse_divides(channels, reuse, self.spec.reuse_split, name)
        return ReluSite(name, stage, channels, hw, state, reuse)

    @property
    def every_kept_layer(self) -> bool:
        """``reuse_layers=kept``: Re2 on every kept ReLU layer (else one per block/pair)."""
        return self.spec.reuse_layers == "kept"

    def conv(self, name: str, stage: int, cin: int, cout: int, k: int, stride: int, hw: int,
             feeds: ReluSite | None = None) -> Conv:
        reuse = feeds.reuse if feeds is not None else 1
        if reuse == 1:
            return Conv(name, stage, cin, cout, k, stride, hw)
        _check_reuse_divides(cin, reuse, self.spec.reuse_split, f"{name} (input)")
        return Conv(name, stage, cin, cout, k, stride, hw, reuse, self.spec.reuse_split,
                    self.spec.reuse_link)

    def positions(self, cin: int, hw: int, first_strided: bool = False) -> Iterator[_Position]:
        """Every residual block in order; the first block of each stage after the first (and
        of the first too when ``first_strided``) halves the resolution."""
        s = self.spec
        for stage, (width, depth) in enumerate(zip(s.widths, s.depths), start=1):
            for b in range(1, depth + 1):
                stride = 2 if b == 1 and (stage > 1 or first_strided) else 1
                yield _Position(stage, f"stage{stage}_block{b}", cin, width, stride, hw,
                                hw // stride)
                cin, hw = width, hw // stride

    @staticmethod
    def projection(p: _Position, batch_norm: bool = True) -> tuple[Layer, ...]:
        """The 1x1 projection shortcut (+ BN) where a block changes shape; else none."""
        if p.stride == 1 and p.cin == p.width:
            return ()
        conv = Conv(f"{p.name}_shortcut_conv", p.stage, p.cin, p.width, 1, p.stride, p.hw)
        if not batch_norm:
            return (conv,)
        return conv, BatchNorm(f"{p.name}_shortcut_bn", p.stage, p.width, p.out_hw)

    # -- families ---------------------------------------------------------------------------
    def resnet(self) -> None:
        s = self.spec
        hw = s.input_size
        relu = self.relu("stem_relu", 1, s.stem_width, hw, keep_when_thinned=False,
                         reusable=False)
        self.blocks.append(Block("stem", 1, "stem", (
            Conv("stem_conv", 1, s.in_channels, s.stem_width, 3, 1, hw),
            BatchNorm("stem_bn", 1, s.stem_width, hw),
            relu,
        )))
        for p in self.positions(s.stem_width, hw):
            r1 = self.relu(f"{p.name}_relu1", p.stage, p.width, p.out_hw, keep_when_thinned=True)
            r2 = self.relu(f"{p.name}_relu2", p.stage, p.width, p.out_hw,
                           keep_when_thinned=False, reusable=self.every_kept_layer)
            main = (
                self.conv(f"{p.name}_conv1", p.stage, p.cin, p.width, 3, p.stride, p.hw,
                          feeds=r1),
                BatchNorm(f"{p.name}_bn1", p.stage, p.width, p.out_hw),
                r1,
                self.conv(f"{p.name}_conv2", p.stage, p.width, p.width, 3, 1, p.out_hw,
                          feeds=r2),
                BatchNorm(f"{p.name}_bn2", p.stage, p.width, p.out_hw),
            )
            self.blocks.append(Block(p.name, p.stage, "basic", main, self.projection(p), (r2,)))
        self.head(p.width, p.out_hw)

    def regnetx(self) -> None:
        s = self.spec
        imagenet = s.geometry == "imagenet"
        hw = s.input_size
        stem_stride = 2 if imagenet else 1
        out_hw = hw // stem_stride
        relu = self.relu("stem_relu", 1, s.stem_width, out_hw, keep_when_thinned=False,
                         reusable=False)
        self.blocks.append(Block("stem", 1, "stem", (
            Conv("stem_conv", 1, s.in_channels, s.stem_width, 3, stem_stride, hw),
            BatchNorm("stem_bn", 1, s.stem_width, out_hw),
            relu,
        )))
        for p in self.positions(s.stem_width, out_hw, first_strided=imagenet):
            main = (
                Conv(f"{p.name}_conv1", p.stage, p.cin, p.width, 1, 1, p.hw),
                BatchNorm(f"{p.name}_bn1", p.stage, p.width, p.hw),
                self.relu(f"{p.name}_relu1", p.stage, p.width, p.hw, keep_when_thinned=False),
                Conv(f"{p.name}_conv2", p.stage, p.width, p.width, 3, p.stride, p.hw,
                     feature_groups=p.width // s.group_width),
                BatchNorm(f"{p.name}_bn2", p.stage, p.width, p.out_hw),
                self.relu(f"{p.name}_relu2", p.stage, p.width, p.out_hw, keep_when_thinned=True),
                Conv(f"{p.name}_conv3", p.stage, p.width, p.width, 1, 1, p.out_hw),
                BatchNorm(f"{p.name}_bn3", p.stage, p.width, p.out_hw),
            )
            r3 = self.relu(f"{p.name}_relu3", p.stage, p.width, p.out_hw, keep_when_thinned=False)
            self.blocks.append(Block(p.name, p.stage, "bottleneck", main, self.projection(p),
                                     (r3,)))
        self.head(p.width, p.out_hw)

    def wrn(self) -> None:
        s = self.spec
        hw = s.input_size
        self.blocks.append(Block("stem", 1, "stem", (
            Conv("stem_conv", 1, s.in_channels, s.stem_width, 3, 1, hw),)))
        for p in self.positions(s.stem_width, hw):
            main = (
                BatchNorm(f"{p.name}_bn1", p.stage, p.cin, p.hw),
                self.relu(f"{p.name}_relu1", p.stage, p.cin, p.hw, keep_when_thinned=False),
                Conv(f"{p.name}_conv1", p.stage, p.cin, p.width, 3, p.stride, p.hw),
                BatchNorm(f"{p.name}_bn2", p.stage, p.width, p.out_hw),
                self.relu(f"{p.name}_relu2", p.stage, p.width, p.out_hw, keep_when_thinned=True),
                Conv(f"{p.name}_conv2", p.stage, p.width, p.width, 3, 1, p.out_hw),
            )
            self.blocks.append(Block(p.name, p.stage, "preact", main,
                                     self.projection(p, batch_norm=False),
                                     branch_after=f"{p.name}_relu1"))
        cin, hw, last = p.width, p.out_hw, s.num_stages
        self.blocks.append(Block("final", last, "plain", (
            BatchNorm("final_bn", last, cin, hw),
            self.relu("final_relu", last, cin, hw, keep_when_thinned=False),
        )))
        self.head(cin, hw)

    def vgg(self) -> None:
        s = self.spec
        hw, cin = s.input_size, s.in_channels
        for stage, (width, depth) in enumerate(zip(s.widths, s.depths), start=1):
            for i in range(1, depth + 1):
                name = f"stage{stage}_layer{i}"
                odd = i % 2 == 1
                relu = self.relu(f"{name}_relu", stage, width, hw, keep_when_thinned=odd,
                                 reusable=odd or self.every_kept_layer)
                main: tuple[Layer, ...] = (
                    self.conv(f"{name}_conv", stage, cin, width, 3, 1, hw, feeds=relu),
                    BatchNorm(f"{name}_bn", stage, width, hw),
                    relu,
                )
                if i == depth:
                    main += (Pool(f"stage{stage}_pool", stage, "avg2", width, hw),)
                self.blocks.append(Block(name, stage, "plain", main))
                cin = width
            hw //= 2
        last, hidden = s.num_stages, s.head_width
        features = cin * hw * hw
        self.blocks.append(Block("head", last, "head", (
            Dense("head_fc1", last, features, hidden),
            self.relu("head_relu1", last, hidden, 1, keep_when_thinned=True, reusable=False),
            Dense("head_fc2", last, hidden, hidden),
            self.relu("head_relu2", last, hidden, 1, keep_when_thinned=False, reusable=False),
            Dense("head_fc", last, hidden, s.classes),
        )))

    def head(self, channels: int, hw: int) -> None:
        last = self.spec.num_stages
        self.blocks.append(Block("head", last, "head", (
            Pool("head_pool", last, "global", channels, hw),
            Dense("head_fc", last, channels, self.spec.classes),
        )))


def expand(spec: NetSpec) -> Architecture:
    """Expand a spec into its named blocks and layers (pure; cheap; no JAX)."""
    builder = _Builder(spec)
    getattr(builder, spec.family)()
    return Architecture(spec, tuple(builder.blocks))
