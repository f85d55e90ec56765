"""The whole forward pass: token IDs in, next-token logits for every position out.

    ids -> E[ids] (+ P[pos]) -> blocks (pre-norm attention and MLP with residuals)
        -> final norm -> h @ U (+ b) -> logits

One pass over n tokens gives n next-token distributions: position i's predicts
token i + 1, and only the last one chooses what comes next (claim OUT-7).

Each step is a named stage of ``self.stages`` (reference.stages), shared by every module of
the model; the position scheme (reference.positions) says what positions add, turn or bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from reference.attention import Attention
from reference.block import Block
from reference.cache import KVCache
from reference.config import ModelConfig
from reference.embedding import Embedding
from reference.mlp import MLP
from reference.norms import Norm
from reference.positions import LearnedPositions, positions_from_mask
from reference.stages import REFERENCE, Stages
from reference.validation import check_device, check_ids, check_mask


@dataclass(frozen=True)
class ForwardOutput:
    """What one forward pass returns.

    logits: [batch, seq, vocab] for every position, or [batch, 1, vocab] for the last
      one when the forward pass was asked for ``last_logits_only`` (all a generation step uses).
    states: on request, the residual stream before each block and after the last
      one (n_layers + 1 tensors of [batch, seq, d_model], all before the final norm).
    attentions: on request, each layer's weights [batch, n_heads, seq, cache_len + seq].
    """

    logits: Tensor
    states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


class Transformer(nn.Module):
    """A decoder-only transformer built from a ModelConfig, on the device and dtype given."""

    def __init__(self, cfg: ModelConfig, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, stages: Stages = REFERENCE) -> None:
        super().__init__()
        self.cfg = cfg
        self.attention_impl = "fast"  # or "explicit"; both compute the same thing
        kw = {"device": device, "dtype": dtype}
        self.embed = Embedding(cfg.vocab_size, cfg.d_model, cfg.embedding_scale, **kw)  # type: ignore[arg-type]
        self.pos = LearnedPositions(cfg.max_positions, cfg.d_model, **kw) if cfg.scheme.learned else None  # type: ignore[arg-type]
        self.embed_norm = Norm(cfg.d_model, cfg.norm, cfg.norm_eps, cfg.norm_bias, **kw) if cfg.embedding_norm else None  # type: ignore[arg-type]
        self.blocks = nn.ModuleList(Block(cfg, **kw) for _ in range(cfg.n_layers))  # type: ignore[arg-type]
        self.final_norm = Norm(cfg.d_model, cfg.norm, cfg.norm_eps, cfg.norm_bias, **kw)  # type: ignore[arg-type]
        self.U = None if cfg.tied_embeddings else nn.Parameter(torch.empty(cfg.d_model, cfg.vocab_size, **kw))  # type: ignore[arg-type]
        self.b_U = nn.Parameter(torch.zeros(cfg.vocab_size, **kw)) if cfg.unembed_bias else None  # type: ignore[arg-type]
        self.use_stages(stages)

    def use_stages(self, stages: Stages) -> None:
        """Compute through ``stages`` from now on: this model and every module in it that has stages."""
        for module in self.modules():
            if isinstance(module, (Embedding, Norm, Attention, MLP, Block)):
                module.stages = stages
        self.stages = stages

    # -- the matrices the documents talk about --------------------------------------
    @property
    def E(self) -> Tensor:
        """The embedding table [vocab, d_model]."""
        return self.embed.E

    @property
    def W_U(self) -> Tensor:
        """The unembedding [d_model, vocab]: E^T when tied (claim OUT-3)."""
        return self.embed.E.T if self.U is None else self.U

    @property
    def device(self) -> torch.device:
        return self.embed.E.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.E.dtype

    def new_cache(self, batch: int, capacity: int | None = None) -> KVCache:
        """An empty KV cache on this model's device and dtype (capacity defaults to max_positions)."""
        cap = self.cfg.max_positions if capacity is None else capacity
        return self.stages.cache.empty(self.cfg, batch, cap, device=self.device, dtype=self.dtype)

    # -- the forward pass -------------------------------------------------------------
    def forward(self, ids: Tensor, attention_mask: Tensor | None = None, cache: KVCache | None = None, *,
                return_states: bool = False, return_attentions: bool = False,
                last_logits_only: bool = False, unembed: bool = True,
                stop_at_layer: int | None = None) -> ForwardOutput:
        """ids [batch, seq] (left-padded where ``attention_mask`` is 0) -> ForwardOutput.

        With a cache, ``ids`` are the tokens after those already cached; the cache is
        advanced in place. ``last_logits_only`` unembeds the last position alone: only it
        chooses the next token (claim OUT-7), and the [seq, vocab] product is the largest
        one in a prompt's pass. ``unembed=False`` unembeds no position (logits [batch, 0,
        vocab]): a probe of the residual stream needs only the blocks. A NaN or inf weight
        gives non-finite logits on both attention paths, never finite ones
        (``attention.keep_non_finite``); ``generate`` refuses them. ``stop_at_layer=L`` runs
        blocks 0..L-1 only and unembeds nothing, as TransformerLens's argument of that name:
        a probe of layer L's input needs no later block (states: L + 1 entries).
        """
        cfg, s, scheme = self.cfg, self.stages, self.cfg.scheme
        check_ids(ids, cfg.vocab_size, self.device)
        mask = None if attention_mask is None else check_mask(attention_mask, ids, self.device)
        past = self._check_cache(cache, ids)
        if stop_at_layer is not None and cache is not None:
            raise ValueError("stop_at_layer: not allowed with a cache (the cache would hold some layers only)")
        if stop_at_layer is not None and not 0 <= stop_at_layer <= cfg.n_layers:
            raise ValueError(f"stop_at_layer: {stop_at_layer}; allowed: 0..{cfg.n_layers} (n_layers)")
        b, t = ids.shape
        if past + t > cfg.max_positions:
            raise ValueError(f"ids: {past} cached + {t} new tokens exceed max_positions={cfg.max_positions}")
        padded = mask is not None and not bool(mask.all())
        real = mask if mask is not None else torch.ones_like(ids, dtype=torch.bool)
        offset = cache.next_position if cache is not None else torch.zeros(b, dtype=torch.long, device=ids.device)
        pos = s.positions(real, offset, past)  # [batch, seq]

        h = self._embed(ids, pos)  # [batch, seq, d_model]
        explicit = return_attentions or self.attention_impl == "explicit"
        cache_padded = cache is not None and past > 0 and not bool(cache.key_mask[:, :past].all())
        needs_mask = padded or cache_padded or scheme.biases_scores or (past > 0 and t > 1)
        full_mask = bias = None
        if needs_mask:  # an unpadded step needs no mask: the causal flag, or one query seeing every key
            key_mask = real if cache is None else torch.cat([cache.key_mask[:, :past], real], dim=1)
            full_mask = s.visibility(key_mask, t, past)
            if scheme.biases_scores:
                bias = self._score_bias(pos, key_mask, cache, past, h.dtype)
        causal = full_mask is None and past == 0 and t > 1
        rotary = scheme.angles(pos, cfg, h.dtype)  # cos, sin for rotary positions, else None

        states, attentions = [h], []
        for i, block in enumerate(self.blocks):
            if i == stop_at_layer:
                break
            h, weights = block(h, full_mask, rotary=rotary, bias=bias, cache=cache, layer=i,
                               explicit=explicit, causal=causal)
            states.append(h)
            if weights is not None:
                attentions.append(weights)
        if cache is not None:
            cache.advance(real)
        if last_logits_only:
            h = s.last_position(h, real)[:, None]  # [batch, 1, d_model]
        if not unembed or stop_at_layer is not None:
            h = h[:, :0]  # [batch, 0, d_model]
        logits = s.unembed(s.final_norm(self.final_norm, h), self.W_U, self.b_U)  # [batch, seq or 1, vocab]
        return ForwardOutput(
            logits=logits,
            states=tuple(states) if return_states else None,
            attentions=tuple(attentions) if return_attentions else None,
        )

    @torch.no_grad()
    def residual_stream(self, ids: Tensor, attention_mask: Tensor | None = None, *,
                        return_attentions: bool = False,
                        stop_at_layer: int | None = None) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """The residual states (n_layers + 1) and, on request, each layer's attention weights, from a forward pass
        that unembeds no position: a probe of the stream needs nothing after the last block, and the [batch, seq,
        vocab] product is the largest of a pass (ATT-1's 641 four-token rows on SmolLM2: 504 MB of logits nobody
        reads). It is a call of the module, so hooks and a compiled forward apply as to any other pass.
        ``stop_at_layer=L``: blocks 0..L-1 only (states up to layer L's input)."""
        out = self(ids, attention_mask, return_states=True, return_attentions=return_attentions, unembed=False,
                   stop_at_layer=stop_at_layer)
        assert out.states is not None
        return out.states, out.attentions or ()

    def _embed(self, ids: Tensor, pos: Tensor) -> Tensor:
        """Token rows plus what the position scheme adds (claims EMB-1, POS-2)."""
        h = self.embed(ids)
        added = self.cfg.scheme.added(pos, self.cfg, self.pos, h.dtype)
        if added is not None:
            h = h + added
        if self.embed_norm is not None:
            h = self.embed_norm(h)
        return h

    def _score_bias(self, pos: Tensor, key_mask: Tensor, cache: KVCache | None, past: int,
                    dtype: torch.dtype) -> Tensor | None:
        """The scheme's bias on the scores of the new queries against every key, cached ones included."""
        k_pos = pos if cache is None else torch.cat(
            [positions_from_mask(key_mask[:, :past], torch.zeros_like(pos[:, 0])), pos], dim=1)
        return self.cfg.scheme.bias(pos, k_pos, self.cfg, torch.float32 if dtype != torch.float64 else dtype)

    def _check_cache(self, cache: KVCache | None, ids: Tensor) -> int:
        if cache is None:
            return 0
        if cache.batch != ids.shape[0]:
            raise ValueError(f"cache holds batch {cache.batch} but ids has batch {ids.shape[0]}")
        check_device(cache.key_mask, self.device, "cache")
        cache.check_fits(self.cfg, self.device, self.dtype)
        if cache.length + ids.shape[1] > cache.capacity:
            raise ValueError(f"ids: {cache.length} cached + {ids.shape[1]} new tokens exceed the cache "
                             f"capacity {cache.capacity}")
        return cache.length


@torch.no_grad()
def init_random(model: Transformer, seed: int = 0, std: float = 0.02) -> Transformer:
    """Fill every weight from N(0, std^2) (norm gains 1, biases small), from a CPU generator.

    The draws are made on the CPU in float64 and copied, so the same seed gives the
    same weights on every device and dtype.
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "weight":  # norm gains
            value = 1.0 + 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64)
        elif leaf.startswith("b") or leaf == "bias":
            value = 0.1 * std * torch.randn(p.shape, generator=g, dtype=torch.float64)
        else:
            value = std * torch.randn(p.shape, generator=g, dtype=torch.float64)
        p.copy_(value.to(p.dtype))
    return model


def build(cfg: ModelConfig, *, seed: int = 0, std: float | None = None, device: torch.device | str | None = None,
          dtype: torch.dtype = torch.float32) -> Transformer:
    """A model with random weights (seeded): the spec's default subject when no checkpoint is given.

    ``std`` defaults to 1/sqrt(d_model) so logits have spread at any width.
    """
    model = Transformer(cfg, device=device, dtype=dtype)
    init_random(model, seed, 1.0 / math.sqrt(cfg.d_model) if std is None else std)
    return model.eval()
