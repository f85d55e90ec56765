"""The stages of the computation, by name: one function (or class) per step the documents describe.

A model computes through a ``Stages`` bundle; the defaults below are the reference's own
functions, listed in the order the documents read them:

    ids -> embed (+ positions) -> per block: norm, project, rotate, cache, visibility, scale,
    weights (softmax of the scores), attend, merge heads, residual, norm, mlp (gate)
        -> final norm -> last position -> unembed -> softmax, temperature, top-k, top-p, filtered, greedy/draw

Replacing one field gives a model that differs from the reference in that stage alone:
``dataclasses.replace(REFERENCE, weights=my_softmax)``, set with ``Transformer.use_stages``
(the mutant zoo, spec.targets.mutants, builds each of its bugs that way). Nothing is patched
globally: the bundle lives in the model's instances.

Torch's fused attention kernel computes visibility, K/V grouping, weights and the weighted sum
in one call, so it skips those four stages: a bundle that replaces any of them is run on the
explicit path (``Stages.fusable``, consulted by ``Attention.forward``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from reference.attention import (
    attention_scale,
    explicit_attention,
    merge_heads,
    repeat_kv,
    scores_to_weights,
    visibility_mask,
)
from reference.cache import KVCache
from reference.config import ModelConfig
from reference.embedding import embed
from reference.mlp import MLP, gated, position_wise
from reference.norms import layer_norm, rms_norm
from reference.positions import apply_rotary, token_positions
from reference.sampling import (
    divide_by_temperature,
    draw,
    filtered_probabilities,
    greedy,
    sample,
    softmax,
    top_k_filter,
    top_p_filter,
)
from reference.unembedding import unembed


class Attend(Protocol):
    """(q, k, v, mask, scale, bias, weights stage) -> (output [B, heads, q, d_head], weights [B, heads, q, k])."""

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float,
                 bias: Tensor | None = None, weights: Callable[[Tensor, Tensor | None], Tensor] = ...,
                 ) -> tuple[Tensor, Tensor]: ...


class Filtered(Protocol):
    """(logits, temperature, top_k, top_p, stages=) -> the probabilities a draw is made from."""

    def __call__(self, logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, *, stages: Stages | None = None) -> Tensor: ...


class Sample(Protocol):
    """(logits, generator, temperature, top_k, top_p, stages=) -> one token per row."""

    def __call__(self, logits: Tensor, generator: torch.Generator | None, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, *, stages: Stages | None = None) -> Tensor: ...


def residual(h: Tensor, a: Tensor) -> Tensor:
    """The attention sublayer's output added to the residual stream (claim RES-1)."""
    return h + a


def apply_norm(norm: nn.Module, h: Tensor) -> Tensor:
    """The final norm applied to the last residual state, before the unembedding."""
    return norm(h)  # type: ignore[no-any-return]


def last_position(h: Tensor, real: Tensor) -> Tensor:
    """The position whose output chooses the next token: the last column, [batch, seq, d] -> [batch, d] (OUT-7)."""
    return h[:, -1]


@dataclass(frozen=True)
class Stages:
    """The functions a model and its sampler call for each stage; the defaults are the reference's own."""

    # -- the forward pass ---------------------------------------------------------------------------------
    embed: Callable[[Tensor, Tensor, float], Tensor] = embed  # (ids, E, scale) -> token rows
    positions: Callable[[Tensor, Tensor, int], Tensor] = token_positions  # (real mask, cache offset, past) -> [B, T]
    visibility: Callable[[Tensor, int, int], Tensor] = visibility_mask  # (key mask, q_len, past) -> [B, 1, q, k]
    rotate: Callable[[Tensor, Tensor, Tensor, bool], Tensor] = apply_rotary  # (x, cos, sin, interleaved)
    cache: type[KVCache] = KVCache  # where keys and values are stored and positions move on
    repeat_kv: Callable[[Tensor, int], Tensor] = repeat_kv  # (k or v, n_rep) -> one K/V head per query head
    scale: Callable[[ModelConfig], float] = attention_scale  # the factor on q . k
    weights: Callable[[Tensor, Tensor | None], Tensor] = scores_to_weights  # (scores, mask) -> softmax over keys
    attend: Attend = explicit_attention  # weighted sum of the values, on the explicit path
    merge_heads: Callable[[Tensor], Tensor] = merge_heads  # [B, heads, q, d_head] -> [B, q, heads * d_head]
    residual: Callable[[Tensor, Tensor], Tensor] = residual  # (stream, attention output) -> new stream
    layer_norm: Callable[[Tensor, Tensor, Tensor | None, float], Tensor] = layer_norm  # (x, gain, bias, eps)
    rms_norm: Callable[[Tensor, Tensor, float], Tensor] = rms_norm  # (x, gain, eps)
    mlp: Callable[[MLP, Tensor], Tensor] = position_wise  # (the MLP's weights, x) -> [B, T, d_model]
    gate: Callable[[Callable[[Tensor], Tensor], Tensor, Tensor], Tensor] = gated  # (act, gate, up) -> inner
    final_norm: Callable[[nn.Module, Tensor], Tensor] = apply_norm  # (the model's final norm, h)
    last_position: Callable[[Tensor, Tensor], Tensor] = last_position  # (h, real mask) -> [B, d_model]
    unembed: Callable[[Tensor, Tensor, Tensor | None], Tensor] = unembed  # (h, U, b) -> logits
    # -- choosing the next token ------------------------------------------------------------------------
    softmax: Callable[[Tensor, float], Tensor] = softmax  # (logits, temperature) -> probabilities
    temperature: Callable[[Tensor, float], Tensor] = divide_by_temperature  # (logits, T) -> z / T, max 0
    top_k: Callable[[Tensor, int], Tensor] = top_k_filter
    top_p: Callable[[Tensor, float], Tensor] = top_p_filter
    filtered: Filtered = filtered_probabilities  # temperature, top-k, top-p, renormalise (the stages above)
    greedy: Callable[[Tensor], Tensor] = greedy
    draw: Callable[[Tensor, torch.Generator | None], Tensor] = draw  # (probs, generator) -> one draw per row
    sample: Sample = sample  # greedy at T = 0, else a draw from ``filtered``

    @property
    def fusable(self) -> bool:
        """Whether torch's fused attention computes these stages (it does visibility, K/V grouping,
        weights and the weighted sum itself): True unless one of those four was replaced."""
        return (self.visibility is visibility_mask and self.repeat_kv is repeat_kv
                and self.weights is scores_to_weights and self.attend is explicit_attention)


REFERENCE = Stages()
