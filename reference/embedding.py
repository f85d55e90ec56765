"""Token IDs to vectors: the embedding table.

The table E has one row per vocabulary entry, each of width d_model. Looking a
token up is selecting its row (claim EMB-1), which is the same as multiplying a
one-hot vector by E (EMB-2); a sequence of n IDs becomes an [n, d_model] matrix
of those rows in order (EMB-3). The rows are ordinary trainable weights, but only
the rows of tokens that occur receive gradient (EMB-4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from reference.stages import Stages


def embed(ids: Tensor, E: Tensor, scale: float = 1.0) -> Tensor:
    """Select row ``ids[b, t]`` of E for every position: [batch, seq] -> [batch, seq, d_model].

    ``scale`` multiplies the rows (Gemma scales by sqrt(d_model)); 1.0 leaves them bit for bit.
    """
    h = E[ids]  # [batch, seq, d_model]
    if scale != 1.0:
        h = h * torch.tensor(scale, dtype=h.dtype, device=h.device)
    return h


def one_hot_embed(ids: Tensor, E: Tensor) -> Tensor:
    """The same lookup written as a matrix product, onehot(ids) @ E (claim EMB-2)."""
    onehot = torch.nn.functional.one_hot(ids, num_classes=E.shape[0]).to(E.dtype)  # [batch, seq, V]
    return onehot @ E


class Embedding(nn.Module):
    """Holds E, the [vocab_size, d_model] table."""

    def __init__(self, vocab_size: int, d_model: int, scale: float = 1.0, *,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.E = nn.Parameter(torch.empty(vocab_size, d_model, device=device, dtype=dtype))
        self.scale = scale
        from reference.stages import REFERENCE  # (reference.stages imports this module)

        self.stages: Stages = REFERENCE

    def forward(self, ids: Tensor) -> Tensor:
        return self.stages.embed(ids, self.E, self.scale)
