"""OPT (model_type "opt").

Layout: separate q/k/v/out_proj Linears and fc1/fc2, all with biases when
``enable_bias``; pre-LayerNorm blocks (``do_layer_norm_before``; OPT-350m's post-norm
blocks are not expressible). Learned positions with an offset: ``embed_positions`` has
max_position_embeddings + 2 rows and position p reads row p + 2
(OPTLearnedPositionalEmbedding), so the reference table P is rows 2 and up. OPT scales
the queries by 1/sqrt(head_dim) before the product, the same function as scaling the
scores. LayerNorms use torch's default eps 1e-5 (OPT passes none; there is no config
field); without ``layer_norm_elementwise_affine`` they have gain 1 and bias 0.
``word_embed_proj_dim`` != hidden_size (project_in / project_out) is not expressible.
The unembedding is the tied embedding unless ``tie_word_embeddings`` is False.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from reference.config import ModelConfig
from reference.convert.common import Weights, activation, linear, reject_true, unembedding, unsupported

OPT_POSITION_OFFSET = 2  # OPTLearnedPositionalEmbedding.offset
OPT_LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default; OPT's LayerNorms are built without eps


def config(hf_config: Any) -> ModelConfig:
    if not hf_config.do_layer_norm_before:
        raise unsupported("do_layer_norm_before", hf_config.do_layer_norm_before,
                          "the reference's blocks are pre-norm (norm before attention and MLP)")
    reject_true(hf_config, "_remove_final_layer_norm", why="the reference always applies a final norm")
    if hf_config.word_embed_proj_dim != hf_config.hidden_size:
        raise unsupported("word_embed_proj_dim", hf_config.word_embed_proj_dim,
                          f"differs from hidden_size={hf_config.hidden_size}: the reference has no "
                          "project_in / project_out around the blocks")
    bias = bool(hf_config.enable_bias)
    return ModelConfig(
        vocab_size=hf_config.vocab_size,
        d_model=hf_config.hidden_size,
        n_layers=hf_config.num_hidden_layers,
        n_heads=hf_config.num_attention_heads,
        d_mlp=hf_config.ffn_dim,
        mlp_activation=activation(hf_config, "activation_function"),
        mlp_bias=bias,
        norm="layernorm",
        norm_eps=OPT_LAYER_NORM_EPS,
        positions="learned",
        max_positions=hf_config.max_position_embeddings,
        attn_qkv_bias=bias,
        attn_out_bias=bias,
        tied_embeddings=bool(hf_config.tie_word_embeddings),
    )


def _layer_norm(w: Weights, hf: str, ref: str, out: dict[str, Tensor], affine: bool, like: Tensor) -> None:
    if affine:
        out[ref + ".weight"] = w(hf + ".weight")
        out[ref + ".bias"] = w(hf + ".bias")
    else:  # elementwise_affine=False: normalisation only, i.e. gain 1 and bias 0
        out[ref + ".weight"] = torch.ones(like.shape[1], dtype=like.dtype, device=like.device)
        out[ref + ".bias"] = torch.zeros(like.shape[1], dtype=like.dtype, device=like.device)


def state_dict(hf_config: Any, hf_state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    cfg = config(hf_config)
    affine = bool(hf_config.layer_norm_elementwise_affine)
    w = Weights(hf_state_dict)
    E = w("model.decoder.embed_tokens.weight")
    out: dict[str, Tensor] = {"embed.E": E,
                              "pos.P": w("model.decoder.embed_positions.weight")[OPT_POSITION_OFFSET:]}
    for i in range(cfg.n_layers):
        p, q = f"model.decoder.layers.{i}.", f"blocks.{i}."
        _layer_norm(w, p + "self_attn_layer_norm", q + "N1", out, affine, E)
        _layer_norm(w, p + "final_layer_norm", q + "N2", out, affine, E)
        for name, hf in (("Q", "q_proj"), ("K", "k_proj"), ("V", "v_proj"), ("O", "out_proj")):
            out[f"{q}attn.W_{name}"] = linear(w(f"{p}self_attn.{hf}.weight"))
            if cfg.attn_qkv_bias:
                out[f"{q}attn.b_{name}"] = w(f"{p}self_attn.{hf}.bias")
        out[q + "mlp.W_in"] = linear(w(p + "fc1.weight"))
        out[q + "mlp.W_out"] = linear(w(p + "fc2.weight"))
        if cfg.mlp_bias:
            out[q + "mlp.b_in"] = w(p + "fc1.bias")
            out[q + "mlp.b_out"] = w(p + "fc2.bias")
    _layer_norm(w, "model.decoder.final_layer_norm", "final_norm", out, affine, E)
    unembedding(w, cfg, out, "lm_head.weight")
    w.finish()
    return out
