"""The autoregressive loop: predict, choose, append, repeat.

Generation keeps the prompt and appends one chosen token per step (claim GEN-1).
With the KV cache each step feeds only the newest token; without it each step
recomputes the whole prefix; both give the same tokens (GEN-2). Prompts of different
lengths run together, left-padded with an attention mask (GEN-3).
"""

from __future__ import annotations

import torch
from torch import Tensor

from reference.model import Transformer
from reference.validation import check_ids, check_mask


@torch.no_grad()
def generate(model: Transformer, ids: Tensor, max_new_tokens: int, *, attention_mask: Tensor | None = None,
             temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
             generator: torch.Generator | None = None, eos_token_id: int | None = None,
             use_cache: bool = True) -> Tensor:
    """Extend each row of ``ids`` [batch, seq] by up to ``max_new_tokens`` tokens -> [batch, seq + n].

    A row that emits ``eos_token_id`` is finished: later columns repeat that ID. The loop
    ends after ``max_new_tokens`` steps or when every row is finished, so n <= max_new_tokens.
    Non-finite logits (NaN weights, overflow) raise FloatingPointError naming the step.
    The token is chosen by the ``sample`` stage of the model's stages.
    """
    check_ids(ids, model.cfg.vocab_size, model.device)  # a list, a 1-D tensor: named here, not deep in the loop
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if eos_token_id is not None and (isinstance(eos_token_id, bool) or not isinstance(eos_token_id, int)
                                     or not 0 <= eos_token_id < model.cfg.vocab_size):
        raise ValueError(f"eos_token_id must lie in [0, {model.cfg.vocab_size}), got {eos_token_id}")
    mask = (torch.ones_like(ids, dtype=torch.bool) if attention_mask is None
            else check_mask(attention_mask, ids, ids.device))
    b, t = ids.shape
    if t + max_new_tokens > model.cfg.max_positions:
        raise ValueError(f"max_new_tokens: {t} prompt + {max_new_tokens} new tokens exceed "
                         f"max_positions={model.cfg.max_positions}")
    s = model.stages
    cache = model.new_cache(b, t + max_new_tokens) if use_cache else None
    tokens, finished = ids, torch.zeros(b, dtype=torch.bool, device=ids.device)
    step_ids = ids
    step_mask: Tensor | None = mask
    for step in range(max_new_tokens):
        # [batch, V]: only the last position chooses (claim OUT-7), so only it is unembedded
        logits = model(step_ids, step_mask, cache, last_logits_only=True).logits[:, -1]
        check_finite_logits(logits, step)
        nxt = s.sample(logits, generator, temperature, top_k, top_p, stages=s)
        if eos_token_id is not None:
            nxt = torch.where(finished, torch.full_like(nxt, eos_token_id), nxt)
            finished = finished | (nxt == eos_token_id)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        if use_cache:  # a generated token is never padding: the cache already holds the prompt's mask
            step_ids, step_mask = nxt[:, None], None
        else:
            mask = torch.cat([mask, torch.ones_like(nxt[:, None], dtype=torch.bool)], dim=1)
            step_ids, step_mask = tokens, mask
        if eos_token_id is not None and bool(finished.all()):
            break
    return tokens


def check_finite_logits(logits: Tensor, step: int) -> None:
    """Refuse to choose from a forward pass that produced NaN or inf (one check per step).

    The forward pass propagates non-finite values on every path (a NaN weight gives NaN
    logits, never finite ones), so this is where a corrupt model or an overflow in a low
    precision dtype stops generation, naming the step, instead of a token being drawn from
    garbage or -inf quietly meaning "impossible".
    """
    if not bool(torch.isfinite(logits).all()):
        rows = (~torch.isfinite(logits)).any(dim=-1).nonzero().flatten().tolist()
        raise FloatingPointError(f"generate: the model's logits at step {step} are not finite (NaN or inf) in "
                                 f"batch rows {rows}; check the weights for NaN/inf (or use a wider dtype "
                                 f"than {logits.dtype} if they overflow)")
