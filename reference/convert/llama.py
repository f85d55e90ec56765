"""Llama (model_type "llama").

Layout: separate q/k/v/o Linears (biases all present or all absent, ``attention_bias``),
a SwiGLU MLP gate_proj/up_proj/down_proj (biases per ``mlp_bias``), pre-RMSNorm with a
plain gain, half-split ("rotate_half") rotary over ``head_dim`` coordinates, grouped-query
attention via ``num_key_value_heads``. Nothing to reshape: every Linear is transposed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from reference.config import ModelConfig
from reference.convert.common import llama_like_config, llama_like_state_dict


def config(hf_config: Any) -> ModelConfig:
    bias = bool(hf_config.attention_bias)
    return llama_like_config(hf_config, qkv_bias=bias, out_bias=bias, mlp_bias=bool(hf_config.mlp_bias))


def state_dict(hf_config: Any, hf_state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return llama_like_state_dict(config(hf_config), hf_state_dict)
