"""GPT-2 (model_type "gpt2").

Layout: GPT-2 uses ``Conv1D`` rather than nn.Linear, whose weight is stored [in, out],
already the reference's orientation, so nothing is transposed (and nothing copied: W_Q,
W_K, W_V are column slices of c_attn, views). ``attn.c_attn`` fuses
q, k and v as three consecutive blocks of d_model columns ([d, 3d]: q = cols 0..d-1,
k = d..2d-1, v = 2d..3d-1; GPT2Attention splits with ``split(split_size, dim=2)``).
Learned positions (``wpe``), pre-LayerNorm, MLP c_fc / c_proj of width ``n_inner``
(default 4 d) with ``activation_function``; the unembedding is the tied ``wte`` unless
``tie_word_embeddings`` is False.

``scale_attn_weights=False`` means no 1/sqrt(d_head) (attn_scale = 1);
``scale_attn_by_inverse_layer_idx`` (a different scale per layer) and cross-attention
are not expressible. ``reorder_and_upcast_attn`` only changes the precision of the
score computation, not the function.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from reference.config import ModelConfig
from reference.convert.common import Weights, activation, layer_norm, reject_true, unembedding


def config(hf_config: Any) -> ModelConfig:
    reject_true(hf_config, "scale_attn_by_inverse_layer_idx",
                why="the reference uses one attention scale for every layer")
    reject_true(hf_config, "add_cross_attention", why="the reference is a decoder-only model")
    d = hf_config.n_embd
    return ModelConfig(
        vocab_size=hf_config.vocab_size,
        d_model=d,
        n_layers=hf_config.n_layer,
        n_heads=hf_config.n_head,
        d_mlp=hf_config.n_inner if hf_config.n_inner is not None else 4 * d,
        mlp_activation=activation(hf_config, "activation_function"),
        mlp_bias=True,
        norm="layernorm",
        norm_eps=hf_config.layer_norm_epsilon,
        positions="learned",
        max_positions=hf_config.n_positions,
        attn_qkv_bias=True,
        attn_out_bias=True,
        attn_scale=None if hf_config.scale_attn_weights else 1.0,
        tied_embeddings=bool(hf_config.tie_word_embeddings),
    )


def state_dict(hf_config: Any, hf_state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    cfg = config(hf_config)
    d = cfg.d_model
    w = Weights(hf_state_dict, ignore=[r"\.attn\.(masked_)?bias$"])  # old checkpoints' causal-mask buffers
    out: dict[str, Tensor] = {"embed.E": w("transformer.wte.weight"), "pos.P": w("transformer.wpe.weight")}
    for i in range(cfg.n_layers):
        p, q = f"transformer.h.{i}.", f"blocks.{i}."
        layer_norm(w, p + "ln_1", q + "N1", out)
        layer_norm(w, p + "ln_2", q + "N2", out)
        qkv_w, qkv_b = w(p + "attn.c_attn.weight"), w(p + "attn.c_attn.bias")  # [d, 3d], [3d]
        for j, name in enumerate("QKV"):
            out[f"{q}attn.W_{name}"] = qkv_w[:, j * d:(j + 1) * d]  # a column slice: a view
            out[f"{q}attn.b_{name}"] = qkv_b[j * d:(j + 1) * d]
        out[q + "attn.W_O"] = w(p + "attn.c_proj.weight")
        out[q + "attn.b_O"] = w(p + "attn.c_proj.bias")
        out[q + "mlp.W_in"] = w(p + "mlp.c_fc.weight")
        out[q + "mlp.b_in"] = w(p + "mlp.c_fc.bias")
        out[q + "mlp.W_out"] = w(p + "mlp.c_proj.weight")
        out[q + "mlp.b_out"] = w(p + "mlp.c_proj.bias")
    layer_norm(w, "transformer.ln_f", "final_norm", out)
    unembedding(w, cfg, out, "lm_head.weight")
    w.finish()
    return out
