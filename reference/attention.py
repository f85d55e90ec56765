"""Causal self-attention: how a position gathers information from earlier ones.

Each position's hidden state is projected to a query, a key and a value (claim
ATT-1). A query's score against each visible key is q . k scaled by 1/sqrt(d_head)
(ATT-2); a softmax over the visible keys turns scores into weights that are
non-negative and sum to one (ATT-3); the head's output is the weighted sum of the
values (ATT-5). Keys after the query are never visible (ATT-4). Heads are
concatenated and projected by W_O, which is the same as adding each head's output
through its own slice of W_O (ATT-6). With grouped-query attention several query
heads share one key/value head.

Two paths compute the same thing: ``explicit_attention`` spells the math out and can
return the weights (GQA by copying each key/value head to its query heads, ``repeat_kv``);
``fast_attention`` calls torch's fused scaled_dot_product_attention, which shares the
key/value heads without copying them. Each step is a stage of the module's ``stages``
(reference.stages); the fused path is taken only while the stages it skips are the reference's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reference.cache import KVCache
from reference.config import ModelConfig
from reference.linear import linear

if TYPE_CHECKING:
    from reference.stages import Stages


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """[batch, seq, n_heads * d_head] -> [batch, n_heads, seq, d_head]."""
    b, t, _ = x.shape
    return x.view(b, t, n_heads, -1).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """[batch, n_heads, seq, d_head] -> [batch, seq, n_heads * d_head]."""
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """Give each query head its key/value head: KV head j serves query heads j*n_rep … (j+1)*n_rep - 1."""
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


def visibility_mask(key_mask: Tensor, q_len: int, past: int) -> Tensor:
    """Which keys each query may see: [batch, 1, q_len, past + q_len] bool.

    Query t sits at slot past + t: it sees real keys at slots <= its own. A padding
    query sees only itself, so no row is empty and no NaN can arise.
    """
    k_len = key_mask.shape[1]
    q_slot = torch.arange(past, past + q_len, device=key_mask.device)[:, None]
    k_slot = torch.arange(k_len, device=key_mask.device)[None, :]
    causal = k_slot <= q_slot  # [q, k]
    return ((causal[None] & key_mask[:, None, :]) | (k_slot == q_slot)[None])[:, None]


def attention_scale(cfg: ModelConfig) -> float:
    """The factor on q . k: 1 / sqrt(d_head) unless the config sets another (claim ATT-2)."""
    return cfg.scale


def scores_to_weights(scores: Tensor, mask: Tensor | None) -> Tensor:
    """Softmax over the visible keys, in float32 at least (claims ATT-3, SOFT-7): [batch, heads, q, k]."""
    if scores.dtype != torch.float64:
        scores = scores.float()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)


def explicit_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float,
                       bias: Tensor | None = None,
                       weights: Callable[[Tensor, Tensor | None], Tensor] = scores_to_weights,
                       ) -> tuple[Tensor, Tensor]:
    """softmax(q k^T * scale + bias) v, spelled out; returns (output, weights).

    q [batch, heads, q, d_head]; k, v [batch, heads, k, d_head] (already repeated for GQA).
    ``weights`` turns scores into weights (the stage of that name).
    """
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    scores = (q.to(work) @ k.to(work).transpose(-2, -1)) * scale  # [batch, heads, q, k]
    if bias is not None:
        scores = scores + bias.to(work)
    w = weights(scores, mask)
    return (w.to(v.dtype) @ v), w


def fast_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float,
                   bias: Tensor | None = None, causal: bool = False) -> Tensor:
    """The same computation through torch.nn.functional.scaled_dot_product_attention.

    k, v may hold fewer heads than q (GQA/MQA): with ``enable_gqa`` the kernel lets query
    head i read key/value head i // n_rep, the grouping of ``repeat_kv``, without copying
    the keys and values n_rep times (that copy cost more than the attention itself in decoding).
    """
    attn_mask: Tensor | None = mask
    if bias is not None:
        bias = bias.to(q.dtype)  # fused kernels want the additive mask in the queries' dtype
        attn_mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal, scale=scale,
                                         enable_gqa=k.shape[1] != q.shape[1])
    return keep_non_finite(out, q, k)


def keep_non_finite(out: Tensor, q: Tensor, k: Tensor) -> Tensor:
    """``out`` + 0 * q * (each query's own key): NaN where either is NaN or inf, ``out`` unchanged elsewhere.

    Why: torch's fused attention treats a row whose scores are all NaN as a fully masked
    row and returns zeros for it. (Its CPU flash kernel keeps a running maximum that starts
    at -inf; every comparison with NaN is false, so the maximum stays -inf and the row is
    zero-filled, the rule for rows that see no key.) A NaN or inf in a query, or in every
    key a row sees (one NaN in W_K does that), makes all of the row's scores NaN, so a NaN
    weight came out as finite logits. Such a row always has a non-finite query or own key
    (each query sees its own key, one of the last ``q`` keys): this puts a NaN back into it,
    as ``explicit_attention`` has, and W_O spreads it over the row. One fused kernel; the
    product is formed as (0 * q) * key, so finite values never overflow into a false NaN.
    """
    b, h, t, d = out.shape
    hkv = k.shape[1]
    own = k[:, :, k.shape[2] - t:]  # [batch, kv_heads, q, d_head]
    if hkv == h:
        return torch.addcmul(out, q, own, value=0.0)
    grouped = (b, hkv, h // hkv, t, d)  # query head i reads key head i // n_rep, as in repeat_kv
    return torch.addcmul(out.view(grouped), q.view(grouped), own[:, :, None], value=0.0).view(b, h, t, d)


class Attention(nn.Module):
    """Multi-head (MHA), grouped-query (GQA) or multi-query (MQA) causal self-attention.

    Weights act on the right, q = h @ W_Q + b_Q, as the documents write them.
    """

    def __init__(self, cfg: ModelConfig, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        d, h, hkv, dh = cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.cfg = cfg
        self.W_Q = nn.Parameter(torch.empty(d, h * dh, **kw))  # type: ignore[arg-type]
        self.W_K = nn.Parameter(torch.empty(d, hkv * dh, **kw))  # type: ignore[arg-type]
        self.W_V = nn.Parameter(torch.empty(d, hkv * dh, **kw))  # type: ignore[arg-type]
        self.W_O = nn.Parameter(torch.empty(h * dh, d, **kw))  # type: ignore[arg-type]
        qkv_bias = cfg.attn_qkv_bias
        self.b_Q = nn.Parameter(torch.zeros(h * dh, **kw)) if qkv_bias else None  # type: ignore[arg-type]
        self.b_K = nn.Parameter(torch.zeros(hkv * dh, **kw)) if qkv_bias else None  # type: ignore[arg-type]
        self.b_V = nn.Parameter(torch.zeros(hkv * dh, **kw)) if qkv_bias else None  # type: ignore[arg-type]
        self.b_O = nn.Parameter(torch.zeros(d, **kw)) if cfg.attn_out_bias else None  # type: ignore[arg-type]
        # Named seams (identities): forward hooks on them see the values of the new tokens [batch, kv_heads, seq,
        # d_head] and each head's mix of values before W_O [batch, n_heads, seq, d_head] (claim ATT-5)
        self.hook_v = nn.Identity()
        self.hook_mix = nn.Identity()
        from reference.stages import REFERENCE  # (reference.stages imports this module)

        self.stages: Stages = REFERENCE

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values of x [batch, seq, d_model], split into heads (claim ATT-1)."""
        cfg = self.cfg
        q = linear(x, self.W_Q, self.b_Q)
        k = linear(x, self.W_K, self.b_K)
        v = linear(x, self.W_V, self.b_V)
        return split_heads(q, cfg.n_heads), split_heads(k, cfg.kv_heads), split_heads(v, cfg.kv_heads)

    def forward(self, x: Tensor, mask: Tensor | None, *, rotary: tuple[Tensor, Tensor] | None = None,
                bias: Tensor | None = None, cache: KVCache | None = None, layer: int = 0,
                explicit: bool = False, causal: bool = False) -> tuple[Tensor, Tensor | None]:
        """x [batch, seq, d_model] -> (output [batch, seq, d_model], weights or None).

        ``mask`` [batch, 1, q, k] bool, or None with ``causal=True`` for an unpadded
        prefill. Weights [batch, n_heads, q, k] are returned on the explicit path only.
        """
        cfg, s = self.cfg, self.stages
        q, k, v = self.project(x)  # [batch, heads, seq, d_head]
        v = self.hook_v(v)
        if rotary is not None:  # queries and keys turned together: one rotation's worth of ops per layer
            cos, sin = rotary
            qk = s.rotate(torch.cat((q, k), dim=1), cos, sin, cfg.rotary_interleaved)
            q, k = qk.split((cfg.n_heads, cfg.kv_heads), dim=1)
        if cache is not None:
            k, v = cache.store(layer, k, v)
        weights: Tensor | None = None
        if explicit or not s.fusable:
            if mask is None:  # the causal mask the fused kernel would apply (a single query sees every key)
                mask = s.visibility(torch.ones(x.shape[0], k.shape[2], dtype=torch.bool, device=x.device),
                                    q.shape[2], k.shape[2] - q.shape[2])
            n_rep = cfg.n_heads // cfg.kv_heads
            out, weights = s.attend(q, s.repeat_kv(k, n_rep), s.repeat_kv(v, n_rep), mask, s.scale(cfg), bias,
                                    s.weights)
        else:
            out = fast_attention(q, k, v, mask, s.scale(cfg), bias, causal)  # shares KV heads without copies
        out = self.hook_mix(out)  # [batch, n_heads, q, d_head]
        return linear(s.merge_heads(out), self.W_O, self.b_O), weights
