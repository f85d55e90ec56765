"""MLP: activations against their formulas, plain and gated forms (MLP-1), position-wise (MLP-2), and linear()."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import ModelConfig
from reference.linear import linear
from reference.mlp import ACTIVATION_FUNCTIONS, MLP

# float64 everywhere here: the formulas below and torch's kernels agree to ~1e-15 on
# O(1) values, so 1e-12 is loose against rounding but catches a wrong activation
# (gelu vs gelu_tanh differ by up to ~5e-4, far above it).
F64 = {"atol": 1e-12, "rtol": 1e-12}

BY_HAND = {
    "gelu": lambda x: 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0))),
    "gelu_tanh": lambda x: 0.5 * x * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))),
    "silu": lambda x: x / (1.0 + math.exp(-x)),
    "relu": lambda x: max(x, 0.0),
}


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def act_by_hand(name: str, x: torch.Tensor) -> torch.Tensor:
    f = BY_HAND[name]
    return torch.tensor([f(v) for v in x.flatten().tolist()], dtype=torch.float64).view(x.shape)


def test_the_activation_table_has_exactly_the_config_choices() -> None:
    assert set(ACTIVATION_FUNCTIONS) == set(BY_HAND)


@pytest.mark.parametrize("name", sorted(BY_HAND))
def test_activation_matches_its_formula(name: str) -> None:
    x = torch.cat([torch.linspace(-6, 6, 121, dtype=torch.float64), randn(50, seed=0) * 3])
    torch.testing.assert_close(ACTIVATION_FUNCTIONS[name](x), act_by_hand(name, x), **F64)


def test_gelu_variants_really_differ() -> None:
    x = torch.linspace(-4, 4, 81, dtype=torch.float64)
    assert (ACTIVATION_FUNCTIONS["gelu"](x) - ACTIVATION_FUNCTIONS["gelu_tanh"](x)).abs().max() > 1e-4


def make_mlp(seed: int = 0, **changes: object) -> MLP:
    cfg = ModelConfig(**{"vocab_size": 5, "d_model": 6, "n_layers": 1, "n_heads": 2, "d_mlp": 10,  # type: ignore[arg-type]
                         **changes})
    mlp = MLP(cfg, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mlp.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return mlp


def mlp_by_hand(mlp: MLP, name: str, x: torch.Tensor) -> torch.Tensor:
    """act(x W_in + b_in) W_out + b_out, or act(x W_gate + b_gate) * (x W_in + b_in) W_out + b_out, via einsum."""
    def affine(v: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return torch.einsum("...i,io->...o", v, W.detach()) + (0 if b is None else b.detach())

    inner = affine(x, mlp.W_in, mlp.b_in)
    if mlp.W_gate is not None:
        inner = act_by_hand(name, affine(x, mlp.W_gate, mlp.b_gate)) * inner
    else:
        inner = act_by_hand(name, inner)
    return affine(inner, mlp.W_out, mlp.b_out)


@pytest.mark.parametrize("name", sorted(BY_HAND))
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_mlp_matches_the_formula(name: str, gated: bool, bias: bool) -> None:
    mlp = make_mlp(mlp_activation=name, mlp_gated=gated, mlp_bias=bias)
    # MLP-1: widen to d_mlp, bend, project back to d_model.
    assert mlp.W_in.shape == (6, 10) and mlp.W_out.shape == (10, 6)
    assert (mlp.W_gate is not None) == gated
    if mlp.W_gate is not None:
        assert mlp.W_gate.shape == (6, 10)
    assert (mlp.b_in is not None) == bias and (mlp.b_out is not None) == bias
    assert (mlp.b_gate is not None) == (bias and gated)
    x = randn(2, 3, 6, seed=1)
    with torch.no_grad():
        out = mlp(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, mlp_by_hand(mlp, name, x), **F64)


def test_gated_and_plain_forms_differ() -> None:
    plain = make_mlp(seed=3, mlp_activation="silu")
    gated = make_mlp(seed=3, mlp_activation="silu", mlp_gated=True)
    x = randn(1, 2, 6, seed=4)
    with torch.no_grad():
        assert (plain(x) - gated(x)).abs().max() > 1e-3


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.sampled_from(sorted(BY_HAND)), st.booleans(), st.integers(1, 6), st.integers(0, 5), st.integers(0, 2**16))
def test_mlp_is_position_wise(name: str, gated: bool, t: int, where: int, seed: int) -> None:
    # MLP-2: a position's output depends on its own input alone.
    mlp = make_mlp(mlp_activation=name, mlp_gated=gated)
    x = randn(2, t, 6, seed=seed)
    where = where % t
    y = x.clone()
    y[:, where] = randn(2, 6, seed=seed + 1)
    with torch.no_grad():
        out_x, out_y = mlp(x), mlp(y)
        alone = torch.cat([mlp(x[:, i:i + 1]) for i in range(t)], dim=1)
    others = [i for i in range(t) if i != where]
    torch.testing.assert_close(out_y[:, others], out_x[:, others], **F64)
    torch.testing.assert_close(alone, out_x, **F64)
    assert (out_y[:, where] - out_x[:, where]).abs().max() > 0


@pytest.mark.parametrize("shape", [(4,), (3, 4), (2, 3, 4), (2, 1, 3, 4)])
def test_linear_is_x_at_W_plus_b(shape: tuple[int, ...]) -> None:
    x, W, b = randn(*shape, seed=0), randn(4, 5, seed=1), randn(5, seed=2)
    with_bias = linear(x, W, b)
    assert with_bias.shape == (*shape[:-1], 5)
    expected = torch.einsum("...i,io->...o", x, W)
    torch.testing.assert_close(linear(x, W), expected, **F64)
    torch.testing.assert_close(with_bias, expected + b, **F64)
