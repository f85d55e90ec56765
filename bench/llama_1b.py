"""A random-weight Llama with Llama-3.2-1B's shapes, as a user with a bigger model would check it (issue #13).

    next-token-spec check bench.llama_1b:factory -j 1

vocabulary 128256, d_model 2048, d_ff 8192, 16 layers, 32 query heads, 8 KV heads, tied embeddings: 1.24 billion
parameters, 4.9 GB in float32. The weights are transformers' own random initialisation under a fixed seed: no hub
download (none is reachable here), and no claim needs trained weights beyond those that say so. ``layers`` makes a
shallower model of the same widths (the same vocabulary and head layout) for a quicker look at where time goes.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPE: dict[str, Any] = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
             num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
             rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu")


def factory(device: str = "cpu", dtype: torch.dtype = torch.float32, layers: int = 16) -> LlamaForCausalLM:
    """The model on ``device`` in ``dtype``, in eval mode, built from seed 0 straight in its dtype (no float32
    copy first: a bfloat16 check of it needs half the memory)."""
    torch.manual_seed(0)
    config = LlamaConfig(**{**SHAPE, "num_hidden_layers": layers})
    config.pad_token_id = None
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=dtype)
    return model.eval()


def four_layers(device: str = "cpu", dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    """Four of the 16 layers (0.47 B parameters, 1.9 GB in float32: the embedding is 0.26 B of them)."""
    return factory(device, dtype, layers=4)
