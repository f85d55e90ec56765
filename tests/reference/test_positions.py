"""Positions: indices from the padding mask, sinusoids, rotary (POS-3), ALiBi slopes and bias."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.positions import (
    LearnedPositions,
    alibi_bias,
    alibi_slopes,
    apply_rotary,
    positions_from_mask,
    rotary_angles,
    sinusoidal_table,
)

PROPERTY = settings(max_examples=40, deadline=None, derandomize=True)
# Rotary checks run in float64 on angles up to ~100 rad: cos/sin of such arguments are
# accurate to ~1e-15 absolute, and a dot product of width <= 16 sums to ~1e-13, so
# 1e-10 is loose against rounding yet far below any wrong pairing or angle (O(1) errors).
F64 = {"atol": 1e-10, "rtol": 1e-10}


# ------------------------------------------------------------------ positions_from_mask


def test_positions_without_padding_or_offset_are_aranges() -> None:
    mask = torch.ones(2, 5, dtype=torch.bool)
    pos = positions_from_mask(mask, torch.zeros(2, dtype=torch.long))
    assert pos.dtype == torch.long
    assert pos.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]


def test_positions_with_left_padding() -> None:
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1]], dtype=torch.bool)
    pos = positions_from_mask(mask, torch.zeros(4, dtype=torch.long))
    # Real tokens count from 0 after the padding; padding itself sits at 0.
    assert pos.tolist() == [[0, 1, 2, 3], [0, 0, 0, 1], [0, 0, 1, 2], [0, 0, 0, 0]]


def test_positions_with_offsets() -> None:
    mask = torch.tensor([[1, 1, 1], [1, 1, 1], [0, 1, 1]], dtype=torch.bool)
    offset = torch.tensor([5, 0, 3])
    pos = positions_from_mask(mask, offset)
    assert pos[0].tolist() == [5, 6, 7]
    assert pos[1].tolist() == [0, 1, 2]
    assert pos[2, 1:].tolist() == [3, 4]  # real tokens continue from the offset
    assert int(pos[2, 0]) >= 0  # padding gets some non-negative position, never read


def test_single_step_positions_follow_the_offset() -> None:
    pos = positions_from_mask(torch.ones(3, 1, dtype=torch.bool), torch.tensor([0, 7, 12]))
    assert pos.tolist() == [[0], [7], [12]]


# -------------------------------------------------------------------------- sinusoidal


@pytest.mark.parametrize(("pos", "col"), [(0, 0), (0, 1), (1, 0), (1, 1), (3, 4), (7, 5), (15, 10), (31, 11)])
def test_sinusoidal_entries_match_the_paper_formula(pos: int, col: int) -> None:
    d = 12
    tab = sinusoidal_table(32, d, dtype=torch.float64)
    i = col // 2
    angle = pos / 10000 ** (2 * i / d)
    expected = math.sin(angle) if col % 2 == 0 else math.cos(angle)
    # exp(-log(1e4) * 2i/d) vs 1e4 ** (2i/d): relative difference ~1e-16 in the frequency,
    # times pos <= 31 gives ~1e-14 in the angle.
    assert float(tab[pos, col]) == pytest.approx(expected, abs=1e-12, rel=0)


def test_sinusoidal_table_shape_dtype_and_first_row() -> None:
    tab = sinusoidal_table(5, 6)
    assert tab.shape == (5, 6) and tab.dtype == torch.float32
    assert tab[0].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]  # sin 0, cos 0
    tab64 = sinusoidal_table(5, 6, dtype=torch.float64)
    assert torch.equal(tab, tab64.float())  # computed in float64 then rounded once
    assert float(tab64.abs().max()) <= 1.0


# ----------------------------------------------------------------------------- rotary


def rotate_by_hand(x: list[float], pos: int, theta: float, interleaved: bool) -> list[float]:
    """Rotate a full-width vector with pair i turned by pos * theta^(-2i/d), in plain Python."""
    d = len(x)
    out = list(x)
    for i in range(d // 2):
        a_idx, b_idx = (2 * i, 2 * i + 1) if interleaved else (i, i + d // 2)
        angle = pos * theta ** (-2 * i / d)
        a, b = x[a_idx], x[b_idx]
        out[a_idx] = a * math.cos(angle) - b * math.sin(angle)
        out[b_idx] = b * math.cos(angle) + a * math.sin(angle)
    return out


def rotate(x: torch.Tensor, pos: list[int], interleaved: bool, rotary_dim: int | None = None,
           theta: float = 10000.0) -> torch.Tensor:
    """x [1, heads, seq, d_head] rotated at the given positions."""
    r = x.shape[-1] if rotary_dim is None else rotary_dim
    cos, sin = rotary_angles(torch.tensor([pos]), r, theta, x.dtype)
    return apply_rotary(x, cos, sin, interleaved)


@pytest.mark.parametrize("interleaved", [False, True])
def test_rotary_matches_hand_rotation(interleaved: bool) -> None:
    x = [0.3, -1.2, 2.0, 0.7, -0.4, 1.1]
    positions = [0, 1, 5, 17]
    t = torch.tensor([x] * len(positions), dtype=torch.float64).view(1, 1, len(positions), 6)
    out = rotate(t, positions, interleaved, theta=100.0)
    for s, p in enumerate(positions):
        expected = torch.tensor(rotate_by_hand(x, p, 100.0, interleaved), dtype=torch.float64)
        torch.testing.assert_close(out[0, 0, s], expected, **F64)


def test_rotary_at_position_zero_is_identity() -> None:
    x = torch.randn(2, 3, 4, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cos, sin = rotary_angles(torch.zeros(2, 4, dtype=torch.long), 8, 10000.0, torch.float64)
    assert torch.equal(cos, torch.ones_like(cos)) and torch.equal(sin, torch.zeros_like(sin))
    for interleaved in (False, True):
        assert torch.equal(apply_rotary(x, cos, sin, interleaved), x)


def test_rotary_angles_shape_and_working_precision() -> None:
    pos = torch.tensor([[0, 1, 2], [4, 5, 6]])
    cos, sin = rotary_angles(pos, 6, 10000.0, torch.bfloat16)
    assert cos.shape == sin.shape == (2, 1, 3, 3) and cos.dtype == torch.bfloat16
    # Angles are made in float32 and rounded to bfloat16 once at the end.
    inv = torch.tensor([10000.0 ** (-2 * i / 6) for i in range(3)], dtype=torch.float32)
    angles = pos.float()[:, None, :, None] * inv
    torch.testing.assert_close(cos, angles.cos().bfloat16(), atol=0, rtol=0)
    torch.testing.assert_close(sin, angles.sin().bfloat16(), atol=0, rtol=0)
    cos64, _ = rotary_angles(pos, 6, 10000.0, torch.float64)
    assert cos64.dtype == torch.float64


@st.composite
def rotary_case(draw: st.DrawFn) -> tuple[torch.Tensor, int, bool]:
    half = draw(st.integers(1, 8))
    seq = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**16))
    x = torch.randn(1, 2, seq, 2 * half, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x, draw(st.integers(0, 100)), draw(st.booleans())


@PROPERTY
@given(rotary_case())
def test_rotary_keeps_norms(case: tuple[torch.Tensor, int, bool]) -> None:
    x, start, interleaved = case
    positions = list(range(start, start + x.shape[2]))
    out = rotate(x, positions, interleaved)
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1), **F64)


@PROPERTY
@given(rotary_case(), st.integers(0, 60), st.integers(0, 60), st.integers(1, 40))
def test_rotary_score_depends_only_on_offset(case: tuple[torch.Tensor, int, bool], m: int, n: int,
                                             shift: int) -> None:
    x, _, interleaved = case
    q, k = x[:, :1, :1], x[:, 1:, :1]  # one query and one key vector, [1, 1, 1, d]
    score = (rotate(q, [m], interleaved) * rotate(k, [n], interleaved)).sum()
    shifted = (rotate(q, [m + shift], interleaved) * rotate(k, [n + shift], interleaved)).sum()
    torch.testing.assert_close(shifted, score, **F64)


def test_rotary_score_changes_with_offset() -> None:
    # Guards the property above against a rotation that does nothing at all.
    x = torch.tensor([[[[1.0, 0.0, 0.0, 0.0]]]], dtype=torch.float64)
    near = (rotate(x, [3], False) * rotate(x, [3], False)).sum()
    far = (rotate(x, [5], False) * rotate(x, [3], False)).sum()
    assert float(near) == pytest.approx(1.0) and float(far) == pytest.approx(math.cos(2.0))


def test_interleaved_and_half_split_differ_but_both_keep_norms() -> None:
    x = torch.randn(1, 1, 4, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    half = rotate(x, [1, 2, 3, 4], interleaved=False)
    inter = rotate(x, [1, 2, 3, 4], interleaved=True)
    assert (half - inter).abs().max() > 1e-2
    torch.testing.assert_close(half.norm(dim=-1), x.norm(dim=-1), **F64)
    torch.testing.assert_close(inter.norm(dim=-1), x.norm(dim=-1), **F64)


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize(("d_head", "rotary_dim"), [(8, 4), (8, 2), (12, 6), (16, 8)])
def test_partial_rotary_leaves_pass_through_coordinates_untouched(interleaved: bool, d_head: int,
                                                                   rotary_dim: int) -> None:
    x = torch.randn(2, 3, 5, d_head, generator=torch.Generator().manual_seed(d_head), dtype=torch.float64)
    out = rotate(x, [0, 3, 4, 9, 20], interleaved, rotary_dim)
    assert torch.equal(out[..., rotary_dim:], x[..., rotary_dim:])
    # The rotated part is exactly a full rotation of width rotary_dim.
    full = rotate(x[..., :rotary_dim].contiguous(), [0, 3, 4, 9, 20], interleaved)
    assert torch.equal(out[..., :rotary_dim], full)
    torch.testing.assert_close(out[..., :rotary_dim].norm(dim=-1), x[..., :rotary_dim].norm(dim=-1), **F64)
    assert (out[..., :rotary_dim] - x[..., :rotary_dim]).abs().max() > 1e-3


# ------------------------------------------------------------------------------- ALiBi


def paper_slopes(n: int) -> list[float]:
    """The recipe published with ALiBi (Press et al., github.com/ofirpress/attention_with_linear_biases)."""

    def power_of_2(m: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(m) - 3)))
        return [start * start**i for i in range(m)]

    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + paper_slopes(2 * closest)[0::2][: n - closest]


def test_alibi_slopes_for_eight_heads_are_negative_powers_of_two() -> None:
    slopes = alibi_slopes(8)
    assert slopes.dtype == torch.float64
    assert slopes.tolist() == [2.0**-i for i in range(1, 9)]


def test_alibi_slopes_for_six_heads() -> None:
    # Four heads: 2^-2, 2^-4, 2^-6, 2^-8; then every other slope of the 8-head list: 2^-1, 2^-3.
    assert alibi_slopes(6).tolist() == [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]


@pytest.mark.parametrize("n", [*range(1, 33), 48, 64, 96])
def test_alibi_slopes_match_the_paper_recipe(n: int) -> None:
    torch.testing.assert_close(alibi_slopes(n), torch.tensor(paper_slopes(n), dtype=torch.float64),
                               atol=0, rtol=1e-14)  # both are products of the same powers of 2


def test_alibi_bias_is_slope_times_signed_distance() -> None:
    slopes = torch.tensor([0.5, 0.25], dtype=torch.float64)
    q_pos = torch.tensor([[2, 3]])
    k_pos = torch.tensor([[0, 1, 2, 3]])
    bias = alibi_bias(slopes, q_pos, k_pos, torch.float32)
    assert bias.shape == (1, 2, 2, 4) and bias.dtype == torch.float32
    assert bias[0, 0].tolist() == [[-1.0, -0.5, 0.0, 0.5], [-1.5, -1.0, -0.5, 0.0]]
    assert bias[0, 1].tolist() == [[-0.5, -0.25, 0.0, 0.25], [-0.75, -0.5, -0.25, 0.0]]
    assert alibi_bias(slopes, q_pos, k_pos, torch.bfloat16).dtype == torch.bfloat16


# ----------------------------------------------------------------------------- learned


def test_learned_positions_select_rows() -> None:
    m = LearnedPositions(6, 3, dtype=torch.float64)
    with torch.no_grad():
        m.P.copy_(torch.arange(18, dtype=torch.float64).view(6, 3))
    out = m(torch.tensor([[0, 5, 2]]))
    assert out.tolist() == [[[0.0, 1.0, 2.0], [15.0, 16.0, 17.0], [6.0, 7.0, 8.0]]]
