"""Tiny HuggingFace architectures with random weights, built offline from configs.

There is no model hub here, so each preset is a config small enough to build in
milliseconds; its weights are seeded so every run sees the same model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def _gpt2() -> Any:
    from transformers import GPT2Config

    return GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0)


def _llama() -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                       tie_word_embeddings=False)


HF_PRESETS: dict[str, Callable[[], Any]] = {"gpt2": _gpt2, "llama": _llama}


def build_hf(name: str, *, seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             std: float = 0.2) -> Any:
    """The preset's HF model, eager attention, weights drawn N(0, std^2) (norm gains 1 + N(0, std^2))."""
    from transformers import AutoModelForCausalLM

    if name not in HF_PRESETS:
        raise ValueError(f"unknown HF preset {name!r}; choose one of {sorted(HF_PRESETS)}")
    cfg = HF_PRESETS[name]()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            noise = std * torch.randn(p.shape, generator=g, dtype=torch.float64)
            is_gain = p.dim() == 1 and ("norm" in pname or "ln" in pname) and pname.endswith("weight")
            p.copy_(1.0 + noise if is_gain else noise)
    return model.to(device=device, dtype=dtype).eval()
