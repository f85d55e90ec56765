"""GPT-NeoX / Pythia (model_type "gpt_neox").

Layout: ``attention.query_key_value`` fuses q, k and v *per head*: GPTNeoXAttention views
its output as [..., heads, 3 * head_dim] and chunks the last axis, so rows
h*3*dh .. h*3*dh + dh - 1 are head h's query, the next dh its key, the next dh its
value (biases alike, per ``attention_bias``). Rotary is half-split over the first
int(head_dim * rotary_pct) coordinates of each head (``rope_parameters
['partial_rotary_factor']`` in transformers 5, ``rotary_pct`` / ``rotary_emb_base`` in 4.x).
Blocks are parallel (h + Attn(input_layernorm h) + MLP(post_attention_layernorm h)) when
``use_parallel_residual``, else sequential; the MLP (dense_h_to_4h, dense_4h_to_h)
always has biases; the unembedding ``lm_head`` (``embed_out`` in 4.x) is untied unless ``tie_word_embeddings``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from reference.config import ModelConfig
from reference.convert.common import (
    Weights,
    activation,
    check_rotary_width,
    layer_norm,
    linear,
    per_head_rows,
    rope,
    unembedding,
)


def config(hf_config: Any) -> ModelConfig:
    heads = hf_config.num_attention_heads
    theta, fraction = rope(hf_config, theta_fields=("rotary_emb_base", "rope_theta"),
                           fraction_fields=("rotary_pct", "partial_rotary_factor"))
    # transformers 4.x called the fraction rotary_pct
    check_rotary_width(hf_config.hidden_size // heads, fraction, "rope_parameters['partial_rotary_factor']")
    bias = bool(hf_config.attention_bias)
    return ModelConfig(
        vocab_size=hf_config.vocab_size,
        d_model=hf_config.hidden_size,
        n_layers=hf_config.num_hidden_layers,
        n_heads=heads,
        d_mlp=hf_config.intermediate_size,
        mlp_activation=activation(hf_config, "hidden_act"),
        mlp_bias=True,
        norm="layernorm",
        norm_eps=hf_config.layer_norm_eps,
        positions="rotary",
        max_positions=hf_config.max_position_embeddings,
        rotary_theta=theta,
        rotary_fraction=fraction,
        attn_qkv_bias=bias,
        attn_out_bias=bias,
        parallel_residual=bool(hf_config.use_parallel_residual),
        tied_embeddings=bool(hf_config.tie_word_embeddings),
    )


def state_dict(hf_config: Any, hf_state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    cfg = config(hf_config)
    h, dh = cfg.n_heads, cfg.head_dim
    # old checkpoints carry the causal mask and inv_freq as buffers
    w = Weights(hf_state_dict, ignore=[r"attention\.(masked_)?bias$", r"rotary_emb\.inv_freq$"])
    out: dict[str, Tensor] = {"embed.E": w("gpt_neox.embed_in.weight")}
    for i in range(cfg.n_layers):
        p, q = f"gpt_neox.layers.{i}.", f"blocks.{i}."
        layer_norm(w, p + "input_layernorm", q + "N1", out)
        layer_norm(w, p + "post_attention_layernorm", q + "N2", out)
        qkv = w(p + "attention.query_key_value.weight")  # [h * 3 * dh, d], per head: q, k, v
        for j, name in enumerate("QKV"):
            out[f"{q}attn.W_{name}"] = linear(per_head_rows(qkv, h, 3, j, 1, dh))
        out[q + "attn.W_O"] = linear(w(p + "attention.dense.weight"))
        if cfg.attn_qkv_bias:
            qkv_b = w(p + "attention.query_key_value.bias")
            for j, name in enumerate("QKV"):
                out[f"{q}attn.b_{name}"] = per_head_rows(qkv_b, h, 3, j, 1, dh)
            out[q + "attn.b_O"] = w(p + "attention.dense.bias")
        out[q + "mlp.W_in"] = linear(w(p + "mlp.dense_h_to_4h.weight"))
        out[q + "mlp.b_in"] = w(p + "mlp.dense_h_to_4h.bias")
        out[q + "mlp.W_out"] = linear(w(p + "mlp.dense_4h_to_h.weight"))
        out[q + "mlp.b_out"] = w(p + "mlp.dense_4h_to_h.bias")
    layer_norm(w, "gpt_neox.final_layer_norm", "final_norm", out)
    # transformers 5 names the unembedding lm_head; 4.x checkpoints call it embed_out
    unembedding(w, cfg, out, "embed_out.weight" if w.has("embed_out.weight") else "lm_head.weight")
    w.finish()
    return out
