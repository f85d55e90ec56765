"""Norms: LayerNorm against torch.nn.LayerNorm, RMSNorm against its formula, NORM-1 invariances, half precision."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.norms import Norm, layer_norm, rms_norm

PROPERTY = settings(max_examples=40, deadline=None, derandomize=True)


def randn(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


@st.composite
def norm_case(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.dtype]:
    d = draw(st.integers(2, 24))
    rows = draw(st.integers(1, 4))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    seed = draw(st.integers(0, 2**16))
    x = randn(rows, 3, d, seed=seed, dtype=dtype) * draw(st.sampled_from([0.1, 1.0, 30.0]))
    w = randn(d, seed=seed + 1, dtype=dtype)
    b = randn(d, seed=seed + 2, dtype=dtype)
    return x, w, b, dtype


def close(dtype: torch.dtype) -> dict[str, float]:
    # Same formula, different summation order: float64 agrees to ~1e-15, float32 to a few
    # ulps of values of magnitude <= ~5 (|w| * normalised |x|), so 1e-5 absolute suffices.
    return {"atol": 1e-12, "rtol": 1e-12} if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-5}


@PROPERTY
@given(norm_case(), st.booleans())
def test_layer_norm_matches_torch_layernorm(case: tuple, with_bias: bool) -> None:
    x, w, b, dtype = case
    d = x.shape[-1]
    ref = torch.nn.LayerNorm(d, eps=1e-5, bias=with_bias, dtype=dtype)
    with torch.no_grad():
        ref.weight.copy_(w)
        if with_bias:
            ref.bias.copy_(b)
        expected = ref(x)
    out = layer_norm(x, w, b if with_bias else None, 1e-5)
    torch.testing.assert_close(out, expected, **close(dtype))


@PROPERTY
@given(norm_case())
def test_rms_norm_matches_the_hand_formula(case: tuple) -> None:
    x, w, _, dtype = case
    # x / sqrt(mean(x^2) + eps) * w, written with different ops (sqrt/division, not rsqrt).
    ms = (x.double() ** 2).sum(dim=-1, keepdim=True) / x.shape[-1]
    expected = (x.double() / torch.sqrt(ms + 1e-6) * w.double()).to(dtype)
    torch.testing.assert_close(rms_norm(x, w, 1e-6), expected, **close(dtype))


def test_rms_norm_small_example_by_hand() -> None:
    x = torch.tensor([[3.0, 4.0]], dtype=torch.float64)  # mean square 12.5
    w = torch.tensor([1.0, 2.0], dtype=torch.float64)
    out = rms_norm(x, w, 0.5)  # sqrt(12.5 + 0.5) = sqrt(13)
    torch.testing.assert_close(out, torch.tensor([[3 / 13**0.5, 8 / 13**0.5]], dtype=torch.float64),
                               atol=1e-15, rtol=1e-15)


def test_layer_norm_small_example_by_hand() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0]], dtype=torch.float64)  # mean 3, biased var (4+1+0+9)/4 = 3.5
    w = torch.tensor([1.0, 1.0, 2.0, -1.0], dtype=torch.float64)
    b = torch.tensor([0.0, 1.0, 0.0, 0.5], dtype=torch.float64)
    s = (3.5 + 0.5) ** 0.5  # = 2
    expected = torch.tensor([[-2 / s, -1 / s + 1, 0.0, -3 / s + 0.5]], dtype=torch.float64)
    torch.testing.assert_close(layer_norm(x, w, b, 0.5), expected, atol=1e-15, rtol=1e-15)


@PROPERTY
@given(norm_case(), st.floats(0.01, 100.0))
def test_norms_see_direction_only(case: tuple, a: float) -> None:
    # NORM-1: norm(a x) == norm(x) for a > 0, up to eps. With eps = 1e-12 against a mean
    # square >= ~1e-4 the eps term contributes < 1e-8 relative, so the float64 comparison
    # at 1e-7 checks the invariance itself; float32 adds ~1e-6 rounding.
    x, w, b, dtype = case
    tol = {"atol": 1e-7, "rtol": 1e-7} if dtype == torch.float64 else {"atol": 2e-5, "rtol": 2e-5}
    torch.testing.assert_close(layer_norm(a * x, w, b, 1e-12), layer_norm(x, w, b, 1e-12), **tol)
    torch.testing.assert_close(rms_norm(a * x, w, 1e-12), rms_norm(x, w, 1e-12), **tol)


@PROPERTY
@given(norm_case(), st.floats(-50.0, 50.0))
def test_layer_norm_ignores_a_constant_shift(case: tuple, c: float) -> None:
    x, w, b, dtype = case
    # A shift of up to 50 on values of size ~1 costs ~|c| * eps_machine absolute after centring.
    tol = {"atol": 1e-9, "rtol": 1e-9} if dtype == torch.float64 else {"atol": 5e-4, "rtol": 5e-4}
    x = x / x.std(dim=-1, keepdim=True)  # keep the spread O(1) so the shift dominates nothing
    torch.testing.assert_close(layer_norm(x + c, w, b, 1e-5), layer_norm(x, w, b, 1e-5), **tol)


def test_rms_norm_is_not_shift_invariant() -> None:
    # It does not centre: a test that could not tell LayerNorm from RMSNorm would pass this.
    x = torch.tensor([[1.0, -1.0, 2.0, -2.0]], dtype=torch.float64)
    w = torch.ones(4, dtype=torch.float64)
    assert (rms_norm(x + 3.0, w, 1e-6) - rms_norm(x, w, 1e-6)).abs().max() > 0.1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_normalised_in_float32(dtype: torch.dtype) -> None:
    # Values near 1000: x^2 ~ 1e6 overflows float16 (max 65504), so a norm computed in
    # float16 would give inf/0. Computed in float32 and cast back, the result is the
    # float64 answer rounded to the half dtype (within 2 ulps: the cast plus the gain multiply).
    x = (1000.0 + 50.0 * randn(3, 16, seed=0)).to(dtype)
    w = (1.0 + 0.1 * randn(16, seed=1)).to(dtype)
    b = (0.1 * randn(16, seed=2)).to(dtype)
    eps_half = 2.0 ** -10 if dtype == torch.float16 else 2.0 ** -7  # one ulp at 1.0
    xd, wd, bd = x.double(), w.double(), b.double()

    out = rms_norm(x, w, 1e-6)
    assert out.dtype == dtype and bool(torch.isfinite(out).all())
    expected = xd / torch.sqrt((xd**2).mean(-1, keepdim=True) + 1e-6) * wd
    torch.testing.assert_close(out.double(), expected, atol=0, rtol=2 * eps_half)

    out = layer_norm(x, w, b, 1e-5)
    assert out.dtype == dtype and bool(torch.isfinite(out).all())
    centred = xd - xd.mean(-1, keepdim=True)
    expected = centred / torch.sqrt((centred**2).mean(-1, keepdim=True) + 1e-5) * wd + bd
    # One rounding to the half dtype at the end (<= half an ulp relative); the float32
    # centring of values ~1000 adds ~1e-6 relative; atol covers outputs near 0 (bias added).
    torch.testing.assert_close(out.double(), expected, atol=eps_half, rtol=2 * eps_half)


def test_norm_module_dispatches_and_initialises() -> None:
    x = randn(2, 3, 8, seed=4)
    ln = Norm(8, "layernorm", 1e-5, bias=True, dtype=torch.float64)
    assert torch.equal(ln.weight, torch.ones(8, dtype=torch.float64))
    assert ln.bias is not None and torch.equal(ln.bias, torch.zeros(8, dtype=torch.float64))
    expected = torch.nn.functional.layer_norm(x, (8,), eps=1e-5)
    torch.testing.assert_close(ln(x), expected, atol=1e-12, rtol=1e-12)

    ln_nobias = Norm(8, "layernorm", 1e-5, bias=False, dtype=torch.float64)
    assert ln_nobias.bias is None
    torch.testing.assert_close(ln_nobias(x), expected, atol=1e-12, rtol=1e-12)

    rms = Norm(8, "rmsnorm", 1e-6, bias=False, dtype=torch.float64)
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(rms(x), expected, atol=1e-12, rtol=1e-12)
    assert (rms(x) - ln(x)).abs().max() > 1e-3  # the two kinds really differ
