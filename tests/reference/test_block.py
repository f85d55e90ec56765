"""Blocks: the sequential (BLK-1) and parallel residual formulas, and residuals that add (RES-1)."""

from __future__ import annotations

import pytest
import torch

from reference import PRESETS, ModelConfig
from reference.attention import visibility_mask
from reference.block import Block
from reference.positions import ALiBi, Rotary, alibi_bias, alibi_slopes, rotary_angles

# float64 throughout: the block and the hand composition run the same kernels in a
# possibly different grouping of the residual sums, ~1e-16 relative; 1e-12 catches
# any wiring error (a missing or doubled sublayer moves outputs by O(0.1)).
F64 = {"atol": 1e-12, "rtol": 1e-12}


def make_block(cfg: ModelConfig, seed: int = 0) -> Block:
    block = Block(cfg, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in block.named_parameters():
            base = 1.0 if name.endswith("weight") else 0.0  # norm gains around 1
            p.copy_(base + 0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return block.eval()


def extras(cfg: ModelConfig, b: int, t: int) -> dict:
    """The rotary angles or ALiBi bias the model would pass for an unpadded prefill."""
    pos = torch.arange(t).expand(b, t)
    if isinstance(cfg.scheme, Rotary):
        return {"rotary": rotary_angles(pos, cfg.rotary_dim, cfg.rotary_theta, torch.float64)}
    if isinstance(cfg.scheme, ALiBi):
        return {"bias": alibi_bias(alibi_slopes(cfg.n_heads), pos, pos, torch.float64)}
    return {}


def h_in(cfg: ModelConfig, b: int = 2, t: int = 5, seed: int = 9) -> torch.Tensor:
    return torch.randn(b, t, cfg.d_model, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_block_matches_its_residual_formula(name: str) -> None:
    cfg = PRESETS[name]
    block = make_block(cfg)
    h = h_in(cfg)
    mask = visibility_mask(torch.ones(2, 5, dtype=torch.bool), 5, 0)
    kw = extras(cfg, 2, 5)
    with torch.no_grad():
        out, weights = block(h, mask, **kw)
        a, _ = block.attn(block.N1(h), mask, **kw)
        if cfg.parallel_residual:  # GPT-NeoX / GPT-J: both sublayers read the same h
            expected = h + a + block.mlp(block.N2(h))
            other = (h + a) + block.mlp(block.N2(h + a))
        else:  # GPT-2 / Llama: the MLP reads the stream after attention was added
            expected = (h + a) + block.mlp(block.N2(h + a))
            other = h + a + block.mlp(block.N2(h))
    assert weights is None
    assert out.shape == h.shape  # BLK-1: width d_model is preserved
    torch.testing.assert_close(out, expected, **F64)
    assert (out - other).abs().max() > 1e-3  # the two wirings are distinguishable here


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_zero_output_projections_make_the_block_the_identity(name: str) -> None:
    # RES-1: sublayers add to the stream; with W_O, b_O, W_out, b_out all zero the block is
    # h + 0 + 0, exactly h, whatever the other (random) weights are.
    cfg = PRESETS[name]
    block = make_block(cfg, seed=1)
    with torch.no_grad():
        for p in (block.attn.W_O, block.attn.b_O, block.mlp.W_out, block.mlp.b_out):
            if p is not None:
                p.zero_()
        h = h_in(cfg, seed=2)
        for explicit in (False, True):
            out, weights = block(h, None, causal=True, explicit=explicit, **extras(cfg, 2, 5))
            assert torch.equal(out, h)
            assert (weights is not None) == explicit


def test_block_returns_attention_weights_on_the_explicit_path() -> None:
    cfg = PRESETS["gpt2-tiny"]
    block = make_block(cfg, seed=3)
    h = h_in(cfg, b=1, t=4)
    with torch.no_grad():
        fast, none = block(h, None, causal=True)
        explicit, weights = block(h, None, causal=True, explicit=True)
    assert none is None and weights is not None and weights.shape == (1, cfg.n_heads, 4, 4)
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, cfg.n_heads, 4, dtype=torch.float64), **F64)
    assert bool((weights.triu(diagonal=1) == 0).all())  # causal
    torch.testing.assert_close(explicit, fast, **F64)


def test_block_modules_are_wired_from_the_config() -> None:
    cfg = PRESETS["llama-tiny"]
    block = make_block(cfg)
    assert block.parallel is False and PRESETS["neox-tiny"].parallel_residual
    assert block.N1.kind == block.N2.kind == "rmsnorm"
    assert block.N1.bias is None and block.attn.cfg is cfg and block.mlp.W_gate is not None
