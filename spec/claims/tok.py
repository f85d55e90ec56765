"""TOK: text to token IDs (claims TOK-1 .. TOK-5).

TOK-1..4 are about the target's tokenizer (capability ``tokenizer``); the reference
target uses the built-in byte-level BPE of spec/targets/tokenizers.py. TOK-5 is about
the model: token IDs are only addresses, so relabelling the vocabulary changes nothing
but the labels.
"""

from __future__ import annotations

import contextlib

import torch
from hypothesis import strategies as st

from spec.catalog import claim
from spec.edits import live_model
from spec.strategies import built_configs, permutations, seeds, token_ids
from spec.target import NotExposed, Target, Tokenizer, skip_part
from spec.tolerance import CLASSES, assert_close, assert_equal, check

# Pieces that stress a byte-level tokenizer: multi-byte UTF-8, emoji with modifiers and
# zero-width joiners, combining marks, right-to-left text, control characters, whitespace runs.
_FRAGMENTS = ["The", " the", " cat", "cat", "\n\n", "  ", "\t", "café", "naïve", "e\u0301", "世界", "こんにちは",
              "🙂", "👍🏽", "👩\u200d👩\u200d👧", "🏳️\u200d🌈", "λόγος", "שלום", "مرحبا", "\x00", "\x7f", "\u00a0",
              "\ufeff", "\U0010ffff", "<|endoftext|>", "'s", "'ll", "1234567", "...", "!!",
              # decomposed (non-NFC) forms: a tokenizer that normalises Unicode changes them
              "A\u030a", "n\u0303o", "\u1112\u1161\u11ab", "o\u0308\u0301"]

# Words of the documents (and common English) whose spaced forms a trained English BPE holds as tokens.
_WORDS = ["cat", "the", "next", "storm", "is", "sun", "moon", "dog", "mat", "rises", "bar", "drink"]


def _text() -> st.SearchStrategy[str]:
    """Any Unicode text without lone surrogates (they have no UTF-8 form), mixed with hard fragments."""
    chars = st.characters(codec="utf-8")  # every code point except the surrogates
    piece = st.one_of(st.text(chars, max_size=12), st.sampled_from(_FRAGMENTS))
    return st.lists(piece, max_size=6).map("".join)


class Refused(AssertionError):
    """The tokenizer refused to encode a text (it raised ValueError): a claim failure, with its message."""


def _encode(tok: Tokenizer, text: str) -> list[int]:
    """tok.encode(text), every id checked to be in [0, vocab_size).

    A tokenizer that cannot encode some text says so with a ValueError (the reference's does
    when its vocabulary lacks a byte token the text needs). That refusal is the claim's
    failure, reported as such with the tokenizer's own message, not a crash of the check.
    """
    try:
        ids = tok.encode(text)
    except ValueError as err:
        raise Refused(f"encode({text!r}) refused the text: {err}") from None
    bad = [i for i in ids if not 0 <= i < tok.vocab_size]
    check(not bad, f"encode({text!r}) gave ids outside [0, {tok.vocab_size}): {bad}")
    return ids


@claim("TOK-1", "Decoding the encoding of any text gives the text back, Unicode and emoji included.",
       source="inference-journey §1; tokens-as-directions §1.1", needs=("tokenizer",), kind="exact",
       tolerance="exact: strings compare character for character",
       precise="'any text' is any Python string without lone surrogates (they have no UTF-8 encoding, so no "
               "byte-level tokenizer can see them): drawn Unicode of every category, emoji with skin tones and "
               "ZWJ sequences, combining marks, control characters, whitespace runs and the literal text of special "
               "tokens; every id is in [0, vocab_size). A tokenizer that cannot encode part of that text (e.g. its "
               "vocabulary lacks a byte token) fails, whether it drops or replaces the characters silently or "
               "refuses the text with a ValueError")
def tok_1(target: Target, data: st.DataObject) -> None:
    """decode(encode(s)) == s for drawn text s."""
    tok = target.tokenizer()
    s = data.draw(_text(), label="text")
    back = tok.decode(_encode(tok, s))
    check(back == s, f"decode(encode({s!r})) == {back!r}")


@claim("TOK-2", "The vocabulary is a one-to-one map between token strings and IDs.",
       source="tokens-as-directions §1.1", needs=("tokenizer",), kind="exact", max_examples=10,
       tolerance="exact: strings and integers",
       precise="every id in [0, vocab_size) has a token string, no two ids share one (checked over the whole "
               "vocabulary), and where the tokenizer offers token_to_id it inverts id_to_token on drawn ids and on "
               "every id that encoding drawn text produces (text the tokenizer refuses with a ValueError adds no ids: "
               "whether every text can be encoded is TOK-1's question, not this one's)")
def tok_2(target: Target, data: st.DataObject) -> None:
    """id_to_token is injective on [0, V); token_to_id(id_to_token(i)) == i where token_to_id exists."""
    tok = target.tokenizer()
    strings = [tok.id_to_token(i) for i in range(tok.vocab_size)]
    seen: dict[str, int] = {}
    for i, s in enumerate(strings):
        check(s not in seen, f"ids {seen.get(s)} and {i} share the token string {s!r}")
        seen[s] = i
    inverse = getattr(tok, "token_to_id", None)
    if inverse is None:
        skip_part(NotExposed("tokenizer", "no token_to_id: the inverse half (uniqueness was checked)"))
        return
    ids = data.draw(st.lists(st.integers(0, tok.vocab_size - 1), min_size=1, max_size=20), label="ids")
    text = data.draw(_text(), label="text")
    with contextlib.suppress(Refused):  # refused text adds no ids; an id outside [0, vocab_size) still fails
        ids += _encode(tok, text)
    for i in ids:
        j = inverse(strings[i])
        check(j == i, f"token_to_id(id_to_token({i}) = {strings[i]!r}) == {j}")


def _covering(tok: Tokenizer, ids: list[int], position: int) -> int:
    """Index of the token whose text covers character ``position`` (ASCII text before and at it)."""
    for k in range(len(ids)):
        if len(tok.decode(ids[:k + 1])) > position:
            return k
    raise AssertionError(f"the tokens {ids} decode to fewer than {position + 1} characters")


def _case_variants(word: str) -> list[str]:
    forms = [word, word.lower(), word.upper(), word.capitalize(), word.swapcase()]
    return list(dict.fromkeys(forms))


@claim("TOK-3", "Tokens are case-sensitive: \"The\" and \"the\" encode to different IDs.",
       source="tokens-as-directions §1.1", needs=("tokenizer",), kind="exact",
       tolerance="exact: id sequences",
       precise="for every word (the documents' and drawn letters), its case variants (lower, upper, capitalised, "
               "swapped) encode to pairwise different id sequences that decode to the exact variant (nothing folds "
               "case), and where two variants' first letters differ in case, the tokens carrying that letter differ: "
               "the capitalised word is a separate token, not a flag on the same one")
def tok_3(target: Target, data: st.DataObject) -> None:
    """Case variants of a word encode to distinct sequences; the tokens carrying a re-cased first letter differ."""
    tok = target.tokenizer()
    letters = st.text(st.characters(whitelist_categories=("Lu", "Ll")), min_size=1, max_size=8)
    word = data.draw(st.one_of(st.sampled_from(["The", *_WORDS]), letters), label="word")
    prefix = data.draw(st.sampled_from(["", " ", "Look: "]), label="prefix")
    encoded = {v: _encode(tok, prefix + v) for v in _case_variants(word)}
    for v, ids in encoded.items():
        check(tok.decode(ids) == prefix + v, f"{prefix + v!r} decodes back as {tok.decode(ids)!r}")
    items = list(encoded.items())
    for k, (v, ids) in enumerate(items):
        for w, jds in items[k + 1:]:
            check(ids != jds, f"{prefix + v!r} and {prefix + w!r} encode to the same ids {ids}")
            if v[0] != w[0] and v[0].lower() == w[0].lower() and v[0].isascii():
                i, j = _covering(tok, ids, len(prefix)), _covering(tok, jds, len(prefix))
                check(ids[i] != jds[j], f"in {prefix + v!r} and {prefix + w!r} the first letter is carried by the "
                                        f"same token {ids[i]} although it differs in case")


@claim("TOK-4", "The leading space belongs to the token: \" cat\" and \"cat\" encode differently.",
       source="tokens-as-directions §1.1", needs=("tokenizer",), kind="exact",
       tolerance="exact: id sequences and strings",
       precise="for the documents' words w (cat, next, storm, ...): encode(' ' + w) != encode(w); the first token of "
               "encode(' ' + w) decodes to a space followed by the start of w (the space is glued to the word, not a "
               "token of its own); and in running text ('... the cat') no token decodes to a lone space")
def tok_4(target: Target, data: st.DataObject) -> None:
    """' w' and 'w' differ; the token carrying w's first letter also carries the space before it."""
    tok = target.tokenizer()
    w = data.draw(st.sampled_from(_WORDS), label="word")
    bare, spaced = _encode(tok, w), _encode(tok, " " + w)
    check(bare != spaced, f"{' ' + w!r} and {w!r} encode to the same ids {bare}")
    first = tok.decode(spaced[:1])
    check(len(first) >= 2 and first[0] == " " and w.startswith(first[1:2]),
          f"the first token of {' ' + w!r} is {first!r}: the leading space is not part of the word's token")
    before = data.draw(st.sampled_from(["the", "I saw the", "The storm is", "a"]), label="before")
    ids = _encode(tok, f"{before} {w}")
    lone = [i for i in ids if tok.decode([i]) == " "]
    check(not lone, f"{before + ' ' + w!r} has a lone space token {lone}: spaces should ride on the next word")


@claim("TOK-5", "IDs carry no numeric meaning: relabelling the vocabulary by a permutation permutes the output "
                "distribution the same way and changes nothing else.",
       source="the-embedding \"From IDs to meaning\"", needs=("build",), kind="numeric",
       tolerance="residual states: exact (the relabelled model looks up the very same rows); logits: the target's "
                 "tolerance class (a permuted unembedding may be multiplied in another blocking)",
       precise="on a freshly built model, permute the rows of E, the columns of U and the entries of b by pi (token "
               "t becomes pi[t]; a tied U follows E), then feed pi[ids]: every residual state must be bit-identical "
               "and the logits must be the old logits with entry t moved to pi[t]. Any use of an id's numeric value "
               "(an id treated as padding, ids added to positions, a hard-coded special row) breaks it. The weights "
               "are edited through the built target's reference_model(), which must be its live model")
def tok_5(target: Target, data: st.DataObject) -> None:
    """logits'(pi[ids])[..., pi[t]] == logits(ids)[..., t] and residual states are unchanged after relabelling."""
    cfg = data.draw(built_configs(target, max_layers=1), label="config")
    sub = target.build(cfg, seed=data.draw(seeds, label="seed"))
    perm = data.draw(permutations(cfg.vocab_size), label="pi").to(sub.device)
    ids = data.draw(token_ids(cfg.vocab_size, max_len=8, batch=2, max_positions=cfg.max_positions),
                    label="ids").to(sub.device)
    model = live_model(sub)
    states = sub.residual_states(ids) if "residual_states" in sub.capabilities else None
    before = sub.logits(ids)
    inv = torch.argsort(perm)
    with torch.no_grad():
        model.embed.E.copy_(model.embed.E[inv].clone())
        if model.U is not None:
            model.U.copy_(model.U[:, inv].clone())
        if model.b_U is not None:
            model.b_U.copy_(model.b_U[inv].clone())
    new_ids = perm[ids]
    assert_close(sub.logits(new_ids), before[..., inv], CLASSES[sub.tolerance],
                 "logits of the relabelled model on relabelled ids vs the old logits relabelled")
    if states is not None:
        for i, (h_new, h_old) in enumerate(zip(sub.residual_states(new_ids), states, strict=True)):
            assert_equal(h_new, h_old, f"residual state {i} after relabelling")
