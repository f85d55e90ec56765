"""The reference implementation as a spec target: it exposes every capability."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import reference
from reference.block import Block
from reference.config import ModelConfig
from reference.model import Transformer
from reference.presets import preset
from spec.target import Sublayers, Target, Tokenizer, sgd_step


@dataclass
class ReferenceSublayers:
    """Block ``layer`` of a reference model, part by part, at positions 0..T-1 (causal, no padding)."""

    blk: Block
    cfg: ModelConfig

    @property
    def parallel(self) -> bool:
        return self.blk.parallel

    def _positions(self, x: Tensor) -> dict[str, Any]:
        """The rotary angles or ALiBi bias the model's own forward would pass this block."""
        cfg, b, t = self.cfg, x.shape[0], x.shape[1]
        pos = torch.arange(t, device=x.device).expand(b, t)
        # A branch, not "causal": t > 1: under torch.compile with dynamic shapes that is a SymBool (bool() keeps it
        # one), which scaled_dot_product_attention's is_causal refuses: compiled:<target> could not compile
        # attention and block as one graph
        kw: dict[str, Any] = {"causal": False, "mask": None}
        if t > 1:
            kw["causal"] = True
        kw["rotary"] = cfg.scheme.angles(pos, cfg, x.dtype)
        if cfg.scheme.biases_scores:
            work = torch.float64 if x.dtype == torch.float64 else torch.float32
            kw["bias"] = cfg.scheme.bias(pos, pos, cfg, work)
            kw["mask"] = self.blk.stages.visibility(torch.ones(b, t, dtype=torch.bool, device=x.device), t, 0)
            kw["causal"] = False
        return kw

    @torch.no_grad()
    def norm1(self, x: Tensor) -> Tensor:
        return self.blk.N1(x)

    @torch.no_grad()
    def norm2(self, x: Tensor) -> Tensor:
        return self.blk.N2(x)

    @torch.no_grad()
    def attention(self, x: Tensor) -> Tensor:
        kw = self._positions(x)
        return self.blk.attn(x, kw.pop("mask"), **kw)[0]

    @torch.no_grad()
    def mlp(self, x: Tensor) -> Tensor:
        return self.blk.mlp(x)

    @torch.no_grad()
    def block(self, x: Tensor) -> Tensor:
        kw = self._positions(x)
        return self.blk(x, kw.pop("mask"), **kw)[0]


class ReferenceTarget(Target):
    """reference.Transformer with all its stages exposed."""

    version = reference.__version__

    def __init__(self, model: Transformer, name: str = "reference", tokenizer: Tokenizer | None = None,
                 trained: bool = False) -> None:
        self.model = model.eval()
        self.name = name
        self._tokenizer = tokenizer
        self.vocab_size = model.cfg.vocab_size
        self.max_positions = model.cfg.max_positions
        self.device = model.device
        self.dtype = model.dtype
        self.tolerance = _tolerance_name(model.dtype)
        self.trained = trained  # type: ignore[misc]

    @classmethod
    def from_preset(cls, name: str, *, seed: int = 0, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> ReferenceTarget:
        model = reference.build(preset(name), seed=seed, device=device, dtype=dtype)
        return cls(model, name=f"reference:{name}")

    @torch.no_grad()
    def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.model(ids, attention_mask).logits

    def embedding_matrix(self) -> Tensor:
        return self.model.E.detach()

    @torch.no_grad()
    def embed(self, ids: Tensor) -> Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        return self.model._embed(ids, pos)

    def unembedding(self) -> tuple[Tensor, Tensor | None]:
        b = self.model.b_U
        return self.model.W_U.detach(), None if b is None else b.detach()

    @torch.no_grad()
    def final_norm(self, h: Tensor) -> Tensor:
        return self.model.final_norm(h)

    @torch.no_grad()
    def residual_states(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        return self.model.residual_stream(ids, attention_mask)[0]  # no position unembedded

    @torch.no_grad()
    def attention_weights(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        return self.model.residual_stream(ids, attention_mask, return_attentions=True)[1]

    @torch.no_grad()
    def queries_keys(self, layer: int, ids: Tensor) -> tuple[Tensor, Tensor]:
        """The layer's queries and keys after positions, from its input state: blocks after it do not run."""
        n = self.model.cfg.n_layers
        if not -n <= layer < n:  # as a list's index; plain comparisons, which Dynamo traces (range()[i] it cannot)
            raise IndexError(f"layer {layer}: out of range for {n} layers")
        layer = layer + n if layer < 0 else layer  # a negative index counts from the end
        blk = self._block(layer)
        h = self.model.residual_stream(ids, stop_at_layer=layer)[0][layer]  # [batch, seq, d_model]
        q, k, _ = blk.attn.project(blk.N1(h))
        cfg, s = self.model.cfg, self.model.stages
        pos = s.positions(torch.ones_like(ids, dtype=torch.bool),
                          torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device), 0)
        angles = cfg.scheme.angles(pos, cfg, q.dtype)
        if angles is not None:
            cos, sin = angles
            q, k = s.rotate(q, cos, sin, cfg.rotary_interleaved), s.rotate(k, cos, sin, cfg.rotary_interleaved)
        return q, k

    @torch.no_grad()
    def attention_values(self, layer: int, ids: Tensor) -> tuple[Tensor, Tensor]:
        """What the layer's attention computed in one forward pass, read at its named seams (hook_v, hook_mix)."""
        attn = self._block(layer).attn
        seen: dict[str, Tensor] = {}
        hooks = [getattr(attn, name).register_forward_hook(
                     lambda _m, _a, out, name=name: seen.__setitem__(name, out.detach()))
                 for name in ("hook_v", "hook_mix")]
        try:
            self.model(ids)
        finally:
            for h in hooks:
                h.remove()
        return seen["hook_v"], seen["hook_mix"]

    def sublayers(self, layer: int) -> Sublayers:
        return ReferenceSublayers(self._block(layer), self.model.cfg)

    def _block(self, layer: int) -> Block:
        blk = self.model.blocks[layer]
        assert isinstance(blk, Block)
        return blk

    @torch.no_grad()
    def decode(self, ids: Tensor, prefill: int, attention_mask: Tensor | None = None) -> Tensor:
        cache = self.model.new_cache(ids.shape[0], ids.shape[1])
        mask = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        out = [self.model(ids[:, :prefill], mask[:, :prefill], cache).logits]
        for t in range(prefill, ids.shape[1]):
            out.append(self.model(ids[:, t:t + 1], mask[:, t:t + 1], cache).logits)
        return torch.cat(out, dim=1)

    # the sampler: the model's own stages (the reference's, unless a mutant replaced one)
    def softmax(self, logits: Tensor, temperature: float = 1.0) -> Tensor:
        return self.model.stages.softmax(logits, temperature)

    def filtered_probabilities(self, logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                               top_p: float | None = None) -> Tensor:
        s = self.model.stages
        return s.filtered(logits, temperature, top_k, top_p, stages=s)

    def sample(self, logits: Tensor, generator: torch.Generator, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None) -> Tensor:
        s = self.model.stages
        return s.sample(logits, generator, temperature, top_k, top_p, stages=s)

    def generate(self, ids: Tensor, max_new_tokens: int, attention_mask: Tensor | None = None) -> Tensor:
        return reference.generate(self.model, ids, max_new_tokens, attention_mask=attention_mask)

    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            from spec.targets.tokenizers import builtin_tokenizer

            self._tokenizer = builtin_tokenizer(self.vocab_size)
        return self._tokenizer

    def config(self) -> ModelConfig:
        return self.model.cfg

    def tied_embeddings(self) -> bool:
        return self.model.cfg.tied_embeddings

    def build(self, config: ModelConfig, seed: int = 0) -> ReferenceTarget:
        model = reference.build(config, seed=seed, device=self.device, dtype=self.dtype)
        model.use_stages(self.model.stages)  # a model built by this target computes through the same stages
        return ReferenceTarget(model, name=f"{self.name}[built]")

    def train_step(self, ids: Tensor, targets: Tensor, lr: float) -> None:
        sgd_step(self.model, lambda: self.model(ids).logits, targets, lr)

    def reference_model(self) -> Transformer:
        return self.model


def _tolerance_name(dtype: torch.dtype) -> str:
    from spec.tolerance import for_dtype

    return for_dtype(dtype).name


DEFAULT_PRESET = "llama-tiny"  # plain ``reference``


def from_spec(rest: str, device: str, dtype: torch.dtype) -> Target:
    """The registry's ``reference`` kind: ``reference[:preset]`` (default DEFAULT_PRESET)."""
    return ReferenceTarget.from_preset(rest or DEFAULT_PRESET, device=device, dtype=dtype)
