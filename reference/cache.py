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

    def check_fits(self, config: ModelConfig, device: torch.device, dtype: torch.dtype) -> None:
        """Raise ValueError (TypeError for a dtype) unless this cache is laid out for a model of ``config``.

        A cache made for another model (other layer count, key/value heads or head width)
        would otherwise fail deep inside attention with a bare shape error, or not at all.
        Shapes only: no tensor is read, so the check costs nothing next to a decode step.
        """
        made = "make the cache with model.new_cache(batch) for the model that uses it"
        if len(self.keys) != config.n_layers or len(self.values) != config.n_layers:
            raise ValueError(f"cache holds keys for {len(self.keys)} and values for {len(self.values)} layers but "
                             f"the model has n_layers={config.n_layers}; {made}")
        if self.key_mask.dim() != 2 or self.key_mask.dtype != torch.bool:
            raise ValueError(f"cache key_mask must be a [batch, capacity] bool tensor, got {self.key_mask.dtype} "
                             f"of shape {tuple(self.key_mask.shape)}; {made}")
        if tuple(self.next_position.shape) != (self.batch,) or not 0 <= self.length <= self.capacity:
            raise ValueError(f"cache next_position has shape {tuple(self.next_position.shape)} and length "
                             f"{self.length}, expected ({self.batch},) and a length in [0, {self.capacity}]; {made}")
        want = (self.batch, config.kv_heads, self.capacity, config.head_dim)
        for i in range(config.n_layers):
            for name, t in (("keys", self.keys[i]), ("values", self.values[i])):
                if tuple(t.shape) != want:
                    raise ValueError(
                        f"cache {name}[{i}] has shape {tuple(t.shape)} but the model needs {want} = [batch, "
                        f"n_kv_heads={config.kv_heads}, capacity, d_head={config.head_dim}]; {made}")
                if t.dtype != dtype:
                    raise TypeError(f"cache dtype {t.dtype} differs from the model's {dtype} (in {name}[{i}])")
                if t.device != device:
                    raise ValueError(f"cache {name}[{i}] is on {t.device} but the model's weights are on {device}; "
                                     "move it explicitly")

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
