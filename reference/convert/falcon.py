"""Falcon (model_type "falcon"), both decoder layouts.

Fused ``query_key_value``: every layout is G groups of (n_rep query heads, 1 key head,
1 value head), each head_dim rows, read from FalconAttention._split_heads:

- ``new_decoder_architecture`` (Falcon-40B/180B): G = num_kv_heads, n_rep =
  num_attention_heads / num_kv_heads (view [..., G, n_rep + 2, dh]); grouped-query.
- old layout, ``multi_query`` (Falcon-7B): G = 1, n_rep = num_attention_heads
  (view [..., heads + 2, dh]: all queries, then the one key, then the one value).
- old layout, multi-head: G = num_attention_heads, n_rep = 1 (view [..., heads, 3, dh]).

Query head g * n_rep + r uses key/value head g, the reference's grouping. Biases on
qkv, dense and the MLP all follow ``bias``. Rotary is half-split over the whole head
(FalconRotaryEmbedding ignores partial factors). Blocks: the new layout is always
parallel, with two norms ``ln_attn`` / ``ln_mlp`` (num_ln_in_parallel_attn = 2, HF's
default there) or one shared ``input_layernorm`` (= 1, copied into N1 and N2); the old
layout is parallel with one shared ``input_layernorm`` when ``parallel_attn``, else
sequential with ``input_layernorm`` and ``post_attention_layernorm``.

Not expressible: ``alibi`` (Falcon rounds the slopes to bfloat16 and scales the bias
by 1/sqrt(head_dim), unlike the reference's Bloom ALiBi), and the combinations HF
itself cannot run (new layout without parallel_attn, old layout with two parallel
norms, old multi-head layout with num_kv_heads != num_attention_heads).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from reference.config import ModelConfig
from reference.convert.common import (
    Weights,
    activation,
    layer_norm,
    linear,
    per_head_rows,
    rope,
    unembedding,
    unsupported,
)


def _layout(hf_config: Any) -> tuple[int, int]:
    """(G, n_rep): groups of n_rep query heads sharing one key and one value head."""
    heads = hf_config.num_attention_heads
    if hf_config.new_decoder_architecture:
        kv = hf_config.num_kv_heads
        if heads % kv != 0:
            raise unsupported("num_kv_heads", kv, f"must divide num_attention_heads={heads}")
        return kv, heads // kv
    if hf_config.multi_query:
        return 1, heads
    if hf_config.num_kv_heads != heads:
        raise unsupported("num_kv_heads", hf_config.num_kv_heads, "the old multi-head layout needs "
                          f"num_kv_heads == num_attention_heads={heads} (HF cannot run it otherwise)")
    return heads, 1


def _norms(hf_config: Any) -> tuple[str, str, bool]:
    """(HF name of N1, HF name of N2, parallel residual)."""
    num_ln = hf_config.num_ln_in_parallel_attn
    if hf_config.new_decoder_architecture:
        if not hf_config.parallel_attn:
            raise unsupported("parallel_attn", hf_config.parallel_attn, "the new decoder architecture is "
                              "always parallel (HF cannot run it with parallel_attn=False)")
        if num_ln in (None, 2):  # FalconDecoderLayer sets None to 2 for the new architecture
            return "ln_attn", "ln_mlp", True
        if num_ln == 1:
            return "input_layernorm", "input_layernorm", True
        raise unsupported("num_ln_in_parallel_attn", num_ln, "must be 1 or 2")
    if hf_config.parallel_attn:
        if num_ln not in (None, 1):
            raise unsupported("num_ln_in_parallel_attn", num_ln, "the old layout has one shared norm "
                              "(HF cannot run it with two)")
        return "input_layernorm", "input_layernorm", True
    return "input_layernorm", "post_attention_layernorm", False


def config(hf_config: Any) -> ModelConfig:
    if hf_config.alibi:
        raise unsupported("alibi", hf_config.alibi, "Falcon's ALiBi uses bfloat16-rounded slopes and "
                          "scales the bias by 1/sqrt(head_dim); the reference's ALiBi is Bloom's")
    groups, _ = _layout(hf_config)
    _, _, parallel = _norms(hf_config)
    theta, _ = rope(hf_config)
    bias = bool(hf_config.bias)
    return ModelConfig(
        vocab_size=hf_config.vocab_size,
        d_model=hf_config.hidden_size,
        n_layers=hf_config.num_hidden_layers,
        n_heads=hf_config.num_attention_heads,
        n_kv_heads=groups,
        d_mlp=hf_config.ffn_hidden_size,
        mlp_activation=activation(hf_config, "activation"),
        mlp_bias=bias,
        norm="layernorm",
        norm_eps=hf_config.layer_norm_epsilon,
        positions="rotary",
        max_positions=hf_config.max_position_embeddings,
        rotary_theta=theta,
        attn_qkv_bias=bias,
        attn_out_bias=bias,
        parallel_residual=parallel,
        tied_embeddings=bool(hf_config.tie_word_embeddings),
    )


def state_dict(hf_config: Any, hf_state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    cfg = config(hf_config)
    groups, n_rep = _layout(hf_config)
    n1, n2, _ = _norms(hf_config)
    dh = cfg.head_dim
    w = Weights(hf_state_dict, ignore=[r"rotary_emb\.inv_freq$"])
    out: dict[str, Tensor] = {"embed.E": w("transformer.word_embeddings.weight")}
    parts = {"Q": (0, n_rep), "K": (n_rep, 1), "V": (n_rep + 1, 1)}  # heads within a group of n_rep + 2
    for i in range(cfg.n_layers):
        p, q = f"transformer.h.{i}.", f"blocks.{i}."
        layer_norm(w, p + n1, q + "N1", out)
        layer_norm(w, p + n2, q + "N2", out)
        qkv = w(p + "self_attention.query_key_value.weight")
        for name, (start, count) in parts.items():
            out[f"{q}attn.W_{name}"] = linear(per_head_rows(qkv, groups, n_rep + 2, start, count, dh))
        out[q + "attn.W_O"] = linear(w(p + "self_attention.dense.weight"))
        out[q + "mlp.W_in"] = linear(w(p + "mlp.dense_h_to_4h.weight"))
        out[q + "mlp.W_out"] = linear(w(p + "mlp.dense_4h_to_h.weight"))
        if cfg.attn_qkv_bias:
            qkv_b = w(p + "self_attention.query_key_value.bias")
            for name, (start, count) in parts.items():
                out[f"{q}attn.b_{name}"] = per_head_rows(qkv_b, groups, n_rep + 2, start, count, dh)
            out[q + "attn.b_O"] = w(p + "self_attention.dense.bias")
            out[q + "mlp.b_in"] = w(p + "mlp.dense_h_to_4h.bias")
            out[q + "mlp.b_out"] = w(p + "mlp.dense_4h_to_h.bias")
    layer_norm(w, "transformer.ln_f", "final_norm", out)
    unembedding(w, cfg, out, "lm_head.weight")
    w.finish()
    return out
