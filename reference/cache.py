"""The KV cache: keys and values of tokens already seen, kept for the next step.

Generating token by token recomputes nothing: each step projects only the new
tokens, appends their keys and values here, and attends over everything stored.
The cache also keeps which stored slots are padding and, per batch row, the
position the next real token will take (the explicit position offset), so cached
decoding gives the same logits as recomputing the whole sequence (claim GEN-2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reference.config import ModelConfig


@dataclass
class KVCache:
    """Preallocated per-layer key/value storage for ``capacity`` positions.

    keys[i], values[i]: [batch, n_kv_heads, capacity, d_head]; the first ``length``
    slots are filled. key_mask [batch, capacity] marks real tokens; next_position
    [batch] is the position of each row's next real token.
    """

    keys: list[Tensor]
    values: list[Tensor]
    key_mask: Tensor
    next_position: Tensor
    length: int = 0

    @classmethod
    def empty(cls, config: ModelConfig, batch: int, capacity: int, *,
              device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> KVCache:
        """An empty cache for ``batch`` rows and up to ``capacity`` tokens each."""
        if batch < 1 or capacity < 1:
            raise ValueError(f"KVCache needs batch >= 1 and capacity >= 1, got batch={batch}, capacity={capacity}")
        shape = (batch, config.kv_heads, capacity, config.head_dim)
        return cls(
            keys=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)],
            values=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)],
            key_mask=torch.zeros(batch, capacity, dtype=torch.bool, device=device),
            next_position=torch.zeros(batch, dtype=torch.long, device=device),
        )

    @property
    def batch(self) -> int:
        return self.key_mask.shape[0]

    @property
    def capacity(self) -> int:
        return self.key_mask.shape[1]

    def store(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write this step's k, v [batch, n_kv_heads, new, d_head] after the filled slots.

        Returns every stored key and value so far, [batch, n_kv_heads, length + new, d_head].
        ``length`` advances only in ``advance`` (once per forward, after all layers).
        """
        end = self.length + k.shape[2]
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, mask: Tensor) -> None:
        """Record the new tokens' padding mask [batch, new] and move the offsets on."""
        end = self.length + mask.shape[1]
        self.key_mask[:, self.length:end] = mask
        self.next_position += mask.long().sum(dim=1)
        self.length = end
