"""A small GPT in plain torch, nanoGPT-style: the model that docs/adapters.md checks through its own adapter.

Its own modules and weight layout (fused q/k/v in ``c_attn``, nn.Linear weights [out, in]), learned absolute
positions, LayerNorm, a GELU MLP, causal self-attention with a KV cache, a byte tokenizer and a sampler. A few
GPT-family options (no positions, another activation, GPT-J's parallel block, grouped-query attention, biases and
tying on or off) let its adapter's ``build`` express a tenth of the configurations the catalog draws, not 1%.
It knows nothing of the spec: examples/tiny_gpt_adapter.py is all the glue.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 256  # one token per byte (ByteTokenizer)
    block_size: int = 64  # context length: the rows of the learned position table
    n_layer: int = 2
    n_head: int = 4
    n_kv_head: int | None = None  # key/value heads, each shared by n_head // n_kv_head query heads; None: n_head
    n_embd: int = 32
    head_size: int | None = None  # None: n_embd // n_head
    mlp_size: int | None = None  # None: 4 * n_embd
    positions: bool = True  # learned absolute positions; False: no positional information at all
    activation: str = "gelu"  # the MLP's nonlinearity, a key of ACTIVATIONS
    parallel: bool = False  # GPT-J's block: x + attn(ln_1 x) + mlp(ln_2 x)
    qkv_bias: bool = True
    proj_bias: bool = True
    mlp_bias: bool = True
    ln_bias: bool = True
    tied: bool = True  # lm_head.weight is wte.weight
    head_bias: bool = False


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"), "silu": nn.SiLU, "relu": nn.ReLU}


class Cache:
    """Keys and values of every layer [B, H, S, hs], and which of the S cached slots hold real tokens [B, S]."""

    def __init__(self, n_layer: int) -> None:
        self.kv: list[tuple[Tensor, Tensor] | None] = [None] * n_layer
        self.real: Tensor | None = None


class SelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv = cfg.n_head, cfg.n_kv_head or cfg.n_head
        self.hs = cfg.head_size or cfg.n_embd // cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, (self.n_head + 2 * self.n_kv) * self.hs, bias=cfg.qkv_bias)
        self.c_proj = nn.Linear(self.n_head * self.hs, cfg.n_embd, bias=cfg.proj_bias)
        self.attn_dropout = nn.Dropout(0.0)  # as nanoGPT's: applied to the attention pattern

    def forward(self, x: Tensor, visible: Tensor, cache: Cache | None = None, layer: int = 0) -> Tensor:
        B, T, _ = x.shape  # visible [B, T, S]: which of the S keys each of the T queries may read
        widths = [self.n_head * self.hs, self.n_kv * self.hs, self.n_kv * self.hs]
        q, k, v = (t.view(B, T, -1, self.hs).transpose(1, 2) for t in self.c_attn(x).split(widths, dim=2))
        if cache is not None:
            past = cache.kv[layer]
            if past is not None:
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            cache.kv[layer] = (k, v)
        k, v = (t.repeat_interleave(self.n_head // self.n_kv, dim=1) for t in (k, v))  # one per query head
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.hs)
        att = self.attn_dropout(att.masked_fill(~visible[:, None], float("-inf")).softmax(dim=-1))
        return self.c_proj((att @ v).transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        width = cfg.mlp_size or 4 * cfg.n_embd
        self.c_fc = nn.Linear(cfg.n_embd, width, bias=cfg.mlp_bias)
        self.act = ACTIVATIONS[cfg.activation]()
        self.c_proj = nn.Linear(width, cfg.n_embd, bias=cfg.mlp_bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(cfg.n_embd, bias=cfg.ln_bias), SelfAttention(cfg)
        self.ln_2, self.mlp = nn.LayerNorm(cfg.n_embd, bias=cfg.ln_bias), MLP(cfg)
        self.parallel = cfg.parallel

    def forward(self, x: Tensor, visible: Tensor, cache: Cache | None = None, layer: int = 0) -> Tensor:
        a = self.attn(self.ln_1(x), visible, cache, layer)
        return x + a + self.mlp(self.ln_2(x)) if self.parallel else x + a + self.mlp(self.ln_2(x + a))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.positions else None
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.ln_bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=cfg.head_bias)
        if cfg.tied:
            self.lm_head.weight = self.wte.weight

    @torch.no_grad()
    def init_weights(self, seed: int, std: float = 0.02) -> GPT:
        """Matrices N(0, std^2), LayerNorm gains 1 + N(0, 0.01), biases N(0, (std/10)^2); from a seeded generator."""
        g = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
            gain = ".ln_" in name or name.startswith("ln_")
            value = noise * std if p.dim() > 1 else (1 + 0.1 * noise if gain and name.endswith("weight")
                                                     else noise * std / 10)
            p.copy_(value.to(p.dtype))
        return self

    def forward(self, idx: Tensor, attention_mask: Tensor | None = None, cache: Cache | None = None) -> Tensor:
        """idx [B, T] (left-padded where attention_mask is 0), after what the cache holds -> logits [B, T, V]."""
        T = idx.shape[1]
        real = torch.ones_like(idx, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        if cache is not None:
            real = real if cache.real is None else torch.cat([cache.real, real], dim=1)
            cache.real = real
        S = real.shape[1]
        pos = (real.long().cumsum(dim=1) - 1).clamp(min=0)[:, S - T:]  # real tokens count from 0
        q_at = torch.arange(S - T, S, device=idx.device)[:, None]
        k_at = torch.arange(S, device=idx.device)[None, :]
        visible = ((k_at <= q_at) & real[:, None, :]) | (k_at == q_at)  # a padding query sees only itself
        x = self.wte(idx) if self.wpe is None else self.wte(idx) + self.wpe(pos)
        for i, block in enumerate(self.h):
            x = block(x, visible, cache, i)
        return self.lm_head(self.ln_f(x))

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, attention_mask: Tensor | None = None,
                 temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """The prompt and max_new_tokens new tokens (greedy at temperature 0), one step at a time through a cache."""
        cache, out = Cache(len(self.h)), [idx]
        logits = self(idx, attention_mask, cache)[:, -1]
        for step in range(max_new_tokens):
            out.append(sample(logits, generator, temperature, top_k, top_p)[:, None])
            if step + 1 < max_new_tokens:
                logits = self(out[-1], None, cache)[:, -1]
        return torch.cat(out, dim=1)


def filtered_logits(logits: Tensor, temperature: float, top_k: int | None = None,
                    top_p: float | None = None) -> Tensor:
    """logits / T, with -inf outside the top k (ties with the k-th kept) and outside the top-p nucleus."""
    z = logits / temperature
    if top_k is not None:
        kth = torch.topk(z, min(top_k, z.shape[-1]), dim=-1).values[..., -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        p, order = torch.sort(z.softmax(dim=-1), dim=-1, descending=True, stable=True)
        above = F.pad(p.cumsum(dim=-1)[..., :-1], (1, 0))  # the mass ranked above each token
        drop = above >= top_p
        drop[..., 0] = False  # the top token always stays (a tiny top_p rounds to 0 in float32)
        z = z.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))
    return z


def probabilities(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> Tensor:
    """The sampling distribution [..., V]; temperature 0 is one-hot on the argmax."""
    if temperature == 0.0:
        return F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(logits.dtype)
    return filtered_logits(logits, temperature, top_k, top_p).softmax(dim=-1)


def sample(logits: Tensor, generator: torch.Generator | None, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None) -> Tensor:
    """One token per row of logits [B, V] -> [B] int64; temperature 0 is the argmax (no randomness)."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    return torch.multinomial(probabilities(logits, temperature, top_k, top_p), 1, generator=generator).squeeze(-1)


class ByteTokenizer:
    """Text as its UTF-8 bytes: token i is byte i."""

    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    def id_to_token(self, i: int) -> str:
        return bytes([i]).decode("latin-1")

    def token_to_id(self, token: str) -> int:
        return token.encode("latin-1")[0]
