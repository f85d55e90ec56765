"""Named tiny configurations covering every wiring the documents discuss.

They are small enough to run thousands of Hypothesis examples on a laptop CPU and
together cover MHA/GQA/MQA, each position scheme, LayerNorm/RMSNorm, tied/untied
unembedding and GELU/gated MLPs.
"""

from __future__ import annotations

from reference.config import ModelConfig

_BASE = ModelConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=4, max_positions=64)

PRESETS: dict[str, ModelConfig] = {
    # GPT-2 wiring: learned positions, LayerNorm, GELU(tanh), tied, biases
    "gpt2-tiny": _BASE.with_(mlp_activation="gelu_tanh"),
    # Llama wiring: rotary, RMSNorm, SwiGLU, GQA, untied, no biases
    "llama-tiny": _BASE.with_(n_kv_heads=2, positions="rotary", norm="rmsnorm", norm_bias=False,
                              mlp_activation="silu", mlp_gated=True, mlp_bias=False, attn_qkv_bias=False,
                              attn_out_bias=False, tied_embeddings=False, d_mlp=64),
    # multi-query attention, sinusoidal positions, exact GELU, untied with output bias
    "mqa-sinusoidal": _BASE.with_(n_kv_heads=1, positions="sinusoidal", mlp_activation="gelu",
                                  tied_embeddings=False, unembed_bias=True),
    # GPT-NeoX wiring: parallel residual, partial rotary (half-split), LayerNorm
    "neox-tiny": _BASE.with_(positions="rotary", rotary_fraction=0.5, parallel_residual=True),
    # GPT-J wiring: interleaved rotary, parallel residual
    "gptj-tiny": _BASE.with_(positions="rotary", rotary_fraction=0.5, rotary_interleaved=True,
                             parallel_residual=True, tied_embeddings=False, unembed_bias=True),
    # Gemma-like: gated GELU, scaled embedding, RMSNorm, MQA
    "gemma-tiny": _BASE.with_(n_kv_heads=1, positions="rotary", norm="rmsnorm", norm_bias=False,
                              mlp_activation="gelu_tanh", mlp_gated=True, mlp_bias=False, attn_qkv_bias=False,
                              attn_out_bias=False, embedding_scale=32 ** 0.5),
    # Bloom-like: ALiBi, LayerNorm right after the lookup
    "bloom-tiny": _BASE.with_(positions="alibi", embedding_norm=True),
    # no positions at all (claim POS-1's subject)
    "nopos-tiny": _BASE.with_(positions="none", n_layers=1),
}


def preset(name: str) -> ModelConfig:
    """The named preset's config; a clear error lists the names on a typo."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
