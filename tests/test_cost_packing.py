"""Delphi packing and operation counts on hand-checked layers."""

from __future__ import annotations

import pytest

from hybrenet_jax.cost.packing import (CostModelError, HeOps, conv_ops, conv_packing, fc_ops,
                                       naf, next_pow2, rotation_key_switches)


def test_next_pow2_and_naf():
    assert [next_pow2(v) for v in (1, 2, 3, 9, 16, 1024, 1025)] == [1, 2, 4, 16, 16, 1024, 2048]
    for value in (1, 3, 7, 11, 12, 255, 1000, -37):
        terms = naf(value)
        assert sum(terms) == value
        assert all(abs(t) & (abs(t) - 1) == 0 for t in terms)  # signed powers of two
    assert naf(7) == [-1, 8] and naf(11) == [-1, -4, 16]


@pytest.mark.parametrize("step, switches", [
    (0, 0), (4096, 0),          # no rotation at all
    (1, 1), (2048, 1), (-1, 1),  # default keys exist for +-2^i
    (-3072, 1),                  # right by 3072 == left by 1024: one key
    (3, 2), (7, 2), (11, 3),     # NAF: 4-1, 8-1, 16-4-1
    (-3 * 64, 2),
])
def test_rotation_key_switches(step, switches):
    assert rotation_key_switches(step) == switches


def test_packing_64ch_32x32():
    # 1024 slots per channel -> 4 channels per row, 8 per ciphertext.
    p = conv_packing(64, 64, 3, 32)
    assert (p.image_size, p.channels_per_half, p.channels_per_ciphertext) == (1024, 4, 8)
    assert (p.input_ciphertexts, p.output_ciphertexts) == (8, 8)
    assert (p.half_perms, p.half_rots, p.last_repeats) == (16, 4, False)


def test_conv_64_to_64_at_32x32_hand_count():
    ops = conv_ops(64, 64, 3, 32)
    # multiplies: half_perms * input cts * inward rotations * taps = 16 * 8 * 4 * 9
    assert ops.multiplies == 16 * 8 * 4 * 9
    # inward rotations: 8 permutation pairs * 8 cts * 3 steps * 2 (column-flipped twin) = 384,
    # steps -1024/-2048/-3072 each have a key; plus 8 * 8 column swaps.
    assert ops.rotations == 384 + 64
    assert ops.key_switches == 384 + 64
    # client sends 9 rotated copies of 8 ciphertexts, gets 8 back
    assert (ops.input_ciphertexts, ops.output_ciphertexts) == (72, 8)


def test_stem_conv_3_to_64():
    ops = conv_ops(3, 64, 3, 32)
    assert ops.multiplies == 16 * 1 * 4 * 9
    assert (ops.input_ciphertexts, ops.output_ciphertexts) == (9, 8)


def test_repeating_half_16ch_at_8x8():
    # 64 channels fit a row; the 16 output channels form a short, repeated half:
    # only 16 inward rotations instead of 64.
    p = conv_packing(16, 16, 3, 8)
    assert p.last_repeats and p.repeat_chans == 16 and p.half_perms == 1
    ops = conv_ops(16, 16, 3, 8)
    assert ops.multiplies == 16 * 9
    # 15 inward rotations by -k*64 (k=1..15: NAF weights sum to 28) + one fold by 1024
    assert ops.rotations == 16
    assert ops.key_switches == 28 + 1
    assert (ops.input_ciphertexts, ops.output_ciphertexts) == (9, 1)


def test_one_by_one_conv_is_rotation_heavy():
    three = conv_ops(128, 128, 3, 16)
    one = conv_ops(128, 128, 1, 16)
    assert one.multiplies * 9 == three.multiplies
    assert one.rotations == three.rotations  # rotations do not scale with k*k


def test_fc_2048_to_10():
    ops = fc_ops(2048, 10)
    # 4 copies of the vector per ciphertext -> 16/4 = 4 diagonals
    assert ops.multiplies == 4
    # rotations by 1, 2, 3 (3 costs 2 switches) + tree steps 4..1024 (9 rotations)
    assert ops.rotations == 3 + 9
    assert ops.key_switches == 4 + 9
    assert (ops.input_ciphertexts, ops.output_ciphertexts) == (1, 1)


def test_heops_add():
    total = conv_ops(16, 16, 3, 8) + fc_ops(64, 10)
    assert total.layers == 2
    assert total.multiplies == conv_ops(16, 16, 3, 8).multiplies + fc_ops(64, 10).multiplies
    assert HeOps() + HeOps() == HeOps()


def test_unsupported_shapes_raise_clear_errors():
    with pytest.raises(CostModelError, match="64x64"):
        conv_ops(3, 16, 3, 65)
    with pytest.raises(CostModelError, match="8192"):
        fc_ops(9000, 10)
    with pytest.raises(CostModelError, match="in_ch"):
        conv_ops(0, 16, 3, 8)
