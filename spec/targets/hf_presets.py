"""Tiny HuggingFace architectures with random weights, built offline from configs.

There is no model hub here, so each preset is a config small enough to build in
milliseconds (vocabulary 97, width 32, 2 layers, 4 query heads, 2 key-value heads where
the family has grouped-query attention); its weights are seeded so every run sees the
same model. One preset per family that reference/convert/ supports, so every claim runs
against HF itself (issue #4), not only against the reference with HF as the oracle.

:func:`family_config` and :func:`random_hf_model` are shared with
tests/reference/test_convert_hf.py, which draws its configs through the same field names
and randomizes its models the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from spec.target import Target

# transformers config class of each family reference/convert/ supports
CONFIG_CLASSES: dict[str, str] = {
    "gpt2": "GPT2Config", "opt": "OPTConfig", "gpt_neox": "GPTNeoXConfig", "gptj": "GPTJConfig",
    "llama": "LlamaConfig", "mistral": "MistralConfig", "qwen2": "Qwen2Config", "gemma": "GemmaConfig",
    "phi3": "Phi3Config", "phi": "PhiConfig", "falcon": "FalconConfig", "bloom": "BloomConfig",
}
# the family's name for the MLP's hidden width (BLOOM has none: always 4 x width)
FFN_FIELD: dict[str, str | None] = {"gpt2": "n_inner", "gptj": "n_inner", "opt": "ffn_dim",
                                     "falcon": "ffn_hidden_size", "bloom": None}
# the family's name for the number of key-value heads (families without one are multi-head only)
KV_FIELD: dict[str, str] = {"llama": "num_key_value_heads", "mistral": "num_key_value_heads",
                             "qwen2": "num_key_value_heads", "gemma": "num_key_value_heads",
                             "phi3": "num_key_value_heads", "phi": "num_key_value_heads", "falcon": "num_kv_heads"}
# BLOOM (ALiBi) has no context length field
_NO_CONTEXT = ("bloom",)


def family_config(family: str, *, vocab_size: int, hidden_size: int, num_hidden_layers: int,
                  num_attention_heads: int, num_key_value_heads: int | None = None, ffn_size: int | None = None,
                  max_positions: int | None = None, **extra: Any) -> Any:
    """The family's transformers config with the sizes under the family's own field names, plus ``extra``.

    ``num_key_value_heads`` is refused for a family without grouped-query attention, and
    ``ffn_size`` for BLOOM (fixed 4 x width), so a preset cannot silently ask for a shape
    the family does not have.
    """
    import transformers

    if family not in CONFIG_CLASSES:
        raise ValueError(f"family must be one of {sorted(CONFIG_CLASSES)}, got {family!r}")
    kwargs: dict[str, Any] = {"vocab_size": vocab_size, "hidden_size": hidden_size,
                              "num_hidden_layers": num_hidden_layers, "num_attention_heads": num_attention_heads}
    if num_key_value_heads is not None:
        if family not in KV_FIELD:
            raise ValueError(f"num_key_value_heads: {family} has no grouped-query attention; leave it None")
        kwargs[KV_FIELD[family]] = num_key_value_heads
    if ffn_size is not None:
        field = FFN_FIELD.get(family, "intermediate_size")
        if field is None:
            raise ValueError(f"ffn_size: {family}'s MLP width is fixed at 4 x hidden_size; leave it None")
        kwargs[field] = ffn_size
    if max_positions is not None and family not in _NO_CONTEXT:
        kwargs["max_position_embeddings"] = max_positions
    return getattr(transformers, CONFIG_CLASSES[family])(**(kwargs | extra))


def randomize_(model: torch.nn.Module, seed: int, std: float = 0.2) -> torch.nn.Module:
    """Draw every weight N(0, std^2) in its own dtype; norms get that noise added to HF's init.

    HF's own init is tiny (std 0.02), so a wiring slip would move logits by ~1e-6; at
    std 0.2 it moves them by ~1e-1. Norm gains stay near HF's init (1, or Gemma's stored
    0 for a gain 1 + w), norm biases near 0, so the norms still normalise.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            is_norm = "Norm" in type(module).__name__
            for p in module.parameters(recurse=False):
                noise = std * torch.randn(p.shape, generator=g, dtype=p.dtype)
                if is_norm:
                    p.add_(noise)
                else:
                    p.copy_(noise)
    return model


def random_hf_model(config: Any, seed: int, *, dtype: torch.dtype = torch.float32, std: float = 0.2) -> Any:
    """``config``'s causal LM with eager attention, weights from :func:`randomize_`, in eval mode."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)  # HF's init of any buffer or parameter randomize_ does not reach
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=dtype)
    return randomize_(model, seed, std).eval()


# ------------------------------------------------------------------------------ the presets

_TOKENS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}  # inside the tiny vocabulary
_TINY: dict[str, Any] = {"vocab_size": 97, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                         "max_positions": 64}
_GQA = {"num_key_value_heads": 2}


def _gpt2() -> Any:
    return family_config("gpt2", **_TINY, bos_token_id=0, eos_token_id=0)


def _llama() -> Any:
    return family_config("llama", **_TINY, **_GQA, ffn_size=64, tie_word_embeddings=False)


def _opt() -> Any:
    return family_config("opt", **_TINY, ffn_size=64, dropout=0.0, **_TOKENS)


def _gpt_neox() -> Any:  # rotary on half of each 8-wide head, parallel attention + MLP (Pythia's layout)
    return family_config("gpt_neox", **_TINY, ffn_size=64, rotary_pct=0.5, use_parallel_residual=True, **_TOKENS)


def _gptj() -> Any:  # interleaved rotary on 4 of each head's 8 coordinates, parallel block
    return family_config("gptj", **_TINY, ffn_size=64, rotary_dim=4, **_TOKENS)


def _mistral() -> Any:  # no sliding window: with one shorter than the context, attention would not be causal-only
    return family_config("mistral", **_TINY, **_GQA, ffn_size=64, head_dim=8, sliding_window=None, **_TOKENS)


def _qwen2() -> Any:  # biased q/k/v projections
    return family_config("qwen2", **_TINY, **_GQA, ffn_size=64, use_sliding_window=False, **_TOKENS)


def _gemma() -> Any:  # embedding scaled by sqrt(width), RMSNorm gain 1 + w, tied unembedding
    return family_config("gemma", **_TINY, **_GQA, ffn_size=64, head_dim=8, **_TOKENS)


def _phi3() -> Any:
    return family_config("phi3", **_TINY, **_GQA, ffn_size=64, **_TOKENS)


def _phi() -> Any:  # parallel block with one shared LayerNorm, rotary on half of each head
    return family_config("phi", **_TINY, **_GQA, ffn_size=64, **_TOKENS)


def _falcon() -> Any:  # Falcon-7B's layout: multi-query, attention and MLP in parallel from one LayerNorm
    return family_config("falcon", **_TINY, ffn_size=64, new_decoder_architecture=False, multi_query=True,
                         parallel_attn=True, bias=False, alibi=False, **_TOKENS)


def _falcon_new() -> Any:  # Falcon-40B's layout: grouped-query, separate LayerNorms for attention and MLP
    return family_config("falcon", **_TINY, **_GQA, ffn_size=64, new_decoder_architecture=True, parallel_attn=True,
                         num_ln_in_parallel_attn=2, bias=False, alibi=False, **_TOKENS)


def _bloom() -> Any:  # ALiBi, LayerNorm on the embeddings
    return family_config("bloom", **_TINY, slow_but_exact=False, **_TOKENS)


HF_PRESETS: dict[str, Callable[[], Any]] = {
    "gpt2": _gpt2, "llama": _llama, "opt": _opt, "gpt_neox": _gpt_neox, "gptj": _gptj, "mistral": _mistral,
    "qwen2": _qwen2, "gemma": _gemma, "phi3": _phi3, "phi": _phi, "falcon": _falcon, "falcon-new": _falcon_new,
    "bloom": _bloom,
}


def build_hf(name: str, *, seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             std: float = 0.2) -> Any:
    """The preset's HF model, eager attention, weights from :func:`randomize_`.

    Drawn in float64 and then cast, so a preset has the same weights (up to rounding) in every dtype.
    """
    if name not in HF_PRESETS:
        raise ValueError(f"unknown HF preset {name!r}; choose one of {sorted(HF_PRESETS)}")
    model = random_hf_model(HF_PRESETS[name](), seed, dtype=torch.float64, std=std)
    return model.to(device=device, dtype=dtype).eval()


def from_spec(rest: str, device: str, dtype: torch.dtype) -> Target:
    """The registry's ``hf`` kind: ``hf:<preset>``, a preset's HF model as a glass-box target."""
    from spec.targets.hf_target import HFTarget

    return HFTarget(build_hf(rest, device=device, dtype=dtype), name=f"hf:{rest}")
