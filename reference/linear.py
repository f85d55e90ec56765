"""The one affine map every stage uses: x @ W + b, with W stored [in, out] as the documents write it."""

from __future__ import annotations

import torch
from torch import Tensor


def linear(x: Tensor, W: Tensor, b: Tensor | None = None) -> Tensor:
    """x [..., in] @ W [in, out] (+ b [out]) -> [..., out]."""
    if b is None:
        return x @ W
    return torch.addmm(b, x.reshape(-1, x.shape[-1]), W).view(*x.shape[:-1], W.shape[1])
