"""Hidden state to logits: one dot product per vocabulary entry.

The logit of token i is h . U[:, i] (+ b[i]): how well the final hidden state lines
up with token i's output vector (claim OUT-1). All of them at once are one matrix
product h @ U. Tied models use the transpose of the embedding table as U (OUT-3).
"""

from __future__ import annotations

from torch import Tensor

from reference.linear import linear


def unembed(h: Tensor, U: Tensor, b: Tensor | None = None) -> Tensor:
    """[..., d_model] @ U [d_model, V] (+ b [V]) -> logits [..., V]."""
    return linear(h, U, b)
