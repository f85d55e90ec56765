"""Seeing inside any HuggingFace-style model through transformers' public extension points (issue #12).

Two seams, neither patching transformers' source:

* **Attention calls**, through ``AttentionInterface``: a wrapper is registered under a name of its own for the
  model's configured implementation (eager, sdpa, flash, flex), the model is switched to it with
  ``set_attn_implementation`` for one forward pass and back, and every call records what the layer handed
  its attention function — queries and keys after positions, values, the scaling, the mask — and what came
  back: the output, and the weights where the implementation returns them. Where it returns none (sdpa, flash),
  the weights are computed here from the recorded queries, keys, scaling and mask, in float32 or wider.
  Models whose attention does not go through the interface (``_supports_attention_backend`` false: Falcon,
  BLOOM) expose none of this, and say so.
* **Sublayers**, through module hooks: a decoder layer whose submodules follow a known naming layout (the
  Llama names ``input_layernorm``, ``self_attn``, ``post_attention_layernorm``, ``mlp``, or a family listed
  in ``_LAYOUTS``) gives its norms and MLP as direct calls, and its attention and whole block by running the
  model on a dummy input with a pre-hook that replaces that module's input by the x under test and a hook
  that stops the pass once its output is seen. The model's own positions (0..T-1) and causal mask apply, as
  the protocol asks. A layer with other norms than its layout names (Gemma 2's extra feed-forward norms, say)
  is not guessed at: not exposed, naming the layer.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from spec.target import NotExposed, note

_PREFIX = "next-token-spec-capture:"


@dataclass
class AttentionCall:
    """One call of a layer's attention function, as the layer made it (shapes as transformers passes them)."""

    module: nn.Module
    query: Tensor  # [B, H, T, d_head], after positions
    key: Tensor  # [B, H_kv, S, d_head], after positions
    value: Tensor  # [B, H_kv, S, d_head]
    mask: Tensor | None  # additive float or boolean (True: attend), [B, 1 or H, T, >= S]; None: causal
    scaling: float | None
    output: Tensor  # [B, T, H, d_head], before W_O
    weights: Tensor | None  # [B, H, T, S], as returned (None for sdpa / flash)
    options: dict[str, Any]

    def folded_scale(self) -> float | None:
        """The factor the layer multiplied into its queries before the call, where it did so: BART-style layers
        (OPT among them) compute ``q_proj(x) * self.scaling`` and pass ``scaling=1.0``. None otherwise."""
        own = getattr(self.module, "scaling", None)
        if self.scaling == 1.0 and isinstance(own, float) and own not in (0.0, 1.0):
            return own
        return None

    def queries(self) -> Tensor:
        """The queries as the documents define them (x W_Q + b_Q, after positions): a folded scale divided out,
        so that q . k times the scale the layer applies is the score. A layer that folds a wrong factor while its
        ``scaling`` attribute holds the right one is invisible here (REF-1 compares the logits)."""
        folded = self.folded_scale()
        if folded is None:
            return self.query
        note("attention scale", "folded into the queries before the attention call (q_proj(x) * scaling)")
        return self.query / folded

    def probabilities(self) -> Tensor:
        """The attention weights: as returned, or softmax(q k^T * scaling + mask) computed from this call."""
        if self.weights is not None:
            return self.weights
        for name in ("softcap", "s_aux", "sinks"):
            if self.options.get(name) is not None:
                raise NotExposed("attention_weights", f"the attention implementation returns no weights and the "
                                                      f"call uses {name}, which this computation does not model")
        return attention_probabilities(self.query, self.key, self.mask, self.scaling)


def attention_probabilities(query: Tensor, key: Tensor, mask: Tensor | None, scaling: float | None) -> Tensor:
    """softmax(q k^T * scaling + mask) over keys, [B, H, T, S], at least float32; grouped key heads are shared by
    consecutive query heads (h // (H / H_kv)); a None mask is causal with the queries at the end; a fully masked
    row (a padding query) is all zeros rather than NaN."""
    dt = torch.promote_types(query.dtype, torch.float32)
    h, t, s, dh = query.shape[1], query.shape[2], key.shape[2], query.shape[3]
    k = key.to(dt).repeat_interleave(h // key.shape[1], dim=1)
    scores = query.to(dt) @ k.transpose(-1, -2) * (dh ** -0.5 if scaling is None else scaling)
    if mask is None:
        i = torch.arange(t, device=query.device)[:, None] + (s - t)
        scores = scores.masked_fill(torch.arange(s, device=query.device)[None, :] > i, float("-inf"))
    elif mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask[..., :s], float("-inf"))
    else:
        scores = scores + mask[..., :s].to(dt)
    return torch.softmax(scores, dim=-1).nan_to_num(0.0)


_CALLS: ContextVar[list[AttentionCall] | None] = ContextVar("attention_calls", default=None)


def _original(implementation: str, module: nn.Module) -> Callable[..., Any]:
    """The function the layer would have called: the interface's, or its modeling file's eager one."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if implementation != "eager":
        return ALL_ATTENTION_FUNCTIONS[implementation]  # type: ignore[no-any-return]
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if eager is None:
        raise NotExposed("queries_keys", f"{type(module).__name__}'s modeling file has no eager_attention_forward")
    return eager  # type: ignore[no-any-return]


def _recording(implementation: str) -> Callable[..., Any]:
    def attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                  *args: Any, **kwargs: Any) -> Any:
        out = _original(implementation, module)(module, query, key, value, attention_mask, *args, **kwargs)
        calls = _CALLS.get()
        if calls is not None:
            output, weights = out
            calls.append(AttentionCall(module, query.detach(), key.detach(), value.detach(),
                                       None if attention_mask is None else attention_mask.detach(),
                                       kwargs.get("scaling"), output.detach(),
                                       None if weights is None else weights.detach(), dict(kwargs)))
        return out
    return attention


def interface_ok(model: nn.Module) -> str | None:
    """None when the model's attention goes through AttentionInterface, else why not (one line)."""
    if not getattr(model, "_supports_attention_backend", False):
        return f"{type(model).__name__}'s attention does not go through transformers' AttentionInterface"
    if not hasattr(model, "set_attn_implementation"):
        return f"{type(model).__name__} has no set_attn_implementation"
    return None


@contextmanager
def attention_calls(model: nn.Module) -> Iterator[list[AttentionCall]]:
    """Every attention call made while the block runs, in call order (the model's configured implementation
    still computes them)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    why = interface_ok(model)
    if why is not None:
        raise NotExposed("queries_keys", why)
    config: Any = getattr(model, "config", None)
    implementation = str(getattr(config, "_attn_implementation", None) or "eager")
    name = _PREFIX + implementation
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, _recording(implementation))
        masks = ALL_MASK_ATTENTION_FUNCTIONS
        AttentionMaskInterface.register(name, masks[implementation] if implementation in masks else masks["sdpa"])
    calls: list[AttentionCall] = []
    token = _CALLS.set(calls)
    model.set_attn_implementation(name)  # type: ignore[operator]
    try:
        yield calls
    finally:
        model.set_attn_implementation(implementation)  # type: ignore[operator]
        _CALLS.reset(token)


# -- sublayers through hooks ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Where a decoder layer keeps its parts, and how they are wired."""

    norm1: str
    attention: str
    norm2: str | None  # None: the MLP reads norm1's output too (a shared norm)
    mlp: str
    parallel: bool = False  # True: x + attention(norm1 x) + mlp(norm2 x), GPT-J's and GPT-NeoX's wiring


_LLAMA = Layout("input_layernorm", "self_attn", "post_attention_layernorm", "mlp", parallel=False)
# model_type -> layout, for the families that do not use the Llama names or wire them in parallel
_LAYOUTS: dict[str, Layout] = {
    "gpt2": Layout("ln_1", "attn", "ln_2", "mlp", parallel=False),
    "gptj": Layout("ln_1", "attn", None, "mlp", parallel=True),
    "phi": Layout("input_layernorm", "self_attn", None, "mlp", parallel=True),
    "gpt_neox": Layout("input_layernorm", "attention", "post_attention_layernorm", "mlp", parallel=False),
}
_LAYER_LISTS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers", "transformer.layers")


def attribute_path(obj: Any, path: str) -> Any:
    """obj.a.b.c for path "a.b.c", or None where any step is missing."""
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def decoder_layers(model: nn.Module) -> nn.ModuleList | None:
    return next((m for m in (attribute_path(model, p) for p in _LAYER_LISTS) if isinstance(m, nn.ModuleList)), None)


def layout(model: nn.Module) -> Layout | str:
    """The model's decoder-layer layout, or why there is none this module can trust (one line)."""
    layers = decoder_layers(model)
    if layers is None or len(layers) == 0:
        return f"{type(model).__name__}: no decoder layer list found (looked for {', '.join(_LAYER_LISTS)})"
    config: Any = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    chosen = _LAYOUTS.get(str(kind), _LLAMA)
    if kind == "gpt_neox" and getattr(config, "use_parallel_residual", False):
        chosen = Layout(chosen.norm1, chosen.attention, chosen.norm2, chosen.mlp, parallel=True)
    layer = layers[0]
    names = {n for n, _ in layer.named_children()}
    wanted = {chosen.norm1, chosen.attention, chosen.mlp} | ({chosen.norm2} if chosen.norm2 else set())
    if not wanted <= names:
        return f"{type(layer).__name__} has no {', '.join(sorted(wanted - names))} (layout of {kind or 'Llama'})"
    extra = sorted(n for n in names - wanted if "norm" in n or n.startswith("ln"))
    if extra:
        return f"{type(layer).__name__} has norms its layout does not place: {', '.join(extra)}"
    if kind == "gpt2" and getattr(config, "add_cross_attention", False):
        return "GPT-2 with cross-attention is not a decoder-only layer"
    return chosen


class _Stop(Exception):
    """Raised by a hook once the output it waited for is seen: the rest of the forward pass is not needed."""


def _first(out: Any) -> Tensor:
    return out[0] if isinstance(out, tuple) else out  # type: ignore[no-any-return]


@torch.no_grad()
def inputs_of(modules: list[nn.Module], run: Callable[[], object]) -> list[Tensor] | None:
    """The hidden states each of ``modules`` receives (its first positional argument, or ``hidden_states``) during
    ``run()``, a forward pass that is stopped as the last of them is about to run: what follows it is not computed
    (a 128k-token unembedding is a fifth of a 1B model's pass). None when the modules were not each called once,
    in order (a layer run twice, or skipped, or one module listed twice: layers sharing weights): the caller then
    takes the whole pass's outputs instead."""
    if len({id(m) for m in modules}) != len(modules):
        return None
    seen: list[Tensor] = []

    def grab(i: int) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if len(seen) != i:  # out of order, or called again
                raise _Stop
            seen.append(args[0] if args else kwargs["hidden_states"])
            if i == len(modules) - 1:
                raise _Stop
        return hook

    hooks = [m.register_forward_pre_hook(grab(i), with_kwargs=True) for i, m in enumerate(modules)]
    try:
        run()
    except _Stop:
        pass
    finally:
        for h in hooks:
            h.remove()
    return seen if len(seen) == len(modules) else None


def hf_forward(model: nn.Module) -> Callable[[Tensor], object]:
    """A HuggingFace model's forward pass for hidden states shaped like x [B, T, d]: ``inputs_embeds`` of zeros."""
    return lambda x: model(inputs_embeds=torch.zeros_like(x), use_cache=False)


@torch.no_grad()
def run_module_on(model: nn.Module | Callable[[Tensor], object], module: nn.Module, x: Tensor) -> Tensor:
    """``module``'s output when its input hidden states are x [B, T, d], inside a forward pass of the model on a
    dummy input of the same shape: the model supplies the positions (0..T-1) and the causal mask.

    ``model`` is a HuggingFace model (run on ``inputs_embeds``), or any function running the whole model once on
    an input of x's batch and length (spec.kit runs its target's logits on token 0 everywhere)."""
    forward = hf_forward(model) if isinstance(model, nn.Module) else model
    seen: list[Tensor] = []

    def replace(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if args:
            return (x, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": x}

    def stop(_m: nn.Module, _args: Any, out: Any) -> None:
        seen.append(_first(out))
        raise _Stop

    hooks = [module.register_forward_pre_hook(replace, with_kwargs=True), module.register_forward_hook(stop)]
    try:
        forward(x)
    except _Stop:
        pass
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        raise NotExposed("sublayers", f"{type(module).__name__} did not run in a forward pass of the model")
    return seen[0]


class HookedSublayers:
    """One decoder layer's parts as functions of x [B, T, d] (spec.target.Sublayers), through hooks.

    ``model`` runs attention and the whole block in a forward pass (``run_module_on``): a HuggingFace model, or a
    function running the model once for an x of a given shape. ``where`` names the parts, as attribute paths inside
    ``layer`` (dotted for nested modules)."""

    def __init__(self, model: nn.Module | Callable[[Tensor], object], layer: nn.Module, where: Layout) -> None:
        self._model, self._layer, self._where = model, layer, where

    def _part(self, name: str) -> nn.Module:
        return attribute_path(self._layer, name)  # type: ignore[no-any-return]

    @torch.no_grad()
    def norm1(self, x: Tensor) -> Tensor:
        return _first(self._part(self._where.norm1)(x))

    @torch.no_grad()
    def norm2(self, x: Tensor) -> Tensor:
        return _first(self._part(self._where.norm2 or self._where.norm1)(x))

    def attention(self, x: Tensor) -> Tensor:
        return run_module_on(self._model, self._part(self._where.attention), x)

    @torch.no_grad()
    def mlp(self, x: Tensor) -> Tensor:
        return _first(self._part(self._where.mlp)(x))

    def block(self, x: Tensor) -> Tensor:
        return run_module_on(self._model, self._layer, x)

    @property
    def parallel(self) -> bool:
        return self._where.parallel
