"""Any HuggingFace-style causal LM as a spec target.

Called as ``model(input_ids=..., attention_mask=...)`` with ``.logits`` in the
result. HuggingFace models expose more (hidden states, attention probabilities, a
KV cache, greedy generation, their embedding matrices), so those claims run on HF
itself: it is checked, not only used as an oracle.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from reference.config import ModelConfig
from reference.model import Transformer
from spec.target import Departures, NotExposed, Sublayers, Target, sgd_step
from spec.targets.hf_glass import (
    AttentionCall,
    HookedSublayers,
    Layout,
    attention_calls,
    attribute_path,
    decoder_layers,
    inputs_of,
    interface_ok,
    layout,
)
from spec.tolerance import for_dtype

# Where HF families keep their final norm (its input is the last residual state).
_FINAL_NORM_PATHS = ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "model.decoder.final_layer_norm",
                     "model.final_layernorm", "transformer.norm_f")


def _warp(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None) -> Tensor:
    """generate(do_sample=True)'s warpers, each added under the condition generate adds it (DEC-2..DEC-4)."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k is not None and top_k != 0:
        warpers.append(TopKLogitsWarper(top_k=top_k))
    if top_p is not None and top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p))
    ids: Any = torch.zeros(logits.shape[0], 0, dtype=torch.long, device=logits.device)  # the warpers ignore it
    return warpers(ids, logits.clone())


def cache_keyword(forward_params: Mapping[str, inspect.Parameter]) -> str:
    """The name under which this model's forward takes, and its output returns, the KV cache.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old keyword still works,
    with a FutureWarning per call, until 5.40; the output's ``past_key_values`` attribute is
    an alias logging a deprecation). Read from the signature, never from a version string, so
    the project runs on every transformers it allows (>= 4.48) and on HF-style models of
    other libraries: ``cache`` where forward declares it, else the older ``past_key_values``.
    """
    return "cache" if "cache" in forward_params else "past_key_values"


def _text_config(model: nn.Module) -> Any:
    """The model's config, or its text part where it has one (get_text_config)."""
    hf = getattr(model, "config", None)
    return hf.get_text_config() if hf is not None and hasattr(hf, "get_text_config") else hf


def _number(config: Any, field: str, default: float | None = None) -> Any:
    """A numeric config field as a float; ``default`` where the config lacks it or holds something else (None, or
    MPT's logit_scale = "inv_sqrt_d_model", a rule this reading does not model)."""
    value = getattr(config, field, None)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


_QK_NORM_NAMES = (("q_norm", "k_norm"), ("q_layernorm", "k_layernorm"), ("query_layernorm", "key_layernorm"),
                  ("q_layer_norm", "k_layer_norm"))  # transformers' names for QK-norm (80, 6, 3 and 1 models)


def _qk_pair(module: nn.Module) -> list[nn.Module]:
    """The module's query and key norms, [q, k], where it holds a pair under transformers' names; else []."""
    for q_name, k_name in _QK_NORM_NAMES:
        q, k = getattr(module, q_name, None), getattr(module, k_name, None)
        if isinstance(q, nn.Module) and isinstance(k, nn.Module):
            return [q, k]
    return []


def _sinks(module: nn.Module) -> Tensor | None:
    """The module's attention sink logits, where it holds a ``sinks`` parameter (transformers' name, GPT-OSS)."""
    sinks = getattr(module, "sinks", None)
    return sinks if isinstance(sinks, nn.Parameter) else None


def _qk_norms(model: nn.Module) -> list[nn.Module]:
    """The query and key norms of every module holding a pair (transformers' QK-norm attention layers)."""
    return [norm for module in model.modules() for norm in _qk_pair(module)]


class HFTarget(Target):
    """Wraps a transformers PreTrainedModel (or anything called the same way)."""

    def __init__(self, model: nn.Module, name: str = "hf", version: str = "", tolerance: str | None = None,
                 trained: bool = False) -> None:
        self.model = model.eval()
        self.name = name
        try:
            import transformers

            self.version = version or f"transformers {transformers.__version__}"
        except ImportError:  # a user's model that only looks like HF
            self.version = version
        cfg = getattr(model, "config", None)
        self.vocab_size = int(getattr(cfg, "vocab_size", 0)) or int(self._output_width())
        ctx = getattr(cfg, "max_position_embeddings", 0) or getattr(cfg, "n_positions", 0)
        self.max_positions = int(ctx or 1 << 30)
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.tolerance = tolerance or for_dtype(self.dtype).name
        self.trained = trained  # type: ignore[misc]
        params = inspect.signature(model.forward).parameters
        self._takes_positions = "position_ids" in params
        self._cache_arg = cache_keyword(params)
        found = (attribute_path(model, p) for p in _FINAL_NORM_PATHS)
        self._final_norm = next((m for m in found if m is not None), None)

    def _output_width(self) -> int:
        out = self.model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=next(self.model.parameters()).device))
        return int(out.logits.shape[-1])

    def _kwargs(self, ids: Tensor, attention_mask: Tensor | None) -> dict[str, Tensor]:
        self.check_length(ids.shape[-1])
        kw: dict[str, Tensor] = {"input_ids": ids}
        if attention_mask is not None:
            kw["attention_mask"] = attention_mask.long()
            if self._takes_positions:  # as HF's own generate does for left padding
                kw["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return kw

    @torch.no_grad()
    def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.model(**self._kwargs(ids, attention_mask)).logits

    def embedding_matrix(self) -> Tensor:
        emb: Any = self.model.get_input_embeddings()  # type: ignore[operator]
        if emb is None:
            raise NotExposed("embedding_matrix")
        return emb.weight.detach()

    @torch.no_grad()
    def embed(self, ids: Tensor) -> Tensor:
        """HF's hidden_states[0]: what enters the first block (after the family's scale, positions or norm), taken
        as the first decoder layer's input, the pass stopped there (no block or unembedding runs for it)."""
        self.check_length(ids.shape[-1])
        layers = decoder_layers(self.model)
        if layers is not None and len(layers) > 0:
            got = inputs_of([layers[0]], lambda: self.model(input_ids=ids, use_cache=False))
            if got is not None:
                return got[0]
        return self.model(input_ids=ids, output_hidden_states=True).hidden_states[0]

    def unembedding(self) -> tuple[Tensor, Tensor | None]:
        head: Any = self.model.get_output_embeddings()  # type: ignore[operator]
        if head is None:
            raise NotExposed("unembedding")
        bias = getattr(head, "bias", None)
        return head.weight.detach().T, None if bias is None else bias.detach()

    @torch.no_grad()
    def final_norm(self, h: Tensor) -> Tensor:
        if self._final_norm is None:
            raise NotExposed("final_norm", "final norm module not found")
        return self._final_norm(h)

    @torch.no_grad()
    def residual_states(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        """HF's hidden_states, with the last one taken before the final norm (HF applies it there)."""
        if self._final_norm is None:
            raise NotExposed("residual_states", "final norm module not found")
        layers = decoder_layers(self.model)
        if layers is not None and len(layers) > 0:  # each layer's input and the final norm's; no unembedding
            got = inputs_of([*layers, self._final_norm],
                            lambda: self.model(**self._kwargs(ids, attention_mask), use_cache=False))
            if got is not None:
                return tuple(got)
        captured: list[Tensor] = []
        hook = self._final_norm.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            out = self.model(**self._kwargs(ids, attention_mask), output_hidden_states=True)
        finally:
            hook.remove()
        return (*out.hidden_states[:-1], captured[-1])

    @torch.no_grad()
    def _attention_calls(self, ids: Tensor, attention_mask: Tensor | None = None,
                         upto: int | None = None) -> list[AttentionCall]:
        """One forward pass with each layer's attention call recorded (spec.targets.hf_glass), one per layer: every
        layer's, or with ``upto`` layers 0..upto only. The pass stops where nothing more is needed -- before the next
        decoder layer, or before the final norm (the unembedding never runs) -- and runs whole where the layers did
        not each make one call by then (shared or reordered layers), so that the count is checked on the whole pass."""
        layers = decoder_layers(self.model)
        stop_at: nn.Module | None = None
        want = 0
        if layers is not None and (upto is None or 0 <= upto < len(layers)):  # else a whole pass, indexed as asked
            want = len(layers) if upto is None else upto + 1  # calls recorded when the pass stops
            stop_at = layers[want] if want < len(layers) else self._final_norm

        def run() -> None:
            self.model(**self._kwargs(ids, attention_mask), use_cache=False)

        with attention_calls(self.model) as calls:
            # inputs_of stops the pass as stop_at is about to run, or (None) it was never called: the pass ran whole
            stopped = stop_at is not None and inputs_of([stop_at], run) is not None
            if stop_at is None or (stopped and len(calls) != want):  # shared or reordered layers: a whole pass
                calls.clear()
                stopped = False
                run()
        if layers is not None and not stopped and len(calls) != len(layers):
            raise NotExposed("queries_keys", f"{len(calls)} attention calls for {len(layers)} decoder layers")
        return calls

    def queries_keys(self, layer: int, ids: Tensor) -> tuple[Tensor, Tensor]:
        """The queries and keys the layer handed its attention function (after positions), via AttentionInterface;
        no later layer runs."""
        call = self._attention_calls(ids, upto=layer)[layer]
        return call.queries(), call.key

    def projections(self, layer: int, ids: Tensor) -> tuple[Tensor, Tensor]:
        """The inputs of the layer's query and key norms (transformers' names for QK-norm layers: ``q_norm`` and
        ``k_norm`` in Qwen 3, OLMo 2, Gemma 3, Cohere; ``q_layernorm`` and ``k_layernorm`` in Phi and StableLM;
        ``query_layernorm`` and ``key_layernorm`` in Hunyuan; ``q_layer_norm`` and ``k_layer_norm``),
        [B, T, features]: the queries and keys as their projections made them, before the norm and positions.
        Recorded in the pass that records the layer's attention call, which names the layer's attention module; no
        later layer runs. Which axis holds the tokens is measured, never guessed from sizes: the one of length T,
        or where two are (heads = T), the one that grows by one with one more token."""
        module, (q, k) = self._norm_inputs(layer, ids)
        longer: tuple[Tensor, Tensor] | None = None  # the same inputs for one token more, where an axis is in doubt
        both = []
        for name, x in (("query", q), ("key", k)):
            axes = [i for i in range(1, x.dim()) if x.shape[i] == ids.shape[1]]
            if len(axes) > 1:  # heads = tokens, say: one token more tells
                if longer is None:
                    longer = self._norm_inputs(layer, torch.cat([ids, ids[:, :1]], dim=1))[1]
                axes = [i for i in axes if longer[name == "key"].shape[i] == ids.shape[1] + 1]
            if x.shape[0] != ids.shape[0] or len(axes) != 1:
                raise NotExposed("projections", f"layer {layer}'s {name} norm ({type(module).__name__}) took "
                                                f"{tuple(x.shape)} for {tuple(ids.shape)} ids: no one token axis")
            both.append(x.movedim(axes[0], 1).reshape(*ids.shape, -1))
        return both[0], both[1]

    def _norm_inputs(self, layer: int, ids: Tensor) -> tuple[nn.Module, tuple[Tensor, Tensor]]:
        """The layer's attention module and the inputs of its query and key norms in one (stopped) pass."""
        seen: dict[int, Tensor] = {}
        hooks = [norm.register_forward_pre_hook(lambda m, args: seen.setdefault(id(m), args[0]))
                 for norm in _qk_norms(self.model)]
        try:
            module = self._attention_calls(ids, upto=layer)[layer].module
        finally:
            for hook in hooks:
                hook.remove()
        got = [seen.get(id(norm)) for norm in _qk_pair(module)]
        if len(got) != 2 or got[0] is None or got[1] is None:
            raise NotExposed("projections", f"layer {layer}'s attention ({type(module).__name__}) did not call a "
                                            "query and a key norm")
        return module, (got[0], got[1])

    def attention_values(self, layer: int, ids: Tensor) -> tuple[Tensor, Tensor]:
        """The values the layer handed its attention function and the function's output (each head's mix of values,
        before o_proj), via AttentionInterface; no later layer runs."""
        call = self._attention_calls(ids, upto=layer)[layer]
        return call.value, call.output.transpose(1, 2)  # [B, H_kv, T, d_head], [B, H, T, d_head]

    @torch.no_grad()
    def attention_weights(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        """Each layer's weights: as its attention function returned them, or computed from the query, key, scaling
        and mask it was handed (sdpa and flash return none); eager models outside AttentionInterface: HF's
        output_attentions."""
        if interface_ok(self.model) is None:
            return tuple(call.probabilities() for call in self._attention_calls(ids, attention_mask))
        out = self.model(**self._kwargs(ids, attention_mask), output_attentions=True)
        return tuple(out.attentions)

    def sublayers(self, layer: int) -> Sublayers:
        """The decoder layer's norms, attention, MLP and whole block, through module hooks (hf_glass.layout)."""
        where = layout(self.model)
        layers = decoder_layers(self.model)
        if isinstance(where, str) or layers is None:
            raise NotExposed("sublayers", str(where))
        return HookedSublayers(self.model, layers[layer], where)

    @torch.no_grad()
    def decode(self, ids: Tensor, prefill: int, attention_mask: Tensor | None = None) -> Tensor:
        self.check_length(ids.shape[-1])
        mask = torch.ones_like(ids) if attention_mask is None else attention_mask.long()
        kw = self._kwargs(ids[:, :prefill], mask[:, :prefill])
        out = self.model(**kw, use_cache=True)
        logits, past = [out.logits], getattr(out, self._cache_arg)
        for t in range(prefill, ids.shape[1]):
            step: dict[str, Any] = {"input_ids": ids[:, t:t + 1], "attention_mask": mask[:, :t + 1],
                                    self._cache_arg: past, "use_cache": True}
            if self._takes_positions:
                step["position_ids"] = (mask[:, :t + 1].cumsum(-1) - 1).clamp(min=0)[:, -1:]
            out = self.model(**step)
            logits.append(out.logits)
            past = getattr(out, self._cache_arg)
        return torch.cat(logits, dim=1)

    @torch.no_grad()
    def generate(self, ids: Tensor, max_new_tokens: int, attention_mask: Tensor | None = None) -> Tensor:
        self.check_length(ids.shape[-1] + max_new_tokens)
        mask = torch.ones_like(ids) if attention_mask is None else attention_mask.long()
        return self.model.generate(  # type: ignore[operator,no-any-return]
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                   min_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0,
                                   eos_token_id=None)

    # -- HF's sampling path: generate(do_sample=True) turns logits into a choice with its logits warpers
    def softmax(self, logits: Tensor, temperature: float = 1.0) -> Tensor:
        """TemperatureLogitsWarper then softmax, as generate samples; T = 0 is HF's greedy mode (one-hot argmax)."""
        return self.filtered_probabilities(logits, temperature)

    @torch.no_grad()
    def filtered_probabilities(self, logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                               top_p: float | None = None) -> Tensor:
        """HF's warpers in generate's order (temperature, top-k, top-p), then softmax, in the logits' dtype.

        HF samples only for T > 0 (its TemperatureLogitsWarper refuses 0); T = 0 is its greedy
        mode, do_sample=False, which takes the argmax of the raw logits and applies no warper.
        """
        if temperature == 0.0:
            return torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(logits.dtype)
        return torch.softmax(_warp(logits, temperature, top_k, top_p), dim=-1)

    @torch.no_grad()
    def sample(self, logits: Tensor, generator: torch.Generator, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None) -> Tensor:
        """generate's sampling step (warpers, softmax, torch.multinomial), [B, V] -> [B].

        The one change: HF's own step draws from the global RNG; here the claims' generator
        is passed to the same torch.multinomial call (DEC-5 therefore checks this plumbing,
        not HF). T = 0 is greedy mode: the argmax.
        """
        if temperature == 0.0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(_warp(logits, temperature, top_k, top_p), dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    def config(self) -> ModelConfig:
        """The converter's reading of the model's config; not exposed where the reference cannot express it (a
        scaled rotary embedding, say): the message names the field."""
        converter = self._converter()
        try:
            return converter.config(self.model.config)
        except ValueError as exc:  # reference.convert's UnsupportedConfig
            if type(exc).__name__ != "UnsupportedConfig":
                raise
            raise NotExposed("config", str(exc)) from exc

    def departures(self) -> Departures:
        """What the model's config declares against the documents' formulas (spec.target.Departures), read by
        transformers' own names:
        - ``attention_multiplier``, ``residual_multiplier``, ``logits_scaling`` (Granite);
        - ``query_pre_attn_scalar`` (scale = its -1/2 power), ``attn_logit_softcapping``, ``final_logit_softcapping``
          (Gemma 2 and 3); ``logit_scale`` (Cohere);
        - ``scale_attn_weights = False`` (GPT-2, GPT-BigCode: scale 1) and ``scale_attn_by_inverse_layer_idx``
          (GPT-2: the scale divided by layer + 1); where a converter exists, its attn_scale;
        - sinks where an attention module holds a ``sinks`` parameter (GPT-OSS), a norm of the heads' mix before W_O
          where one holds ``attn_sub_norm`` (BitNet), QK-norm where one holds a query and a key norm under the names
          of ``_QK_NORM_NAMES``."""
        text = _text_config(self.model)
        try:
            scale = self.config().attn_scale
        except NotExposed:
            scale = None
        if getattr(text, "scale_attn_weights", True) is False:  # GPT-2, GPT-BigCode: no 1/sqrt(d_head) at all
            scale = 1.0
        pre_attn = _number(text, "query_pre_attn_scalar")
        if pre_attn is not None:
            scale = pre_attn ** -0.5
        scale = _number(text, "attention_multiplier", scale)
        logit_scale = _number(text, "logit_scale", 1.0)
        granite = _number(text, "logits_scaling")
        if granite is not None:
            logit_scale = logit_scale / granite
        by_layer = getattr(text, "scale_attn_by_inverse_layer_idx", False) is True  # GPT-2's option
        return Departures(attn_scale=scale, attn_softcap=_number(text, "attn_logit_softcapping"),
                          attn_scale_by_layer=by_layer,
                          logit_scale=logit_scale, logit_softcap=_number(text, "final_logit_softcapping"),
                          residual_scale=_number(text, "residual_multiplier", 1.0),
                          qk_norm=bool(_qk_norms(self.model)),
                          attn_sinks=any(_sinks(m) is not None for m in self.model.modules()),
                          attn_sub_norm=any(isinstance(getattr(m, "attn_sub_norm", None), nn.Module)
                                            for m in self.model.modules()))

    def attention_sinks(self, layer: int) -> Tensor:
        """The ``sinks`` parameter (transformers' name: GPT-OSS) of the module that made the layer's attention call,
        [heads]; no later layer runs."""
        call = self._attention_calls(torch.zeros(1, 1, dtype=torch.long, device=self.device), upto=layer)[layer]
        sinks = _sinks(call.module)
        if sinks is None:
            raise NotExposed("attention_sinks", f"layer {layer}'s attention ({type(call.module).__name__}) has no "
                                                "sinks parameter")
        return sinks.detach()

    def tied_embeddings(self) -> bool:
        """The model's own declaration (``config.tie_word_embeddings``), with or without a converter (issue #12)."""
        hf = getattr(self.model, "config", None)
        text = hf.get_text_config() if hf is not None and hasattr(hf, "get_text_config") else hf
        tied = getattr(text, "tie_word_embeddings", None)
        if not isinstance(tied, bool):
            raise NotExposed("tied_embeddings", f"{type(self.model).__name__}'s config has no tie_word_embeddings")
        return tied

    # -- fresh models of this family: the model's own config class with drawn sizes (issue #12)
    def _hf_config_for(self, config: ModelConfig) -> Any:
        """A copy of this model's HF config with the drawn sizes, tying and context, no dropout and no padding row.

        Everything else (activation, norms, positions, biases) stays the family's: ``buildable`` reports the
        result through the converter, so a claim sees exactly what was built.
        """
        from spec.targets.hf_presets import FFN_FIELD, KV_FIELD

        hf = copy.deepcopy(self.model.config)
        kind = str(getattr(hf, "model_type", ""))
        sizes: dict[str, Any] = {"vocab_size": config.vocab_size, "hidden_size": config.d_model,
                                 "num_hidden_layers": config.n_layers, "num_attention_heads": config.n_heads,
                                 "max_position_embeddings": config.max_positions,
                                 "tie_word_embeddings": config.tied_embeddings}
        if kind in KV_FIELD:
            sizes[KV_FIELD[kind]] = config.kv_heads
        ffn = FFN_FIELD.get(kind, "intermediate_size")
        if ffn is not None and hasattr(hf, ffn):
            sizes[ffn] = config.d_mlp
        if getattr(hf, "head_dim", None) is not None:
            sizes["head_dim"] = config.head_dim
        for name, value in sizes.items():
            if hasattr(hf, name):
                with contextlib.suppress(AttributeError):  # derived by the family (Falcon: hidden_size / heads)
                    setattr(hf, name, value)
        for name in list(vars(hf)):
            if ("dropout" in name or "pdrop" in name) and isinstance(getattr(hf, name), float):
                setattr(hf, name, 0.0)  # train_step must be deterministic (EMB-6's fixed SGD run)
        for name in ("bos_token_id", "eos_token_id"):
            if isinstance(getattr(hf, name, None), int) and getattr(hf, name) >= config.vocab_size:
                setattr(hf, name, None)
        if hasattr(hf, "pad_token_id"):  # nn.Embedding(padding_idx) freezes that row: a fresh model trains every row
            hf.pad_token_id = None
        return hf

    def buildable(self, config: ModelConfig) -> ModelConfig:
        """The config ``build`` gives for a drawn one: the drawn sizes in this family's architecture (the drawn
        config itself when the family cannot take those sizes, so that build says why)."""
        try:
            return self._converter().config(self._hf_config_for(config))  # type: ignore[no-any-return]
        except (NotExposed, ValueError):
            return config

    def build(self, config: ModelConfig, seed: int = 0) -> Target:
        """A fresh model of this class from ``_hf_config_for(config)``, weights N(0, 0.2^2) from ``seed``; NotExposed
        unless it is exactly ``config`` (read back through the converter)."""
        from spec.targets.hf_presets import randomize_

        hf = self._hf_config_for(config)
        try:
            got = self._converter().config(hf)
        except ValueError as exc:
            raise NotExposed("build", f"{hf.model_type} cannot take these sizes: {exc}") from exc
        if got != config:
            differ = [f.name for f in dataclasses.fields(config) if getattr(got, f.name) != getattr(config, f.name)]
            raise NotExposed("build", f"{hf.model_type} cannot express {', '.join(differ)} as drawn")
        with torch.random.fork_rng(devices=[]):  # HF's own init draws from the global RNG: leave it untouched
            torch.manual_seed(seed)
            model: Any = type(self.model)(hf)
        randomize_(model, seed)
        model = model.to(device=self.device, dtype=self.dtype).eval()
        model.set_attn_implementation(getattr(self.model.config, "_attn_implementation", "eager"))
        return HFTarget(model, name=f"{self.name} built", version=self.version, tolerance=self.tolerance)

    def train_step(self, ids: Tensor, targets: Tensor, lr: float) -> None:
        sgd_step(self.model, lambda: self.model(input_ids=ids, use_cache=False).logits, targets, lr)

    def reference_model(self) -> Transformer:
        try:
            from reference.convert import from_hf
        except ImportError as exc:
            raise NotExposed("reference_model", "no converter for this target") from exc
        self._converter()
        return from_hf(self.model)

    def _converter(self) -> Any:
        try:
            from reference.convert import CONVERTERS
        except ImportError as exc:
            raise NotExposed("reference_model", "no converter for this target") from exc
        model_type = getattr(getattr(self.model, "config", None), "model_type", None)
        if model_type not in CONVERTERS:
            raise NotExposed("reference_model", f"no converter for model_type {model_type!r}")
        return CONVERTERS[model_type]

    @property
    def capabilities(self) -> frozenset[str]:
        """What this particular model offers: some HF models lack a converter (or have one that cannot express
        their config: a scaled rotary embedding), a final norm, a known layer layout, or attention through
        AttentionInterface (then weights only where eager)."""
        have = set(super().capabilities)
        try:
            self.config()  # a converter for the family that can express this model's config (no weights read)
        except NotExposed:
            have -= {"config", "reference_model", "build", "train_step"}
        if self._final_norm is None:
            have -= {"final_norm", "residual_states"}
        if interface_ok(self.model) is not None:
            have -= {"queries_keys", "attention_values"}
            if getattr(getattr(self.model, "config", None), "_attn_implementation", "eager") != "eager":
                have.discard("attention_weights")
        if not isinstance(layout(self.model), Layout):
            have.discard("sublayers")
        if not hasattr(self.model, "generate"):
            have.discard("generate")
        return frozenset(have)
