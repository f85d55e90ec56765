"""BLOOM (model_type "bloom").

Layout: ``self_attention.query_key_value`` fuses q, k and v *per head*: BloomAttention
views its output as [..., heads, 3, head_dim], so rows h*3*dh .. h*3*dh + dh - 1 are head
h's query, the next dh its key, the next dh its value (the bias alike). Positions are
ALiBi: HF adds slope_h * k_pos to the scores, the reference slope_h * (k_pos - q_pos),
equal up to a per-row constant the softmax ignores, with the same slopes (2^(-8/n)
geometric, interleaved extras for non-power-of-2 head counts). A LayerNorm
(``word_embeddings_layernorm``) follows the embedding lookup (embedding_norm). The MLP
is 4 * hidden_size wide with biases; the unembedding is tied unless
``tie_word_embeddings`` is False.

Nonlinearity: BloomGelu is x/2 (1 + tanh(0.79788456 x (1 + 0.044715 x^2))), the tanh
GELU with sqrt(2/pi) = 0.7978845608... written to 8 digits. It is converted to the
reference's "gelu_tanh"; the truncated constant moves activations by ~1e-10 relative,
below float32 resolution but visible in float64 (see the tests' tolerance). Bloom has no
activation field to refuse, and no reference activation carries that constant.

``apply_residual_connection_post_layernorm`` (residual taken after the norm) is not
expressible. ``pretraining_tp`` alone changes nothing at inference; with
``slow_but_exact`` HF splits the output matmuls into pretraining_tp slices *and drops
the attention and MLP output biases* (self_attention.dense.bias, mlp.dense_4h_to_h.bias
are never added), a quirk of HF's code rather than of BLOOM, so that combination is
refused instead of reproduced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from reference.config import ModelConfig
from reference.convert.common import (
    Weights,
    layer_norm,
    linear,
    per_head_rows,
    reject_true,
    unembedding,
    unsupported,
)

# ALiBi has no position table, and BloomConfig has no context-length field; the reference
# needs a bound (cache capacity, input checks). A config carrying ``seq_length`` (as the
# released config.json files do) gives it; otherwise 2048, BLOOM's training context.
DEFAULT_MAX_POSITIONS = 2048


def config(hf_config: Any) -> ModelConfig:
    reject_true(hf_config, "apply_residual_connection_post_layernorm",
                why="the reference's residual stream is never normalised in place")
    if hf_config.slow_but_exact and hf_config.pretraining_tp > 1:
        raise unsupported("slow_but_exact", hf_config.slow_but_exact,
                          f"with pretraining_tp={hf_config.pretraining_tp} HF's slow path never adds the "
                          "attention and MLP output biases (see the module docstring)")
    d = hf_config.hidden_size
    return ModelConfig(
        vocab_size=hf_config.vocab_size,
        d_model=d,
        n_layers=hf_config.n_layer,
        n_heads=hf_config.n_head,
        d_mlp=4 * d,  # BloomMLP: dense_h_to_4h is hidden_size -> 4 * hidden_size
        mlp_activation="gelu_tanh",  # BloomGelu, see the module docstring
        mlp_bias=True,
        norm="layernorm",
        norm_eps=hf_config.layer_norm_epsilon,
        positions="alibi",
        max_positions=int(getattr(hf_config, "seq_length", None) or DEFAULT_MAX_POSITIONS),
        attn_qkv_bias=True,
        attn_out_bias=True,
        embedding_norm=True,
        tied_embeddings=bool(hf_config.tie_word_embeddings),
    )


def state_dict(hf_config: Any, hf_state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    cfg = config(hf_config)
    h, dh = cfg.n_heads, cfg.head_dim
    w = Weights(hf_state_dict)
    out: dict[str, Tensor] = {"embed.E": w("transformer.word_embeddings.weight")}
    layer_norm(w, "transformer.word_embeddings_layernorm", "embed_norm", out)
    for i in range(cfg.n_layers):
        p, q = f"transformer.h.{i}.", f"blocks.{i}."
        layer_norm(w, p + "input_layernorm", q + "N1", out)
        layer_norm(w, p + "post_attention_layernorm", q + "N2", out)
        qkv_w, qkv_b = w(p + "self_attention.query_key_value.weight"), w(p + "self_attention.query_key_value.bias")
        for j, name in enumerate("QKV"):
            out[f"{q}attn.W_{name}"] = linear(per_head_rows(qkv_w, h, 3, j, 1, dh))
            out[f"{q}attn.b_{name}"] = per_head_rows(qkv_b, h, 3, j, 1, dh)
        out[q + "attn.W_O"] = linear(w(p + "self_attention.dense.weight"))
        out[q + "attn.b_O"] = w(p + "self_attention.dense.bias")
        out[q + "mlp.W_in"] = linear(w(p + "mlp.dense_h_to_4h.weight"))
        out[q + "mlp.b_in"] = w(p + "mlp.dense_h_to_4h.bias")
        out[q + "mlp.W_out"] = linear(w(p + "mlp.dense_4h_to_h.weight"))
        out[q + "mlp.b_out"] = w(p + "mlp.dense_4h_to_h.bias")
    layer_norm(w, "transformer.ln_f", "final_norm", out)
    unembedding(w, cfg, out, "lm_head.weight")
    w.finish()
    return out
