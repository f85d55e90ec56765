"""Hypothesis strategies for the spec's inputs: configs, token IDs, logits, temperatures.

Every strategy draws small values (tiny models, short sequences) so thousands of
examples run on a laptop CPU, and shrinks towards the simplest case: one layer,
one head, short sequences, logits near zero.
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st
from torch import Tensor

from reference.config import ModelConfig
from spec.target import Target

POSITION_KINDS = ("none", "learned", "sinusoidal", "rotary", "alibi")


@st.composite
def configs(draw: st.DrawFn, *, positions: tuple[str, ...] = POSITION_KINDS, max_layers: int = 2,
            tied: bool | None = None, unembed_bias: bool | None = None) -> ModelConfig:
    """A tiny ModelConfig over every wiring: MHA/GQA/MQA, each position kind, both norms, GELU/gated."""
    n_heads = draw(st.sampled_from([1, 2, 4]))
    n_kv = draw(st.sampled_from([d for d in (1, 2, 4) if n_heads % d == 0]))
    d_head = draw(st.sampled_from([4, 8]))
    d_model = draw(st.sampled_from([8, 16, 32]))
    pos = draw(st.sampled_from(positions))
    norm = draw(st.sampled_from(["layernorm", "rmsnorm"]))
    gated = draw(st.booleans())
    return ModelConfig(
        vocab_size=draw(st.integers(8, 64)),
        d_model=d_model,
        n_layers=draw(st.integers(1, max_layers)),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_head=d_head,
        d_mlp=draw(st.sampled_from([16, 32])),
        mlp_activation=draw(st.sampled_from(["gelu", "gelu_tanh", "silu", "relu"])),
        mlp_gated=gated,
        mlp_bias=draw(st.booleans()),
        norm=norm,  # type: ignore[arg-type]
        norm_bias=norm == "layernorm" and draw(st.booleans()),
        positions=pos,  # type: ignore[arg-type]
        max_positions=32,
        rotary_fraction=draw(st.sampled_from([0.5, 1.0])),
        rotary_interleaved=draw(st.booleans()),
        attn_qkv_bias=draw(st.booleans()),
        attn_out_bias=draw(st.booleans()),
        parallel_residual=draw(st.booleans()),
        tied_embeddings=draw(st.booleans()) if tied is None else tied,
        unembed_bias=draw(st.booleans()) if unembed_bias is None else unembed_bias,
    )


seeds = st.integers(0, 2**31 - 1)


def token_ids(vocab_size: int, *, min_len: int = 1, max_len: int = 12, batch: int = 1,
              max_positions: int = 1 << 30) -> st.SearchStrategy[Tensor]:
    """A [batch, seq] int64 tensor of IDs in [0, vocab_size)."""
    hi = max(min_len, min(max_len, max_positions))

    @st.composite
    def draw_ids(draw: st.DrawFn) -> Tensor:
        n = draw(st.integers(min_len, hi))
        rows = [draw(st.lists(st.integers(0, vocab_size - 1), min_size=n, max_size=n)) for _ in range(batch)]
        return torch.tensor(rows, dtype=torch.long)

    return draw_ids()


def target_ids(target: Target, *, min_len: int = 1, max_len: int = 12, batch: int = 1) -> st.SearchStrategy[Tensor]:
    """Token IDs that fit the target's vocabulary and context, on its device."""
    return token_ids(target.vocab_size, min_len=min_len, max_len=max_len, batch=batch,
                     max_positions=target.max_positions).map(lambda t: t.to(target.device))


def logit_vectors(*, min_vocab: int = 2, max_vocab: int = 40, magnitude: float = 30.0,
                  batch: int = 1) -> st.SearchStrategy[Tensor]:
    """[batch, V] float64 logits with |z| <= magnitude (no NaN/inf)."""
    floats = st.floats(-magnitude, magnitude, allow_nan=False, allow_infinity=False, width=64)

    @st.composite
    def draw_logits(draw: st.DrawFn) -> Tensor:
        v = draw(st.integers(min_vocab, max_vocab))
        rows = [draw(st.lists(floats, min_size=v, max_size=v)) for _ in range(batch)]
        return torch.tensor(rows, dtype=torch.float64)

    return draw_logits()


def temperatures(lo: float = 0.05, hi: float = 20.0) -> st.SearchStrategy[float]:
    """Positive temperatures, log-uniform-ish between lo and hi."""
    return st.floats(math.log(lo), math.log(hi)).map(math.exp)


def scales(lo: float = 0.01, hi: float = 100.0) -> st.SearchStrategy[float]:
    """Positive scale factors a, log-uniform-ish between lo and hi."""
    return st.floats(math.log(lo), math.log(hi)).map(math.exp)


def permutations(n: int) -> st.SearchStrategy[Tensor]:
    """A random permutation of range(n) as an int64 tensor."""
    return st.permutations(list(range(n))).map(lambda p: torch.tensor(p, dtype=torch.long))


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh torch.Generator on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)
