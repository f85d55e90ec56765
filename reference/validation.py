"""Input checks shared by every stage.

Bad input must fail loudly, naming the parameter and what it may be, instead of
flowing on as a silent wrong answer or a NaN.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor


def check_ids(ids: Tensor, vocab_size: int, device: torch.device, name: str = "ids") -> None:
    """Token IDs: a non-empty [batch, seq] integer tensor on ``device`` with values in [0, vocab_size)."""
    if not isinstance(ids, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token IDs, got {type(ids).__name__}")
    if ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must hold integer token IDs (torch.int64 or int32), got {ids.dtype}")
    if ids.dim() != 2:
        raise ValueError(f"{name} must have shape [batch, seq], got {tuple(ids.shape)}")
    if ids.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(ids.shape)}); need at least one token per row")
    check_device(ids, device, name)
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name} contains token ID {bad}, outside the vocabulary range [0, {vocab_size})")


def check_mask(mask: Tensor, ids: Tensor, device: torch.device, name: str = "attention_mask") -> Tensor:
    """A [batch, seq] mask of 1 (real token) / 0 (padding) matching ``ids``; returned as bool."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.shape != ids.shape:
        raise ValueError(f"{name} must have the shape of ids {tuple(ids.shape)}, got {tuple(mask.shape)}")
    check_device(mask, device, name)
    if mask.dtype == torch.bool:
        return mask
    if mask.dtype.is_floating_point or mask.dtype.is_complex:
        raise TypeError(f"{name} must be bool or integer 0/1, got {mask.dtype}")
    if bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError(f"{name} must contain only 0 (padding) and 1 (token)")
    return mask.bool()


def check_device(t: Tensor, device: torch.device, name: str) -> None:
    """No silent device moves: the caller puts inputs where the weights are."""
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but the model's weights are on {device}; move it explicitly")


def _real(value: object) -> float | None:
    """``value`` as a float if it is a real number (not a bool, not a string), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def check_temperature(temperature: float) -> float:
    """T >= 0 and finite (T = 0 means greedy, claim SOFT-4); any finite T > 0 is valid, however small."""
    t = _real(temperature)
    if t is None or math.isnan(t) or t < 0 or math.isinf(t):
        raise ValueError(f"temperature must be a finite number >= 0 (0 means greedy), got {temperature!r}")
    return t


def check_top_k(top_k: int | None, vocab_size: int) -> int | None:
    """k >= 1 (None means no top-k filter); k larger than the vocabulary keeps everything."""
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1 or None, got {top_k!r}")
    return min(top_k, vocab_size)


def check_top_p(top_p: float | None) -> float | None:
    """p in (0, 1] (None means no nucleus filter)."""
    if top_p is None:
        return None
    p = _real(top_p)
    if p is None or not (0.0 < p <= 1.0):
        raise ValueError(f"top_p must be a number in (0, 1] or None, got {top_p!r}")
    return p


def check_logits(logits: Tensor, name: str = "logits") -> None:
    """Floating [batch, vocab] scores with no NaN and at least one finite entry per row (claim SOFT-7)."""
    if not isinstance(logits, Tensor) or not logits.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point torch.Tensor")
    if logits.dim() != 2 or logits.shape[-1] == 0:
        raise ValueError(f"{name} must have shape [batch, vocab] with vocab >= 1, got {tuple(logits.shape)}")
    if bool(torch.isnan(logits).any()):
        raise ValueError(f"{name} contains NaN")
    if bool((logits == float("inf")).any()):
        raise ValueError(f"{name} contains +inf")
    if not bool(torch.isfinite(logits).any(dim=-1).all()):
        raise ValueError(f"{name} has a row where every entry is -inf (no token can be chosen)")
