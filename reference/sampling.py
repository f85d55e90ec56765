"""Logits to a chosen token: softmax with temperature, top-k, top-p, and the draw.

All functions are pure; randomness comes only from the ``torch.Generator`` passed in,
never from torch's global generator, so the same seed gives the same draws (claim DEC-5).

Order of operations, as in common inference engines: divide by the temperature,
keep the top-k, keep the nucleus (top-p) of what remains, renormalise, draw.
``filtered_probabilities`` and ``sample`` call the other steps through a ``stages`` bundle
(reference.stages; the reference's own when none is given).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from reference.validation import check_logits, check_temperature, check_top_k, check_top_p

if TYPE_CHECKING:
    from reference.stages import Stages


def _bundle(stages: Stages | None) -> Stages:
    if stages is not None:
        return stages
    from reference.stages import REFERENCE  # (reference.stages imports this module)

    return REFERENCE


def softmax(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """softmax(z / T) over the last axis, computed in float32 or float64 (claims SOFT-1..SOFT-7).

    T = 0 is defined as the limit: a one-hot vector on the argmax (the first one among ties).
    Subtracting the maximum before dividing by T keeps huge logits and tiny temperatures
    finite (``divide_by_temperature``); -inf entries get probability exactly 0.
    """
    t = check_temperature(temperature)
    work = logits if logits.dtype == torch.float64 else logits.float()
    if t == 0.0:
        return torch.nn.functional.one_hot(work.argmax(dim=-1), work.shape[-1]).to(work.dtype)
    return torch.softmax(divide_by_temperature(work, t), dim=-1)


def divide_by_temperature(z: Tensor, t: float) -> Tensor:
    """(z - max z) / T over the last axis: the same softmax as z / T, but finite for every T > 0.

    Plain z / T overflows for tiny T (T = 1e-40 sends every float32 logit above ~3e-2 to inf,
    and softmax(inf, ...) is NaN). After the shift the maxima are exactly 0 and every other
    entry is <= 0 (at worst -inf), so as T -> 0+ the softmax tends to one-hot on the argmax
    (shared equally among tied maxima), the limit the documents state. Where T rounds to a
    subnormal or to 0 in z's dtype the maxima are set to 0 explicitly (0 / 0 would be NaN).
    NaN or +inf logits still give NaN: nothing finite is made from them.
    """
    shifted = z - z.amax(dim=-1, keepdim=True)
    scaled = shifted / t
    if t < torch.finfo(z.dtype).tiny:
        scaled = scaled.masked_fill(shifted == 0, 0.0)
    return scaled


def greedy(logits: Tensor) -> Tensor:
    """The argmax of each row, [batch, V] -> [batch]; ties go to the lowest ID (the reference's choice:
    DEC-1 leaves it free and reports it)."""
    return logits.argmax(dim=-1)


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep exactly the k highest logits of each row, -inf elsewhere (claim DEC-3).

    Ties at the k-th place are broken towards the lower ID, so never more than k survive.
    """
    k = check_top_k(k, logits.shape[-1])  # type: ignore[assignment]
    order = torch.sort(logits, dim=-1, descending=True, stable=True).indices  # [batch, V]
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, order[..., :k], True)
    return logits.masked_fill(~keep, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Keep the nucleus: the smallest top-ranked set whose probability reaches p (claim DEC-4).

    A token is kept when the mass ranked strictly above it is still below p, so the
    top token is always kept and the set stops at the first token that reaches p.
    """
    p = check_top_p(p)  # type: ignore[assignment]
    if p == 1.0:
        return logits
    probs = softmax(logits)
    sorted_p, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    mass_above = torch.cumsum(sorted_p, dim=-1) - sorted_p
    keep_sorted = mass_above < p
    keep_sorted[..., 0] = True  # the top token, even when p rounds to 0 in the logits' dtype
    keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def filtered_probabilities(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                           top_p: float | None = None, *, stages: Stages | None = None) -> Tensor:
    """The distribution a draw is made from: temperature, then top-k, then top-p, renormalised.

    [batch, V] -> [batch, V] probabilities; T = 0 gives the one-hot argmax. Temperature, top-k,
    top-p and the softmax are the stages of ``stages`` (this function is the ``filtered`` stage).
    """
    s = _bundle(stages)
    check_logits(logits)
    t = check_temperature(temperature)
    k = check_top_k(top_k, logits.shape[-1])
    p = check_top_p(top_p)
    if t == 0.0:
        return s.softmax(logits, 0.0)
    z = s.temperature(logits if logits.dtype == torch.float64 else logits.float(), t)
    if k is not None:
        z = s.top_k(z, k)
    if p is not None:
        z = s.top_p(z, p)
    return s.softmax(z, 1.0)  # z's maximum is 0 already: exactly torch.softmax(z)


def sample(logits: Tensor, generator: torch.Generator | None, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None, *, stages: Stages | None = None) -> Tensor:
    """Choose one token per row, [batch, V] -> [batch] (claims DEC-1..DEC-5).

    T = 0 is greedy and needs no generator; any T > 0 draws with ``generator``, which
    must be given and must live on the logits' device. The steps are the stages of ``stages``
    (this function is the ``sample`` stage).
    """
    s = _bundle(stages)
    probs = s.filtered(logits, temperature, top_k, top_p, stages=s)
    if temperature == 0:
        return s.greedy(logits)
    return s.draw(probs, generator)


def draw(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One draw per row from ``probs`` [batch, V] with ``generator`` (never torch's global one)."""
    if generator is None:
        raise ValueError("generator is required when temperature > 0 (the global RNG is never used)")
    if generator.device.type != probs.device.type:
        raise ValueError(f"generator is on {generator.device} but logits are on {probs.device}")
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
