"""What claims need to know of a target's shape to drive its parts directly, and the hidden states they drive them
with: the residual width, the number of blocks, a drawn layer, drawn hidden states. Helpers, not claims: claim
modules import them (issue #15: claim modules never import one another)."""

from __future__ import annotations

import torch
from hypothesis import strategies as st
from torch import Tensor

from spec.strategies import generator, seeds
from spec.target import NotExposed, Target


def width(target: Target) -> int:
    """d_model from the target's config, embedding table or unembedding, whichever it exposes."""
    have = target.capabilities
    if "config" in have:
        return target.config().d_model
    if "embedding_matrix" in have:
        return int(target.embedding_matrix().shape[1])
    if "unembedding" in have:
        return int(target.unembedding()[0].shape[0])
    raise NotExposed("config", "the residual width d_model is needed (config, embedding_matrix or unembedding)")


def n_layers(target: Target) -> int:
    """The number of blocks, from config or residual_states; 1 (test block 0 only) when neither is exposed."""
    have = target.capabilities
    if "config" in have:
        return target.config().n_layers
    if "residual_states" in have:
        return len(target.residual_states(torch.zeros(1, 1, dtype=torch.long, device=target.device))) - 1
    return 1


def drawn_layer(data: st.DataObject, target: Target) -> int:
    """A block index drawn from the target's blocks."""
    return data.draw(st.integers(0, max(0, n_layers(target) - 1)), label="layer")


def hidden_states(data: st.DataObject, target: Target, d: int, *, label: str, min_seq: int = 1, max_seq: int = 8,
                  scale: tuple[float, float] = (0.5, 4.0), batch: int | None = None,
                  seq: int | None = None) -> Tensor:
    """Seeded Gaussian hidden states [B, T, d] times a drawn scale, plus a drawn offset, in the target's dtype."""
    b = batch if batch is not None else data.draw(st.integers(1, 2), label=f"{label}_batch")
    t = seq if seq is not None else data.draw(st.integers(min_seq, max_seq), label=f"{label}_seq")
    s = data.draw(st.floats(*scale), label=f"{label}_scale")
    offset = data.draw(st.floats(-1.0, 1.0), label=f"{label}_offset")
    x = torch.randn(b, t, d, generator=generator(data.draw(seeds, label=f"{label}_seed")), dtype=torch.float64)
    return (x * s + offset).to(dtype=target.dtype, device=target.device)
