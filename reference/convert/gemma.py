"""Gemma (model_type "gemma"; Gemma 1 only: Gemma 2/3 are other model types).

The Llama layout with three differences, all folded in at conversion:

- RMSNorm gains are stored as w and used as (1 + w) (GemmaRMSNorm); the reference's
  gain is ``weight`` itself, so weight = 1 + w (formed in float32, as HF does).
- The looked-up embedding rows are multiplied by sqrt(hidden_size). HF keeps that factor
  in a buffer made with ``torch.tensor(hidden_size ** 0.5)``, i.e. rounded to float32,
  and casts it to the weights' dtype when used; the reference's ``embedding_scale`` is
  likewise cast to the model dtype when used, so it is set to the float32-rounded value.
- ``head_dim`` is explicit (256 in the released models, not hidden_size / heads).

The MLP is gated with ``hidden_act`` (gelu_pytorch_tanh; the config maps the legacy
"gelu" to it) and has no biases; q/k/v/o biases follow ``attention_bias``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from reference.config import ModelConfig
from reference.convert.common import float32_round, llama_like_config, llama_like_state_dict, reject_true


def config(hf_config: Any) -> ModelConfig:
    reject_true(hf_config, "use_bidirectional_attention", why="the reference is causal only")
    bias = bool(hf_config.attention_bias)
    return llama_like_config(hf_config, qkv_bias=bias, out_bias=bias, mlp_bias=False,
                             embedding_scale=float32_round(math.sqrt(hf_config.hidden_size)))


def state_dict(hf_config: Any, hf_state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return llama_like_state_dict(config(hf_config), hf_state_dict, gain_offset=1.0)
