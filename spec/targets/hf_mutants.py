"""Mutants of HuggingFace models: the zoo's bug classes put into transformers models through public extension points.

Each is a tiny HF preset (spec.targets.hf_presets) with one bug, injected the way a user's own code would put it
there, never by editing or copying transformers' modeling code:

- an attention function of our own registered with ``transformers.AttentionInterface`` (with its mask function
  with ``AttentionMaskInterface``) and selected with ``model.set_attn_implementation``: a kernel that forgets the
  scale, tiles the grouped key/value heads, normalises over the wrong axis; or HF's own sdpa kernel fed a mask
  function that drops the causal part or the padding;
- forward hooks on the decoder layers: a block that returns its update without its input.

The target is ``HFTarget`` (spec.targets.hf_target) around the broken model, so the glass-box capabilities
(spec.targets.hf_glass: queries, keys and weights through the same interface; sublayers through module hooks) see
the bug as they would see it in anyone's model; ``build`` gives fresh models the same bug. They are registered in
the zoo (spec.targets.mutants.MUTANTS) as ``mutant:hf-...``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from reference.config import ModelConfig
from spec.target import Target
from spec.targets.hf_glass import decoder_layers
from spec.targets.hf_target import HFTarget

_PREFIX = "next-token-spec-mutant:"


# ============================================================================================ attention functions
def attend(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None, *,
           scaling: float | None = None, repeat: Callable[[Tensor, int], Tensor] | None = None, axis: int = -1,
           **_: Any) -> tuple[Tensor, Tensor]:
    """softmax(q k^T * scaling + mask) v over keys, the attention an ``AttentionInterface`` function computes.

    query [B, H, T, d], key and value [B, H_kv, S, d]; the mask as transformers' eager mask function makes it
    (additive, [B, 1, T, >= S]) or boolean (True: attend). Returns (output [B, T, H, d], weights [B, H, T, S]), as
    the interface expects. ``repeat`` expands the key/value heads to the query heads (default: each key/value head
    read by its group of consecutive query heads), ``axis`` is the axis the softmax normalises over (-1: keys).
    """
    groups = query.shape[1] // key.shape[1]
    expand = repeat or (lambda x, n: x.repeat_interleave(n, dim=1))
    k, v = expand(key, groups), expand(value, groups)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = (query.float() @ k.float().transpose(-1, -2)) * scale
    if attention_mask is not None:
        mask = attention_mask[..., : k.shape[2]]
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    weights = torch.softmax(scores, dim=axis).to(value.dtype)
    return (weights @ v).transpose(1, 2).contiguous(), weights


def _unscaled(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
              **kwargs: Any) -> tuple[Tensor, Tensor]:
    """Ignores the ``scaling`` the layer passes: scores q . k unscaled."""
    return attend(module, query, key, value, attention_mask, **{**kwargs, "scaling": 1.0})


def _tiled(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
           **kwargs: Any) -> tuple[Tensor, Tensor]:
    """Key/value heads tiled [0, 1, 0, 1] where the query heads expect them grouped [0, 0, 1, 1]."""
    return attend(module, query, key, value, attention_mask, repeat=lambda x, n: x.repeat(1, n, 1, 1), **kwargs)


def _over_queries(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                  **kwargs: Any) -> tuple[Tensor, Tensor]:
    """Normalises each key's column over the queries (dim=-2) instead of each query's row over the keys."""
    return attend(module, query, key, value, attention_mask, axis=-2, **kwargs)


def _hf_sdpa(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """transformers' own sdpa attention function, as registered under "sdpa"."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return ALL_ATTENTION_FUNCTIONS["sdpa"](module, *args, **kwargs)


def _eager_mask(**kwargs: Any) -> Any:
    """transformers' eager mask function (an additive float mask, always materialised)."""
    from transformers.masking_utils import eager_mask

    return eager_mask(**kwargs)


def _bidirectional_mask(**kwargs: Any) -> Any:
    """The eager mask built with the bidirectional mask function where the model asked for the causal one."""
    from transformers.masking_utils import bidirectional_mask_function, eager_mask

    return eager_mask(**{**kwargs, "mask_function": bidirectional_mask_function})


def _unpadded_mask(**kwargs: Any) -> Any:
    """The eager mask built without the 2D padding mask: padded keys stay visible."""
    from transformers.masking_utils import eager_mask

    return eager_mask(**{**kwargs, "attention_mask": None})


def attention_bug(name: str, function: Callable[..., Any], mask: Callable[..., Any] = _eager_mask
                  ) -> Callable[[nn.Module], None]:
    """An injector: ``function`` and ``mask`` registered under a name of this mutant's own, and the model switched to
    it (``set_attn_implementation``, as a user selects a custom kernel)."""
    key = _PREFIX + name

    def inject(model: nn.Module) -> None:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        AttentionInterface.register(key, function)
        AttentionMaskInterface.register(key, mask)
        model.set_attn_implementation(key)  # type: ignore[operator]

    return inject


# ============================================================================================ hooks
def _hidden_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
    return args[0] if args else kwargs["hidden_states"]  # type: ignore[no-any-return]


def _without_input(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Any:
    """A forward hook: the layer's output less its input (the input as the layer received it, after any pre-hook)."""
    x = _hidden_input(args, kwargs)
    if isinstance(out, tuple):
        return (out[0] - x, *out[1:])
    return out - x


def residual_dropped(model: nn.Module) -> None:
    """Every decoder layer returns attention + MLP output without adding its input back."""
    layers = decoder_layers(model)
    assert layers is not None, f"{type(model).__name__}: no decoder layers found"
    for layer in layers:
        layer.register_forward_hook(_without_input, with_kwargs=True)


# ============================================================================================ the zoo entries
@dataclass(frozen=True)
class HFMutant:
    """One HF entry of the zoo: a named bug, where it is seen, the HF preset it lives in and how it is injected."""

    name: str
    bug_class: str
    description: str
    seen_in: str  # a public report of the bug class (URL), or ""
    preset: str  # an HF preset (spec.targets.hf_presets.HF_PRESETS)
    inject: Callable[[nn.Module], None]  # puts the bug into a built model, through a public extension point
    missing: str = ""  # as Mutant.missing: what an opaque target lacks to show the bug ("" when it shows it)


class HFMutantTarget(HFTarget):
    """An HF model carrying one mutant's bug; models it builds carry it too."""

    def __init__(self, mutant: HFMutant, model: nn.Module, name: str | None = None) -> None:
        mutant.inject(model)
        super().__init__(model, name=name or f"mutant:{mutant.name}")
        self.mutant = mutant

    def build(self, config: ModelConfig, seed: int = 0) -> Target:
        built = super().build(config, seed)
        assert isinstance(built, HFTarget)
        return HFMutantTarget(self.mutant, built.model, name=f"{self.name}[built]")


_HF = "https://github.com/huggingface/transformers"
HF_ZOO: list[HFMutant] = [
    HFMutant("hf-attn-scale-none", "attention scale wrong (none), in an HF model",
             "A custom attention function registered with transformers' AttentionInterface ignores the `scaling` "
             "argument the layer passes and multiplies q . k by 1, so every attention softmax is too sharp by "
             "sqrt(d_head) (the Gemma ports that hardcoded the scale).",
             "https://github.com/mlc-ai/mlc-llm/pull/3485", "llama", attention_bug("hf-attn-scale-none", _unscaled)),
    HFMutant("hf-gqa-tiled-heads", "grouped-query heads repeated in the wrong order, in an HF model",
             "A custom attention function expands the key/value heads with repeat (query head h reads key/value head "
             "h mod n_kv) where transformers' layers expect repeat_kv's grouping (h // group).",
             "https://github.com/onnx/onnx/pull/7274", "llama", attention_bug("hf-gqa-tiled-heads", _tiled)),
    HFMutant("hf-softmax-wrong-axis", "softmax over the wrong axis, in an HF model",
             "A custom attention function normalises over the queries (dim=-2) instead of the keys.",
             "https://github.com/PetrochukM/PyTorch-NLP/issues/2", "llama",
             attention_bug("hf-softmax-wrong-axis", _over_queries)),
    HFMutant("hf-causal-mask-dropped", "causal mask dropped, in an HF model",
             "The mask function registered for the attention implementation builds a bidirectional mask (padding "
             "only) where the model asked for a causal one, as when an encoder's mask is reused or a kernel is "
             "called with is_causal=False and no mask: every position sees the tokens after it. transformers' sdpa "
             "kernel itself computes the attention.",
             f"{_HF}/issues/28802", "llama", attention_bug("hf-causal-mask-dropped", _hf_sdpa, _bidirectional_mask)),
    HFMutant("hf-padding-ignored", "padding not masked, in an HF model",
             "The mask function registered for the attention implementation drops the 2D padding mask and keeps "
             "only the causal part, so in a left-padded batch every prompt also attends to its padding tokens "
             "(batched generation differing from one prompt at a time). transformers' sdpa kernel computes the "
             "attention.",
             f"{_HF}/issues/25921", "llama", attention_bug("hf-padding-ignored", _hf_sdpa, _unpadded_mask)),
    HFMutant("hf-residual-dropped", "residual dropped, in an HF model",
             "Forward hooks on GPT-2's decoder layers (an adapter or an editing tool gone wrong) subtract each "
             "layer's input from its output, so a block returns attention plus MLP output without its input: the "
             "residual stream is replaced instead of added to.",
             "", "gpt2", residual_dropped),
]
HF_MUTANTS: dict[str, HFMutant] = {m.name: m for m in HF_ZOO}


def build(name: str, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
          seed: int = 0) -> HFMutantTarget:
    """The HF mutant ``name`` on its preset (random weights from ``seed``)."""
    from spec.targets.hf_presets import build_hf

    m = HF_MUTANTS[name]
    return HFMutantTarget(m, build_hf(m.preset, seed=seed, device=device, dtype=dtype))


__all__ = ["HF_MUTANTS", "HF_ZOO", "HFMutant", "HFMutantTarget", "attend", "attention_bug", "build",
           "residual_dropped"]
