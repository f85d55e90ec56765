"""Mistral (model_type "mistral").

The Llama layout without any biases (q/k/v/o and the MLP are bias-free in HF's code,
not configurable). Its one addition, ``sliding_window``, hides keys that are
``sliding_window`` or more slots back; the reference has no window, so the context is
capped at the window (``common.max_positions``), which keeps the model exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from reference.config import ModelConfig
from reference.convert.common import llama_like_config, llama_like_state_dict


def config(hf_config: Any) -> ModelConfig:
    return llama_like_config(hf_config, qkv_bias=False, out_bias=False, mlp_bias=False)


def state_dict(hf_config: Any, hf_state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return llama_like_state_dict(config(hf_config), hf_state_dict)
