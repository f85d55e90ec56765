"""A pre-norm transformer block: attention then MLP, each added to the residual stream.

Sequential (GPT-2, Llama):  h = h + Attn(N1(h));  h = h + MLP(N2(h))      (claim BLK-1)
Parallel (GPT-NeoX, GPT-J): h = h + Attn(N1(h)) + MLP(N2(h))

Sublayers add to the stream and never replace it (RES-1), and the width stays
d_model from the first block to the last.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reference.attention import Attention
from reference.cache import KVCache
from reference.config import ModelConfig
from reference.mlp import MLP
from reference.norms import Norm
from reference.stages import REFERENCE, Stages


class Block(nn.Module):
    """Norm N1, attention, norm N2, MLP."""

    def __init__(self, cfg: ModelConfig, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.parallel = cfg.parallel_residual
        self.N1 = Norm(cfg.d_model, cfg.norm, cfg.norm_eps, cfg.norm_bias, device=device, dtype=dtype)
        self.attn = Attention(cfg, device=device, dtype=dtype)
        self.N2 = Norm(cfg.d_model, cfg.norm, cfg.norm_eps, cfg.norm_bias, device=device, dtype=dtype)
        self.mlp = MLP(cfg, device=device, dtype=dtype)
        self.stages: Stages = REFERENCE

    def forward(self, h: Tensor, mask: Tensor | None, *, rotary: tuple[Tensor, Tensor] | None = None,
                bias: Tensor | None = None, cache: KVCache | None = None, layer: int = 0,
                explicit: bool = False, causal: bool = False) -> tuple[Tensor, Tensor | None]:
        """h [batch, seq, d_model] -> (new h [batch, seq, d_model], attention weights or None)."""
        a, weights = self.attn(self.N1(h), mask, rotary=rotary, bias=bias, cache=cache, layer=layer,
                               explicit=explicit, causal=causal)
        if self.parallel:
            return self.stages.residual(h, a) + self.mlp(self.N2(h)), weights
        h = self.stages.residual(h, a)
        return h + self.mlp(self.N2(h)), weights
