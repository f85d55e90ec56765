"""Phi-3 (model_type "phi3").

The Llama wiring (pre-RMSNorm, half-split rotary, SwiGLU, GQA, no biases) with two
fused Linears:

- ``self_attn.qkv_proj`` [(H + 2 Hkv) * dh, d]: rows are all query heads, then all key
  heads, then all value heads (Phi3Attention slices qkv[..., :H*dh], the next Hkv*dh,
  then the rest).
- ``mlp.gate_up_proj`` [2 m, d]: the first m rows are the gate, the last m the "up"
  projection (Phi3MLP: ``gate, up = gate_up.chunk(2)``; out = down(up * act(gate))).

head_dim is hidden_size / num_attention_heads; ``partial_rotary_factor`` may rotate
only the leading part of each head. ``sliding_window`` caps the context (see
``common.max_positions``); "longrope" scaling is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from reference.config import ModelConfig
from reference.convert.common import Weights, linear, llama_like_config, llama_like_state_dict


def config(hf_config: Any) -> ModelConfig:
    return llama_like_config(hf_config, qkv_bias=False, out_bias=False, mlp_bias=False)


def _attention(w: Weights, p: str, cfg: ModelConfig) -> dict[str, Tensor]:
    qkv = w(p + "qkv_proj.weight")
    q, kv = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    return {"W_Q": linear(qkv[:q]), "W_K": linear(qkv[q:q + kv]), "W_V": linear(qkv[q + kv:]),
            "W_O": linear(w(p + "o_proj.weight"))}


def _mlp(w: Weights, p: str, cfg: ModelConfig) -> dict[str, Tensor]:
    gate_up = w(p + "gate_up_proj.weight")
    m = cfg.mlp_dim
    return {"W_gate": linear(gate_up[:m]), "W_in": linear(gate_up[m:]), "W_out": linear(w(p + "down_proj.weight"))}


def state_dict(hf_config: Any, hf_state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return llama_like_state_dict(config(hf_config), hf_state_dict, attention=_attention, mlp=_mlp)
