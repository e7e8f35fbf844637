"""Operation counts of Delphi's homomorphic linear layers (Gazelle-style packing).

Delphi evaluates every conv and FC layer in its offline phase on SEAL BFV ciphertexts with
8192 slots laid out as two rows of 4096. This module counts, per layer, the ciphertexts sent
each way and the server's homomorphic operations, by walking the same loop structure as
Delphi's ``conv2d.cpp`` / ``fc_layer.cpp`` (a re-derivation of the counts, not a port):

Convolution (output packing)
  * each input channel is padded to ``image_size = next_pow2(H*W)`` slots, so a row holds
    ``channels_per_half = 4096 / image_size`` channels and a ciphertext twice that;
  * the client rotates its plaintext input k*k times and encrypts every rotated copy, so it
    sends ``input_ciphertexts * k*k`` ciphertexts; rotations by the filter offsets are free for
    the server;
  * the server multiplies each rotated input by one plaintext mask per (output-channel
    permutation, inward rotation, filter tap): ``half_perms * input_ciphertexts * rotations *
    k*k`` plaintext multiplies (fewer for a "repeating" last output half);
  * it then sums channels with row rotations by multiples of ``image_size`` plus column swaps;
    these output rotations do not scale with k*k.
  * stride is not exploited: a strided conv costs what the stride-1 conv at the input
    resolution costs, and its output ciphertexts are counted at the input resolution.

Fully connected (diagonal packing)
  * the input vector is replicated ``8192 / next_pow2(n_in)`` times in one ciphertext; the
    matrix is split into ``next_pow2(n_out) / replicas`` diagonal plaintexts, each costing one
    input rotation and one multiply, then a log-depth rotate-and-add tree sums partial products.

Key switching: SEAL's default Galois keys cover row rotations by +-2^i and the column swap. A
rotation whose step is (cyclically) a key's step costs one key switch; any other step is
decomposed into its non-adjacent form, one key switch per term (a term of 4096 is a no-op).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal

from hybrenet_jax.errors import HybrenetError

#: BFV plaintext slots (poly modulus degree 8192) and slots per batching row.
SLOT_COUNT = 8192
ROW_SIZE = SLOT_COUNT // 2


class CostModelError(HybrenetError):
    """A layer or request the Delphi cost model cannot evaluate (message says why)."""


@dataclasses.dataclass(frozen=True)
class HeOps:
    """Homomorphic work of one linear layer (or a sum of layers) in Delphi's offline phase.

    ``input_ciphertexts`` are sent client -> server (k*k rotated copies for a conv);
    ``output_ciphertexts`` are sent back. ``rotations`` counts rotate calls and
    ``key_switches`` the key-switching operations they (and column swaps) cost.
    """

    multiplies: int = 0
    rotations: int = 0
    key_switches: int = 0
    additions: int = 0
    input_ciphertexts: int = 0
    output_ciphertexts: int = 0
    layers: int = 0

    def __add__(self, other: "HeOps") -> "HeOps":
        return HeOps(*(a + b for a, b in zip(dataclasses.astuple(self),
                                              dataclasses.astuple(other))))

    def as_dict(self) -> dict:
        """Plain-JSON view."""
        return dataclasses.asdict(self)


def next_pow2(value: int) -> int:
    """Smallest power of two >= ``value`` (1 for ``value <= 1``)."""
    return 1 if value <= 1 else 1 << (int(value) - 1).bit_length()


def naf(value: int) -> list[int]:
    """Non-adjacent form of ``value``: signed powers of two summing to it, fewest terms."""
    terms, bit = [], 0
    while value:
        if value & 1:
            digit = 2 - (value % 4)  # +1 or -1
            terms.append(digit << bit)
            value -= digit
        value >>= 1
        bit += 1
    return terms


_KEY_STEPS = frozenset(1 << i for i in range(ROW_SIZE.bit_length() - 1))  # 1 .. 2048


@functools.lru_cache(maxsize=None)
def rotation_key_switches(step: int) -> int:
    """Key switches SEAL spends on a row rotation by ``step`` slots with default Galois keys."""
    if step == 0 or step % ROW_SIZE == 0:
        return 0
    cyclic = step % ROW_SIZE
    # A right rotation by s is the left rotation by ROW_SIZE - s, so -2^i has a key as well.
    if cyclic in _KEY_STEPS or ROW_SIZE - cyclic in _KEY_STEPS:
        return 1
    return sum(1 for term in naf(step) if abs(term) != ROW_SIZE)


@dataclasses.dataclass(frozen=True)
class ConvPacking:
    """How one convolution's channels pack into ciphertexts (Delphi's conv metadata)."""

    in_ch: int
    out_ch: int
    kernel: int
    in_hw: int
    image_size: int
    channels_per_half: int
    input_ciphertexts: int
    output_ciphertexts: int
    input_halves: int
    output_halves: int
    half_perms: int
    out_in_last: int
    inp_in_last: int
    repeat_chans: int
    last_repeats: bool
    half_rots: int

    @property
    def channels_per_ciphertext(self) -> int:
        return 2 * self.channels_per_half

    @property
    def last_rots(self) -> int:
        return self.repeat_chans if self.last_repeats else self.half_rots

    def half_repeats(self, perm: int, ct_idx: int) -> bool:
        """Whether output half-permutation ``perm`` of input ciphertext ``ct_idx`` is the
        short, power-of-two "repeating" last half (fewer multiplies and log-many rotations)."""
        out_mod = self.output_ciphertexts * self.channels_per_ciphertext
        out_base = ((perm // 2 + ct_idx) * self.channels_per_ciphertext) % out_mod
        last_out = out_base + self.out_in_last == self.out_ch and self.output_halves != 2
        return last_out and self.last_repeats


def _channels_in_last_half(channels: int, per_half: int) -> int:
    if channels % per_half == 0:
        return per_half
    return (channels % (2 * per_half)) % per_half


def conv_packing(in_ch: int, out_ch: int, kernel: int, in_hw: int) -> ConvPacking:
    """Packing of a ``kernel``x``kernel`` conv ``in_ch -> out_ch`` on an ``in_hw``^2 input."""
    for name, value in (("in_ch", in_ch), ("out_ch", out_ch), ("kernel", kernel),
                        ("in_hw", in_hw)):
        if not isinstance(value, int) or value <= 0:
            raise CostModelError(f"conv {name}={value!r}: must be a positive integer")
    image_size = next_pow2(in_hw * in_hw)
    if image_size > ROW_SIZE:
        raise CostModelError(
            f"a {in_hw}x{in_hw} feature map needs {image_size} slots per channel, more than "
            f"the {ROW_SIZE} slots of a ciphertext row; Delphi's packing supports inputs up "
            f"to 64x64")
    per_half = ROW_SIZE // image_size
    out_halves = math.ceil(out_ch / per_half)
    in_halves = math.ceil(in_ch / per_half)
    out_in_last = _channels_in_last_half(out_ch, per_half)
    return ConvPacking(
        in_ch=in_ch, out_ch=out_ch, kernel=kernel, in_hw=in_hw,
        image_size=image_size,
        channels_per_half=per_half,
        input_ciphertexts=math.ceil(in_ch / (2 * per_half)),
        output_ciphertexts=math.ceil(out_ch / (2 * per_half)),
        input_halves=in_halves,
        output_halves=out_halves,
        half_perms=out_halves + 1 if (out_halves % 2 and out_halves > 1) else out_halves,
        out_in_last=out_in_last,
        inp_in_last=_channels_in_last_half(in_ch, per_half),
        repeat_chans=next_pow2(out_in_last),
        last_repeats=out_in_last <= per_half / 2 and out_halves % 2 == 1,
        # Both halves <= 1 gives max(out, in, per_half) == per_half as well.
        half_rots=per_half,
    )


def _repeat_reduction_size(p: ConvPacking, last_in: bool) -> int:
    """Channels a repeating half is folded over (a power of two) by log-many rotations."""
    if not last_in:
        return p.channels_per_half
    repeats = math.ceil(p.inp_in_last / p.repeat_chans)
    if (p.repeat_chans * repeats) % p.inp_in_last == p.repeat_chans - 1:
        effective = next_pow2(repeats)
    else:
        effective = next_pow2(repeats + 1)
    return min(effective * p.repeat_chans, p.channels_per_half)


def conv_ops(in_ch: int, out_ch: int, kernel: int, in_hw: int) -> HeOps:
    """Homomorphic operations of one dense conv in Delphi (stride does not change them)."""
    p = conv_packing(in_ch, out_ch, kernel, in_hw)
    taps = kernel * kernel
    copies = 2 if p.half_perms > 1 else 1  # each permutation also has its column-flipped twin
    mults = adds = rots = switches = 0

    for perm in range(p.half_perms):
        for ct in range(p.input_ciphertexts):
            n = p.last_rots if p.half_repeats(perm, ct) else p.half_rots
            mults += n * taps
            adds += n * taps

    first_rot = 1 if (in_ch <= out_ch or out_ch == 1) else 0
    for perm in range(0, p.half_perms, 2):
        for ct in range(p.input_ciphertexts):
            repeats = p.half_repeats(perm, ct)
            n, modulus = ((p.last_rots, p.repeat_chans) if repeats
                          else (p.half_rots, p.channels_per_half))
            # Inward rotations: bring each of the n partial products into channel alignment.
            for in_rot in range(first_rot, n):
                step = -((-in_rot) % modulus) * p.image_size
                if step:
                    rots += copies
                    switches += copies * rotation_key_switches(step)
                adds += copies
            if repeats:  # fold the repeated copies of a short half: log-many rotations
                last_in = (perm + ct + 1) % p.input_ciphertexts == 0
                size = _repeat_reduction_size(p, last_in) // 2
                while size >= p.repeat_chans:
                    rots += copies
                    switches += copies * rotation_key_switches(size * p.image_size)
                    adds += copies
                    size //= 2
            # Column swaps that move each permutation into its output ciphertext.
            adds += 1
            if perm == 0:
                swaps = int(p.output_halves == 1 and p.input_halves > 1)
                swaps += int(p.half_perms > 1 and not repeats)
            else:
                swaps = int(repeats or p.half_perms > 1)
            rots += swaps
            switches += swaps
            adds += swaps

    return HeOps(multiplies=mults, rotations=rots, key_switches=switches, additions=adds,
                 input_ciphertexts=p.input_ciphertexts * taps,
                 output_ciphertexts=p.output_ciphertexts, layers=1)


def fc_ops(in_features: int, out_features: int) -> HeOps:
    """Homomorphic operations of one fully connected layer in Delphi."""
    for name, value in (("in_features", in_features), ("out_features", out_features)):
        if not isinstance(value, int) or value <= 0:
            raise CostModelError(f"FC {name}={value!r}: must be a positive integer")
    width = next_pow2(in_features)
    if width > SLOT_COUNT:
        raise CostModelError(
            f"an FC layer with {in_features} inputs needs {width} slots; Delphi packs the input "
            f"vector into one ciphertext of {SLOT_COUNT} slots")
    replicas = SLOT_COUNT // width
    diagonals = math.ceil(next_pow2(out_features) / replicas)
    rots = diagonals - 1  # rotation by 0 for the first diagonal is free
    switches = sum(rotation_key_switches(step) for step in range(1, diagonals))
    adds = diagonals
    step = diagonals
    while step < width:  # rotate-and-add tree (a step of 4096 is the column swap)
        rots += 1
        switches += 1
        adds += 1
        step *= 2
    return HeOps(multiplies=diagonals, rotations=rots, key_switches=switches, additions=adds,
                 input_ciphertexts=1, output_ciphertexts=1, layers=1)


@dataclasses.dataclass(frozen=True)
class LayerShape:
    """Geometry of one linear layer as Delphi sees it (an FC layer: kernel, stride, in_hw 1)."""

    kind: Literal["conv", "fc"]
    in_ch: int
    out_ch: int
    kernel: int
    stride: int
    in_hw: int

    def dense_ops(self) -> HeOps:
        """Delphi's operation counts for the layer as one dense conv or FC."""
        if self.kind == "fc":
            return fc_ops(self.in_ch, self.out_ch)
        return conv_ops(self.in_ch, self.out_ch, self.kernel, self.in_hw)
