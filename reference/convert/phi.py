"""Phi-1 / Phi-1.5 / Phi-2 (model_type "phi").

Layout: separate q/k/v Linears and the output ``dense``, all with biases; one LayerNorm
``input_layernorm`` feeds attention and MLP in parallel (h + Attn(ln h) + MLP(ln h)), so
it is copied into both N1 and N2. Rotary is half-split over the first
int(head_dim * partial_rotary_factor) coordinates (0.5 by default). The MLP fc1/fc2 has
biases; ``lm_head`` has a bias (unembed_bias) and is untied unless ``tie_word_embeddings``.
``qk_layernorm`` (LayerNorms on queries and keys) is not expressible.
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
    head_dim,
    layer_norm,
    linear,
    reject_true,
    rope,
    unembedding,
)


def config(hf_config: Any) -> ModelConfig:
    reject_true(hf_config, "qk_layernorm", why="the reference has no norms on queries and keys")
    dh = head_dim(hf_config)
    theta, fraction = rope(hf_config)
    check_rotary_width(dh, fraction, "rope_parameters['partial_rotary_factor']")
    return ModelConfig(
        vocab_size=hf_config.vocab_size,
        d_model=hf_config.hidden_size,
        n_layers=hf_config.num_hidden_layers,
        n_heads=hf_config.num_attention_heads,
        n_kv_heads=hf_config.num_key_value_heads,
        d_head=dh,
        d_mlp=hf_config.intermediate_size,
        mlp_activation=activation(hf_config, "hidden_act"),
        mlp_bias=True,
        norm="layernorm",
        norm_eps=hf_config.layer_norm_eps,
        positions="rotary",
        max_positions=hf_config.max_position_embeddings,
        rotary_theta=theta,
        rotary_fraction=fraction,
        attn_qkv_bias=True,
        attn_out_bias=True,
        parallel_residual=True,
        tied_embeddings=bool(hf_config.tie_word_embeddings),
        unembed_bias=True,
    )


def state_dict(hf_config: Any, hf_state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    cfg = config(hf_config)
    w = Weights(hf_state_dict, ignore=[r"rotary_emb\.inv_freq$"])
    out: dict[str, Tensor] = {"embed.E": w("model.embed_tokens.weight")}
    for i in range(cfg.n_layers):
        p, q = f"model.layers.{i}.", f"blocks.{i}."
        layer_norm(w, p + "input_layernorm", q + "N1", out)
        out[q + "N2.weight"], out[q + "N2.bias"] = out[q + "N1.weight"], out[q + "N1.bias"]  # one shared norm
        for name, hf in (("Q", "q_proj"), ("K", "k_proj"), ("V", "v_proj"), ("O", "dense")):
            out[f"{q}attn.W_{name}"] = linear(w(f"{p}self_attn.{hf}.weight"))
            out[f"{q}attn.b_{name}"] = w(f"{p}self_attn.{hf}.bias")
        out[q + "mlp.W_in"] = linear(w(p + "mlp.fc1.weight"))
        out[q + "mlp.b_in"] = w(p + "mlp.fc1.bias")
        out[q + "mlp.W_out"] = linear(w(p + "mlp.fc2.weight"))
        out[q + "mlp.b_out"] = w(p + "mlp.fc2.bias")
    layer_norm(w, "model.final_layernorm", "final_norm", out)
    unembedding(w, cfg, out, "lm_head.weight", bias="lm_head.bias")
    w.finish()
    return out
