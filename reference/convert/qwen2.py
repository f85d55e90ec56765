"""Qwen2 (model_type "qwen2").

The Llama layout with fixed biases: q_proj, k_proj, v_proj carry a bias, o_proj and
the MLP do not (hard-coded in HF's code). ``use_sliding_window`` windows only the layers
whose ``layer_types`` entry is "sliding_attention"; where any layer is windowed the
context is capped at the window (``common.max_positions``), which keeps the model exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from reference.config import ModelConfig
from reference.convert.common import llama_like_config, llama_like_state_dict


def config(hf_config: Any) -> ModelConfig:
    return llama_like_config(hf_config, qkv_bias=True, out_bias=False, mlp_bias=False)


def state_dict(hf_config: Any, hf_state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return llama_like_state_dict(config(hf_config), hf_state_dict)
