"""TR: claims about trained models (TR-1 .. TR-7), checked on a real trained model.

These claims are about what training produces, so they hold only for trained
weights: every one needs the ``trained`` capability, and a random-weight target
reports "needs a trained model" rather than a pass or a failure. They run on any
trained target that exposes what each needs (a tokenizer for the prompts, residual
states, the embedding table, ...), and were measured on SmolLM2-135M-Instruct
(targets ``smollm2`` and ``smollm2:hf``); the figures quoted below are from that model
in float32.

Inputs are fixed, stated sets (prompts, word pairs, word sets), not random text:
Hypothesis draws which member of a set to check (``st.sampled_from``), so a failure
shrinks to, and reports, the first member that breaks the claim. Each claim's
``max_examples`` is the size of its set, so the default profile checks every member
(TR-2 and TR-7 check their whole set in one example: one table, one forward pass).

A word is looked up as one token (with its leading space, e.g. " Mary"); a member
whose words are not single tokens for the target's tokenizer is skipped (assume),
and a claim left with too few members fails, saying so.
"""

from __future__ import annotations

import itertools
import math

import torch
from hypothesis import assume
from hypothesis import strategies as st
from torch import Tensor

from spec.catalog import claim
from spec.oracles import (
    BAND,
    DEPTH_PROMPTS,
    IOI_PROMPTS,
    MAX_TAIL_SHARE,
    MIN_IN_BAND,
    MIN_LONGEST,
    STORM_PROMPT,
    TAIL,
    embedding_norm_ratios,
    lens_ranks,
    logit_lens,
    rank_of,
    residual_norms,
    text_ids,
)
from spec.target import Target, Tokenizer
from spec.tolerance import CLASSES, assert_close, check

# ------------------------------------------------------------------------------ helpers


def _single(tok: Tokenizer, word: str) -> int | None:
    """The id of ``word`` when it is exactly one token, else None."""
    ids = tok.encode(word)
    return ids[0] if len(ids) == 1 else None


def _last_logits(target: Target, text: str) -> Tensor:
    """Next-token logits after ``text`` (the last position), in float64 on the CPU: [V]."""
    return target.logits(text_ids(target, text))[0, -1].detach().double().cpu()


def _enough(needed: int, usable: list[bool], what: str) -> None:
    """The claim's stated set must have at least ``needed`` members this tokenizer can express: the drawn example
    skips (assume) an unusable member, so without a floor a tokenizer that splits every word would check nothing."""
    check(sum(usable) >= needed, f"only {sum(usable)} of the {len(usable)} {what} for this tokenizer; the claim "
                                 f"needs {needed}")


def _show(tok: Tokenizer, i: int) -> str:
    return repr(tok.decode([i]))


# ------------------------------------------------------------------------------ TR-1

# DEPTH_PROMPTS and residual_norms are in spec.oracles (figure 4 draws them too).
GROWTH_FACTOR = 4.0  # |h after the last block| >= this * |h after the first block|


@claim("TR-1", "In a trained model the residual stream grows longer with depth.",
       source="tokens-as-directions \"The effect of vector length\"", needs=("trained", "tokenizer", "residual_states"),
       tolerance="none needed: the checked ratios (>= 15x, >= 19 of 30 blocks on SmolLM2) are far from the "
                 "thresholds (4x, more than half), so float rounding cannot flip them",
       max_examples=len(DEPTH_PROMPTS),
       precise="The essay shows norms rising across layers for a few OPT-125m examples. Made precise: for each "
               "stated prompt, at its last position, the norm after the last block is at least 4x the norm after "
               "the first block, and more than half of the blocks leave the norm larger than they found it. "
               "On SmolLM2 every block raises it for the IOI prompt (30 of 30), but not for every prompt "
               "(19 of 30 for \"The sun rises in the east and sets in the\", which peaks at block 3), "
               "so 'every layer' is not claimed.")
def tr_1(target: Target, data: st.DataObject) -> None:
    """For each prompt of DEPTH_PROMPTS, at the last position, with n_l = |h_l| (h_0 the embedding, h_l the
    residual stream after block l, before the final norm):

    - n_L >= 4 n_1 (SmolLM2: 15.6x to 22.6x), and
    - #{l in 1..L : n_l > n_(l-1)} > L / 2 (SmolLM2: 19 to 30 of 30).
    """
    prompt = data.draw(st.sampled_from(DEPTH_PROMPTS), label="prompt")
    norms = residual_norms(target, prompt)
    n_blocks = len(norms) - 1
    check(n_blocks >= 2, f"TR-1 needs at least two blocks, the target has {n_blocks}")
    shown = ", ".join(f"{n:.3g}" for n in norms)
    check(norms[-1] >= GROWTH_FACTOR * norms[1],
          f"{prompt!r}: norm after the last block {norms[-1]:.4g} is not >= {GROWTH_FACTOR} x the norm after the "
          f"first block {norms[1]:.4g} (norms by depth: {shown})")
    rises = sum(b > a for a, b in itertools.pairwise(norms))
    check(rises > n_blocks / 2,
          f"{prompt!r}: only {rises} of {n_blocks} blocks increase the residual norm (norms by depth: {shown})")


# ------------------------------------------------------------------------------ TR-2

# BAND, TAIL and the other thresholds, and embedding_norm_ratios, are in spec.oracles (figure 5).


@claim("TR-2", "Most rows of a trained embedding table have similar norms, with a small tail of outliers.",
       source="tokens-as-directions \"Directions in space\"", needs=("trained", "embedding_matrix"),
       tolerance="none needed: norms are computed in float64 from the table itself; the measured shares "
                 "(75.2%, 1.9%) and ratio (2.38) sit away from the thresholds",
       max_examples=1,
       precise="The essay shows a histogram of OPT-125m's row norms: most tokens about equally long, a tail of "
               "much longer or shorter ones. Made precise with r_i = |E_i| / median_j |E_j|: at least 70% of rows "
               "have 0.8 <= r_i <= 1.2 (SmolLM2: 75.2%); the tail r_i > 1.5 or r_i < 1/1.5 is non-empty and at "
               "most 5% of rows (SmolLM2: 754 long + 189 short = 1.9%); and the longest row has r >= 2 "
               "(SmolLM2: 2.38, \" strugg\"). A random Gaussian table has every r_i within a few percent of 1 "
               "and so no tail.")
def tr_2(target: Target, data: st.DataObject) -> None:
    """With r = row norms of E over their median: share(|r - 1| <= 0.2) >= 0.70, 0 < share(r > 1.5 or
    r < 1/1.5) <= 0.05, and max r >= 2."""
    ratio = embedding_norm_ratios(target)
    in_band = float(((ratio >= 1 - BAND) & (ratio <= 1 + BAND)).double().mean())
    long, short = int((ratio > TAIL).sum()), int((ratio < 1 / TAIL).sum())
    tail = (long + short) / ratio.numel()
    check(in_band >= MIN_IN_BAND,
          f"only {in_band:.1%} of embedding rows have a norm within +-{BAND:.0%} of the median "
          f"(need >= {MIN_IN_BAND:.0%})")
    check(0 < tail <= MAX_TAIL_SHARE,
          f"{long} rows longer than {TAIL}x and {short} shorter than 1/{TAIL} of the median ({tail:.2%} of rows); "
          f"a small tail means more than none and at most {MAX_TAIL_SHARE:.0%}")
    check(float(ratio.max()) >= MIN_LONGEST,
          f"the longest embedding row is {float(ratio.max()):.3g}x the median, not >= {MIN_LONGEST}x")


# ------------------------------------------------------------------------------ TR-3

# lens_states, logit_lens and lens_ranks are in spec.oracles (figure 6).


@claim("TR-3", "Logit lens: intermediate residual states read through the final norm and unembedding rank the "
               "final prediction better with depth, and give it exactly at the last layer.",
       source="tokens-as-directions \"Non-symmetric embeddings\"",
       needs=("trained", "tokenizer", "residual_states", "final_norm", "unembedding"),
       tolerance="the lens at the last layer vs the target's logits: the target's tolerance class, since both are "
                 "the target's own computation of final_norm(h_L) U (+ b); the rank comparisons are integer",
       max_examples=len(DEPTH_PROMPTS),
       precise="The essay mentions the logit lens (reading the residual stream through the unembedding) without a "
               "property. Made precise, per prompt of DEPTH_PROMPTS at its last position: let t be the target's "
               "top token and rank_l the number of tokens the lens at depth l scores above t. The lens after the "
               "last block equals the target's logits (so rank_L = 0), and the median rank over the last quarter "
               "of the blocks is strictly smaller than the median over the first half (SmolLM2, IOI prompt: "
               "median 1081 over blocks 1-15, 296 over blocks 23-30).")
def tr_3(target: Target, data: st.DataObject) -> None:
    """lens_l = final_norm(h_l) @ U (+ b). lens_L == logits[-1] (target tolerance); argmax lens_L == t; and
    median(rank_l, last ceil(L/4) blocks) < median(rank_l, blocks 1..floor(L/2))."""
    prompt = data.draw(st.sampled_from(DEPTH_PROMPTS), label="prompt")
    ids = text_ids(target, prompt)
    logits = target.logits(ids)[0, -1]
    lens = logit_lens(target, ids)  # [L + 1, V]
    assert_close(lens[-1], logits, CLASSES[target.tolerance], f"{prompt!r}: logit lens after the last block vs logits")
    top = int(logits.argmax())
    check(int(lens[-1].argmax()) == top, f"{prompt!r}: the lens after the last block does not pick the final token")
    ranks = lens_ranks(lens, top)
    n_blocks = lens.shape[0] - 1
    early = sorted(ranks[1:n_blocks // 2 + 1])
    late = sorted(ranks[n_blocks - math.ceil(n_blocks / 4) + 1:])
    med_early, med_late = early[(len(early) - 1) // 2], late[(len(late) - 1) // 2]
    check(med_late < med_early,
          f"{prompt!r}: the final token {_show(target.tokenizer(), top)} is not ranked better late than early: "
          f"median rank {med_late} over the last {len(late)} blocks vs {med_early} over the first {len(early)} "
          f"(ranks by depth: {ranks})")


# ------------------------------------------------------------------------------ TR-4

# IOI_PROMPTS is in spec.oracles (figure 6).


@claim("TR-4", "After \"John and Mary went to the bar. John bought a drink for\" a trained model ranks \" Mary\" "
               "above \" John\" (and the reverse in the mirrored prompt).",
       source="tokens-as-directions, the real example", needs=("trained", "tokenizer"),
       tolerance="none needed: the logits of the two names differ by far more than rounding "
                 "(SmolLM2: p(Mary) = 0.34 vs p(John) = 0.064)",
       max_examples=len(IOI_PROMPTS),
       precise="The essay's OPT-125m example ends at \" Mary\". Made precise: after the prompt, the logit of the "
               "single token \" Mary\" exceeds that of \" John\" (SmolLM2: \" Mary\" is the top token, p = 0.340; "
               "\" John\" ranks 4th, p = 0.064). The mirrored prompt (Mary buys) must prefer \" John\" "
               "(SmolLM2: 3rd, p = 0.072, vs \" Mary\" 20th, p = 0.0066), so the claim is about the "
               "indirect object, not a favourite name. Both names must be single tokens in both prompts.")
def tr_4(target: Target, data: st.DataObject) -> None:
    """z(expected) > z(other) at the last position, for both IOI_PROMPTS (both names single tokens in each)."""
    prompt, expected, other = data.draw(st.sampled_from(IOI_PROMPTS), label="prompt")
    tok = target.tokenizer()
    _enough(len(IOI_PROMPTS), [_single(tok, e) is not None and _single(tok, o) is not None for _, e, o in IOI_PROMPTS],
            "IOI prompts whose two names are single tokens")
    i, j = _single(tok, expected), _single(tok, other)
    assume(i is not None and j is not None)
    assert i is not None and j is not None
    z = _last_logits(target, prompt)
    p = torch.softmax(z, dim=0)
    check(bool(z[i] > z[j]),
          f"{prompt!r}: {expected!r} (p = {float(p[i]):.4f}, rank {rank_of(z, i)}) does not outrank {other!r} "
          f"(p = {float(p[j]):.4f}, rank {rank_of(z, j)}); the top token is {_show(tok, int(z.argmax()))}")


# ------------------------------------------------------------------------------ TR-5

# (word, a related word, an unrelated word); SmolLM2 cosines in the comments (related, unrelated).
WORD_TRIPLES = (
    (" sun", " moon", " banana"),  # 0.46, 0.29
    (" king", " queen", " carrot"),  # 0.62, 0.22
    (" cat", " dog", " table"),  # 0.58, 0.12
    (" red", " blue", " window"),  # 0.57, 0.11
    (" Monday", " Tuesday", " elephant"),  # 0.89, 0.41
    (" man", " woman", " pencil"),  # 0.51, -0.03
    (" car", " truck", " cloud"),  # 0.34, 0.15
    (" apple", " orange", " engine"),  # 0.54, 0.31
    (" father", " mother", " bottle"),  # 0.68, 0.32
    (" winter", " summer", " chair"),  # 0.77, 0.22
    (" doctor", " nurse", " river"),  # 0.60, 0.35
    (" happy", " sad", " metal"),  # 0.48, 0.14
    (" one", " two", " green"),  # 0.53, -0.02
    (" France", " Germany", " sugar"),  # 0.69, 0.23
    (" water", " milk", " ladder"),  # 0.29, -0.02
)


MIN_TRIPLES = 10  # of the 15 WORD_TRIPLES (SmolLM2: all 15)


def _cosine(a: Tensor, b: Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float(a @ b / (a.norm() * b.norm()))


@claim("TR-5", "In a trained embedding table related words point in more similar directions than unrelated ones.",
       source="what-happens-next step 1; the-embedding \"Why vectors?\"",
       needs=("trained", "tokenizer", "embedding_matrix"),
       tolerance="none needed: cosines are computed in float64; on SmolLM2 the smallest gap between the related "
                 "and the unrelated cosine is 0.17 (sun)",
       max_examples=len(WORD_TRIPLES),
       precise="The documents give sun and moon as words whose vectors resemble each other. Made precise over a stated "
               "set of 15 (word, related, unrelated) triples of single tokens: cos(E[word], E[related]) > "
               "cos(E[word], E[unrelated]) for every triple (SmolLM2: sun/moon 0.46 vs sun/banana 0.29). "
               "Direction, not distance, is compared, as tokens-as-directions argues. At least 10 of the 15 triples "
               "must be single tokens for the target's tokenizer (a drawn triple that is not is skipped).")
def tr_5(target: Target, data: st.DataObject) -> None:
    """cos(E[w], E[related]) > cos(E[w], E[unrelated]) for each drawn triple of WORD_TRIPLES."""
    word, related, unrelated = data.draw(st.sampled_from(WORD_TRIPLES), label="triple")
    tok = target.tokenizer()
    _enough(MIN_TRIPLES, [all(_single(tok, w) is not None for w in triple) for triple in WORD_TRIPLES],
            "word triples of single tokens")
    ids = [_single(tok, w) for w in (word, related, unrelated)]
    assume(all(i is not None for i in ids))
    E = target.embedding_matrix()
    w, r, u = (E[i] for i in ids)  # type: ignore[index]
    near, far = _cosine(w, r), _cosine(w, u)
    check(near > far, f"cos({word!r}, {related!r}) = {near:.4f} is not above cos({word!r}, {unrelated!r}) = {far:.4f}")


# ------------------------------------------------------------------------------ TR-6

# Pairs of prompts that differ in one token, with the token a trained model chooses after each.
EDITS = (
    (("The capital of France is", " Paris"), ("The capital of Germany is", " Berlin")),
    (("The capital of Italy is", " Rome"), ("The capital of Japan is", " Tokyo")),
    (("The opposite of hot is", " cold"), ("The opposite of up is", " down")),
    (("The opposite of hot is", " cold"), ("The opposite of big is", " small")),
)


MIN_EDITS = 3  # of the 4 EDITS (SmolLM2: all 4)


def _edit_usable(tok: Tokenizer, pair: tuple[tuple[str, str], tuple[str, str]]) -> bool:
    """Both prompts have the same length and differ in exactly one token; both choices are distinct single tokens."""
    (p1, t1), (p2, t2) = pair
    a, b = tok.encode(p1), tok.encode(p2)
    want1, want2 = _single(tok, t1), _single(tok, t2)
    return (len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) == 1 and want1 is not None
            and want2 is not None and want1 != want2)


@claim("TR-6", "A small edit to the prompt can change the token a trained model chooses.",
       source="embedding-to-choice §23", needs=("trained", "tokenizer"),
       tolerance="none needed: the greedy choice is an argmax; on SmolLM2 each stated token leads the runner-up by "
                 "0.23 logits or more (\" small\" over \" big\"), against float32 differences near 1e-4",
       max_examples=len(EDITS),
       precise="The dialogue argues that altering a few words moves the last hidden state, and with it which "
               "output token scores highest. Made precise by exhibiting it: for each stated pair of prompts "
               "that differ in exactly one token (same length), the greedy choice after each prompt is the stated "
               "token (\"The capital of France is\" -> \" Paris\", \"... Germany is\" -> \" Berlin\"), and the two "
               "choices differ. At least 3 of the 4 pairs must be usable by the target's tokenizer (one token apart, "
               "single-token choices); a drawn pair that is not is skipped.")
def tr_6(target: Target, data: st.DataObject) -> None:
    """For a drawn pair ((p1, t1), (p2, t2)): p1, p2 differ in exactly one token; argmax after p1 is t1,
    argmax after p2 is t2, and t1 != t2."""
    (p1, t1), (p2, t2) = data.draw(st.sampled_from(EDITS), label="edit")
    tok = target.tokenizer()
    _enough(MIN_EDITS, [_edit_usable(tok, pair) for pair in EDITS], "edits of one token between single-token choices")
    assume(_edit_usable(tok, ((p1, t1), (p2, t2))))
    want1, want2 = _single(tok, t1), _single(tok, t2)
    assert want1 is not None and want2 is not None
    for prompt, want in ((p1, want1), (p2, want2)):
        z = _last_logits(target, prompt)
        got = int(z.argmax())
        check(got == want, f"after {prompt!r} the chosen token is {_show(tok, got)}, not {_show(tok, want)} "
                           f"(which ranks {rank_of(z, want)}); the edit {p1!r} -> {p2!r} should change the choice "
                           f"from {t1!r} to {t2!r}")


# ------------------------------------------------------------------------------ TR-7

# STORM_PROMPT is in spec.oracles (figure 7).
# The continuations inference-journey §14 lists, and more words for a storm's course or state.
STORM_RELATED = (" coming", " getting", " over", " approaching", " here", " strong", " raging", " moving",
                 " expected", " brewing", " near", " gone", " passing", " violent")
# Words with nothing to do with weather.
STORM_UNRELATED = (" banana", " keyboard", " democracy", " spoon", " guitar", " algebra", " sandwich", " elephant",
                   " carpet", " pencil", " software", " recipe", " piano", " cheese", " bicycle")
MIN_WORDS = 5


@claim("TR-7", "After \"The storm is\" a trained model scores weather and state continuations above unrelated "
               "words.",
       source="inference-journey §14", needs=("trained", "tokenizer"),
       tolerance="none needed: on SmolLM2 the worst related word ranks 783 and the best unrelated word 9926, "
                 "logits far apart compared with rounding",
       max_examples=1,
       precise="The dialogue's walkthrough expects continuations such as \" coming\", \" over\", "
               "\" approaching\", \" here\", \" strong\" to outscore tokens unrelated to the prompt. Made precise "
               "with stated sets: every single-token word of STORM_RELATED (14 words: the dialogue's, and "
               "words for a storm's course or state) has a larger logit after \"The storm is\" than every "
               "single-token word of STORM_UNRELATED (15 everyday nouns); at least 5 words of each set must be "
               "single tokens. One forward pass decides every pair, so the claim runs one example and its "
               "message names each related word that loses. (SmolLM2's own top choices are function words: "
               "\" a\", \" not\", \" the\".)")
def tr_7(target: Target, data: st.DataObject) -> None:
    """min over related words of z > max over unrelated words of z, at the last position of STORM_PROMPT."""
    tok = target.tokenizer()
    related = {w: i for w in STORM_RELATED if (i := _single(tok, w)) is not None}
    unrelated = {w: i for w in STORM_UNRELATED if (i := _single(tok, w)) is not None}
    check(len(related) >= MIN_WORDS and len(unrelated) >= MIN_WORDS,
          f"too few single-token words for this tokenizer: {len(related)} related, {len(unrelated)} unrelated "
          f"(need {MIN_WORDS} each)")
    z = _last_logits(target, STORM_PROMPT)
    best_other = max(unrelated, key=lambda w: float(z[unrelated[w]]))
    j = unrelated[best_other]
    losers = [f"{w!r} (logit {float(z[i]):.3f}, rank {rank_of(z, i)})" for w, i in related.items() if not z[i] > z[j]]
    check(not losers, f"after {STORM_PROMPT!r}, the unrelated {best_other!r} (logit {float(z[j]):.3f}, rank "
                      f"{rank_of(z, j)}) outranks related words: {', '.join(losers)}")
