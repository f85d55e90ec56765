"""GEN: the generation loop (claims GEN-1 .. GEN-4).

These claims use only what a fixed model exposes (logits, and decode / generate where
offered), so they run on the reference presets, on HuggingFace models and on a user's
model alike. Greedy choices are compared with a fresh full forward pass through
``check_greedy_step`` (spec.oracles): a chosen token must attain the maximum logit
up to twice the target's tolerance, since generate may compute its step logits through
a KV cache (GEN-2 bounds that difference by the same tolerance).
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st
from torch import Tensor

from spec.catalog import claim
from spec.oracles import check_greedy_step
from spec.strategies import padded_batch, prefill_points, target_ids
from spec.target import NotExposed, Target, skip_part
from spec.tolerance import CLASSES, ToleranceClass, assert_equal, assert_logits_close, check


def _same_continuation(target: Target, prompt: Tensor, got: list[int], want: list[int], tol: ToleranceClass,
                       what: str) -> None:
    """Two greedy continuations of ``prompt`` [1, l] agree, except that at a near-tie they may part ways.

    At the first step where they differ, both tokens must attain the maximum logit of a fresh
    forward pass on the common prefix (within the greedy band); after that the continuations
    are of different prefixes and are not compared.
    """
    check(len(got) == len(want), f"{what}: {len(got)} new tokens vs {len(want)}")
    for j, (a, b) in enumerate(zip(got, want, strict=True)):
        if a == b:
            continue
        common = torch.tensor([want[:j]], dtype=torch.long, device=prompt.device)
        z = target.logits(torch.cat([prompt, common], dim=1))[0, -1]
        check_greedy_step(z, a, tol, f"{what}, step {j} (first difference, one way)")
        check_greedy_step(z, b, tol, f"{what}, step {j} (first difference, other way)")
        return


# ======================================================================================================
@claim("GEN-1", "Generation keeps the prompt and appends one token per step, each the argmax of a fresh full "
                "forward pass on the sequence so far.",
       source="embedding-to-choice §15; inference-journey §17", needs=("generate",), kind="numeric",
       tolerance="prompt and shape exact; each appended token's logit in a fresh full forward pass may trail the "
                 "maximum by at most twice the target's tolerance class (generate may use a KV cache, whose "
                 "logits GEN-2 allows to differ by that class)",
       precise="'the chosen token is appended and the whole thing repeats' becomes: generate(ids, n) has shape "
               "[B, T + n]; its first T columns equal ids bit for bit; token T + j attains (within the band) "
               "the maximum of logits(out[:, :T + j])[:, -1]; and one token per step means the first m steps "
               "do not depend on how many follow: generate(ids, m) is a prefix of generate(ids, n) for m < n "
               "(up to a near-tie, where both choices must attain the maximum).")
def gen_1(target: Target, data: st.DataObject) -> None:
    """Prompt kept, one token appended per step, each the fresh-forward argmax; shorter runs are prefixes."""
    tol = CLASSES[target.tolerance]
    n_new = data.draw(st.integers(1, 5), label="new_tokens")
    batch = data.draw(st.integers(1, 2), label="batch")
    max_len = max(1, min(8, target.max_positions - n_new))
    ids = data.draw(target_ids(target, max_len=max_len, batch=batch), label="ids")
    t = ids.shape[1]
    out = target.generate(ids, n_new)
    check(tuple(out.shape) == (batch, t + n_new),
          f"generate of [{batch}, {t}] ids with {n_new} new tokens returned shape {tuple(out.shape)}")
    assert_equal(out[:, :t], ids, "the prompt at the start of the generated sequence")
    for j in range(n_new):
        z = target.logits(out[:, :t + j])[:, -1]
        for r in range(batch):
            check_greedy_step(z[r], int(out[r, t + j]), tol, f"row {r}, step {j}")
    if n_new > 1:
        m = data.draw(st.integers(1, n_new - 1), label="shorter")
        short = target.generate(ids, m)
        check(tuple(short.shape) == (batch, t + m), f"generate with {m} new tokens returned shape {tuple(short.shape)}")
        for r in range(batch):
            _same_continuation(target, ids[r:r + 1], short[r, t:].tolist(), out[r, t:t + m].tolist(), tol,
                               f"row {r}: generate({m}) vs the first {m} tokens of generate({n_new})")


# ======================================================================================================
@claim("GEN-2", "Decoding step by step through a KV cache gives the same logits as recomputing the whole sequence.",
       source="tokens-as-directions §3, side note", needs=("decode",), kind="numeric",
       tolerance="the target's tolerance class: cached and full computations reduce the same products in "
                 "different orders and shapes, so they agree to rounding, not bit for bit",
       precise="'save the outputs from before and use less compute' becomes: decode(ids, prefill) — feed "
               "ids[:, :prefill] at once, then one token per step through the cache — equals logits(ids) at "
               "every position, for every prefill in [1, T]; and for a left-padded batch with its attention mask "
               "(rows of different lengths, prefill possibly inside a row's padding), at every real position.")
def gen_2(target: Target, data: st.DataObject) -> None:
    """decode(ids, prefill) == logits(ids) within tolerance; the same for a left-padded, masked batch."""
    tol = CLASSES[target.tolerance]
    ids = data.draw(target_ids(target, max_len=12, batch=data.draw(st.integers(1, 2), label="batch")), label="ids")
    prefill = data.draw(prefill_points(ids.shape[1]), label="prefill")
    assert_logits_close(target.decode(ids, prefill), target.logits(ids), tol,
                 f"cached decoding (prefill {prefill} of {ids.shape[1]}) vs full recomputation")
    padded, mask, singles = data.draw(padded_batch(target, max_len=10), label="padded_batch")
    prefill = data.draw(prefill_points(padded.shape[1]), label="padded_prefill")
    got = target.decode(padded, prefill, mask)
    want = target.logits(padded, mask)
    width = padded.shape[1]
    for r, row in enumerate(singles):
        start = width - row.shape[1]
        assert_logits_close(got[r, start:], want[r, start:], tol,
                     f"row {r} (padding {start}) of a left-padded batch: cached decoding (prefill {prefill}) vs "
                     "full recomputation, real positions")


# ======================================================================================================
@claim("GEN-3", "A left-padded, masked batch of prompts of different lengths gives each prompt the logits and "
                "greedy continuation it gets alone.",
       source="what users of any implementation expect", needs=(), kind="numeric",
       tolerance="logits: the target's tolerance class (a padded batch changes shapes and reduction orders, not "
                 "the math); continuations: equal token for token, except at a near-tie where both tokens "
                 "attain the maximum logit within twice that class",
       precise="'the same logits and continuation as running it alone' becomes: with rows left-padded by an "
               "arbitrary drawn pad ID and attention_mask 0 on the padding, logits(batch, mask)[r, real "
               "positions] == logits(row r alone) within tolerance (padding positions' logits are unspecified); "
               "and where generate is exposed, generate(batch, n, mask) keeps the padded prompt and each row's "
               "new tokens equal generate(row alone, n)'s, up to near-ties.")
def gen_3(target: Target, data: st.DataObject) -> None:
    """Each row of a padded batch gets its solo logits at real positions and its solo greedy continuation."""
    tol = CLASSES[target.tolerance]
    has_generate = "generate" in target.capabilities
    n_new = data.draw(st.integers(1, 3), label="new_tokens") if has_generate else 0
    padded, mask, singles = data.draw(padded_batch(target, reserve=n_new), label="padded_batch")
    width = padded.shape[1]
    batch_logits = target.logits(padded, mask)
    for r, row in enumerate(singles):
        start = width - row.shape[1]
        assert_logits_close(batch_logits[r, start:], target.logits(row)[0], tol,
                     f"row {r} (length {row.shape[1]}, padding {start}): batched logits at real positions vs alone")
    if not has_generate:
        skip_part(NotExposed("generate", "the padded batch's greedy continuation (its logits were checked)"))
        return
    try:
        out = target.generate(padded, n_new, mask)
    except NotExposed as exc:  # a generate without a mask (TransformerLens): the logits above still count
        skip_part(exc)
        return
    check(tuple(out.shape) == (len(singles), width + n_new),
          f"generate of a padded [{len(singles)}, {width}] batch returned shape {tuple(out.shape)}")
    assert_equal(out[:, :width], padded, "the padded prompts at the start of the batched generation")
    for r, row in enumerate(singles):
        alone = target.generate(row, n_new)
        _same_continuation(target, row, out[r, width:].tolist(), alone[0, row.shape[1]:].tolist(), tol,
                           f"row {r}: batched vs alone greedy continuation")


# ======================================================================================================
@claim("GEN-4", "The same input gives the same logits on every call, bit for bit.",
       source="what users of any implementation expect", needs=(), kind="exact",
       tolerance="exact: the same computation on the same input in the same process must repeat every bit; any "
                 "difference means randomness (dropout left on, unseeded noise) or state kept between calls",
       precise="'deterministic' becomes: logits(ids) called twice, with a call on other input (another length "
               "and batch) in between, returns identical tensors; no tolerance is granted, so dropout at "
               "inference or a cache that leaks between calls fails.")
def gen_4(target: Target, data: st.DataObject) -> None:
    """logits(ids) == logits(ids) bit for bit, across an intervening call on different input."""
    ids = data.draw(target_ids(target, max_len=12, batch=data.draw(st.integers(1, 3), label="batch")), label="ids")
    other = data.draw(target_ids(target, max_len=12, batch=data.draw(st.integers(1, 3), label="other_batch")),
                      label="other_ids")
    first = target.logits(ids).clone()
    target.logits(other)
    second = target.logits(ids)
    assert_equal(second, first, "logits of the same ids on a second call")
