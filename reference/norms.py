"""Normalisation: LayerNorm and RMSNorm.

Both divide a vector by a measure of its size, so they see its direction only:
norm(a x) == norm(x) for a > 0, up to eps (claim NORM-1). LayerNorm also removes the
mean, so adding one constant to every coordinate changes nothing. Half-precision
inputs are normalised in float32 and cast back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from reference.stages import Stages


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor | None, eps: float) -> Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis."""
    if x.dtype in (torch.float16, torch.bfloat16):
        out = F.layer_norm(x.float(), x.shape[-1:], weight.float(), None if bias is None else bias.float(), eps)
        return out.to(x.dtype)
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis (no centring, no bias).

    torch's F.rms_norm computes this formula in one call instead of six separate ops.
    Half-precision inputs are normalised in float32 and cast back before the gain, as Llama does.
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        return weight * F.rms_norm(x.float(), x.shape[-1:], eps=eps).to(x.dtype)
    return F.rms_norm(x, x.shape[-1:], weight, eps)


class Norm(nn.Module):
    """A LayerNorm or RMSNorm with its learned gain (and LayerNorm's optional bias)."""

    def __init__(self, d_model: int, kind: str, eps: float, bias: bool, *,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.kind, self.eps = kind, eps
        self.weight = nn.Parameter(torch.ones(d_model, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(d_model, device=device, dtype=dtype)) if bias else None
        from reference.stages import REFERENCE  # (reference.stages imports this module)

        self.stages: Stages = REFERENCE

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "rmsnorm":
            return self.stages.rms_norm(x, self.weight, self.eps)
        return self.stages.layer_norm(x, self.weight, self.bias, self.eps)
