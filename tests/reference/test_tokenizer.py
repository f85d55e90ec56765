"""ByteBPETokenizer: losslessness, the vocab's shape, special tokens, training, and HF agreement.

One tokenizer is trained per module on the small English corpus below. The
HuggingFace tests train ``tokenizers``' own BPE on the same corpus, load its
``tokenizer.json`` with ``from_hf_tokenizer_json`` and require identical ids.
"""

from __future__ import annotations

import itertools
import json
import random
import time
import weakref
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import regex
from hypothesis import example, given, settings
from hypothesis import strategies as st

import reference.tokenizer as tokenizer_module
from reference.tokenizer import (
    BYTE_TO_CHAR,
    GPT2_PATTERN,
    LLAMA3_PATTERN,
    SMOLLM_PATTERN,
    ByteBPETokenizer,
    bytes_to_token,
    split_isolated,
    token_to_bytes,
)

EOT = "<|endoftext|>"
PAD = "<|pad|>"

CORPUS = """\
The cat sat on the mat. The dog sat on the log. the cat and the dog are friends.
The storm is coming, said the cat. The storm is here, said the dog.
cat: a small animal that likes the sun. dog: a loyal animal that likes the park.
(cat) and (dog) and (bird); cat, dog, bird.
Then the cat went to the kitchen, where the milk was. The milk was cold.
They say the cat is the king of the house. The king of the house is the cat!
I'm sure you're right; we've seen it, they'll agree, and she'd say it's true.
In 2024 there were 365 days, 52 weeks and 12 months; in 2023, 365 days too.
The numbers 1, 2, 3, 10, 100 and 1000 show how digits group into tokens.
Prices: $3.50, $12.99 and $100.00 -- about 3.14 or 2.718 in other units.
def tokenize(text):
    words = text.split()
    return [word.lower() for word in words]

for i in range(10):
    print(i, i * i)  # squares

if x == 1 and y != 2:
    return {"key": "value", "list": [1, 2, 3]}
Caf\u00e9, na\u00efve, r\u00e9sum\u00e9, Stra\u00dfe, \u00fcber, ni\u00f1o: accents are bytes too.
\u65e5\u672c\u8a9e\u306e\u6587\u7ae0\u3002\u4e2d\u6587\u7684\u53e5\u5b50\u3002\u65e5\u672c\u8a9e\u3068\u4e2d\u6587\u3002
Emoji: \U0001f600 \U0001f600 \U0001f431 \U0001f431 \U0001f436 \U0001f436 \u2764\ufe0f \u2764\ufe0f
A tokenizer turns text into tokens, and tokens into numbers. The numbers are ids.
Every token has one id, and every id has one token: the vocabulary is one-to-one.
The model never sees the letters; it sees the ids, and looks each id up in a table.
Spaces belong to the word after them, so " cat" and "cat" are different tokens.
Capital letters matter as well: "The" and "the" are two different tokens.
THE END OF THE STORY IS NOT THE END OF THE BOOK.
	Tabs	and  double  spaces   and    runs     of      spaces stay as they are.
Lines end with newlines; some end with two.

Some text after a blank line, and some more text after it.
"""


TEXT_CHARS = st.characters(exclude_categories=["Cs"])  # lone surrogates have no UTF-8 encoding
# For comparisons with HF: characters assigned in this interpreter's Unicode database
# (14.0 on Python 3.11). HF `tokenizers` matches its regexes with Oniguruma (Unicode
# 16), the reference with the `regex` module (Unicode 17), so the two classify the
# code points first assigned in Unicode 17 differently (a letter in one, unassigned
# in the other). A scan of every code point in several contexts found no other
# disagreement, for all three patterns; leaving out what this interpreter calls
# unassigned ("Cn", a superset of the Unicode 17 additions) removes only that skew.
ASSIGNED_CHARS = st.characters(exclude_categories=["Cs", "Cn"])
FRAGMENTS = [
    "The", "the", " cat", "cat", " The", "THE", "'s", "'S", "'ll", "'LL", "'ve", "'\u017f", "don't",
    "0", "7", "42", "123", "2024", "3.14", "1,000", " 12345", "  99",
    " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u00a0", "\u3000", "\u2028",
    "def f(x):", "    return x", "[1, 2]", "{'a': 1}", "==", "!=", "->", "//", "#", "$", "...", "\u2014",
    "\U0001f600", "\U0001f431", "\u2764\ufe0f", "\U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\u65e5\u672c\u8a9e", "\u4e2d\u6587", "caf\u00e9", "cafe\u0301", "\u0645\u0631\u062d\u0628\u0627",
    "\x00", "\x7f",
]
FRAGMENT_OR_CHARS = st.sampled_from(FRAGMENTS) | st.text(ASSIGNED_CHARS, max_size=3)
CODE_LIKE = st.lists(FRAGMENT_OR_CHARS, max_size=25).map("".join)
HF_TEXT = st.text(ASSIGNED_CHARS, max_size=60) | CODE_LIKE

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True)


def _byte_vocab() -> dict[str, int]:
    """The 256 byte tokens alone, ids in byte order."""
    return {c: b for b, c in enumerate(BYTE_TO_CHAR)}


@pytest.fixture(scope="module")
def tok() -> ByteBPETokenizer:
    return ByteBPETokenizer.train([CORPUS], vocab_size=500, special_tokens=[EOT, PAD])


# ----------------------------------------------------------------- TOK-1 round trip


@PROPERTY
@given(text=st.text(TEXT_CHARS))
@example(text="")
@example(text="Hello, world! \U0001f600\U0001f431 \u65e5\u672c\u8a9e \u4e2d\u6587 \ud55c\uad6d\uc5b4")
@example(text="\U0001f468\u200d\U0001f469\u200d\U0001f467 family, \u2764\ufe0f, flags \U0001f1ef\U0001f1f5")
@example(text="   leading and trailing   \t\t\n\n\r\n  ")
@example(text="\x00\x01\x1b[0m\x7f\x85\u200b\ufeff control and invisible")
@example(text="caf\u00e9 vs cafe\u0301 (composed vs combining)")
@example(text="\U0010ffff\U000e0001 planes 16 and 14")
def test_decode_inverts_encode(tok: ByteBPETokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


@PROPERTY
@given(parts=st.lists(st.sampled_from([EOT, PAD, "<|", "|>", "endoftext"]) | st.text(TEXT_CHARS, max_size=8)))
def test_round_trip_with_special_tokens(tok: ByteBPETokenizer, parts: list[str]) -> None:
    text = "".join(parts)
    ids = tok.encode(text, allow_special=True)
    assert tok.decode(ids) == text
    assert ids.count(tok.token_to_id(EOT)) == text.count(EOT)


def test_lone_surrogates_are_rejected_with_a_clear_error(tok: ByteBPETokenizer) -> None:
    with pytest.raises(ValueError, match=r"lone surrogate '\\ud800' at index 2"):
        tok.encode("ab\ud800cd")


def test_ids_that_split_a_character_decode_with_replacement(tok: ByteBPETokenizer) -> None:
    ids = tok.encode("\U0001f600")  # four UTF-8 bytes
    assert tok.decode(ids[:-1]) == "\ufffd"
    assert tok.decode([tok.token_to_id(BYTE_TO_CHAR[0x80])]) == "\ufffd"  # a lone continuation byte


# ------------------------------------------------------------- TOK-2 one-to-one vocab


def test_vocab_is_one_to_one(tok: ByteBPETokenizer) -> None:
    tokens = [tok.id_to_token(i) for i in range(tok.vocab_size)]
    assert len(set(tokens)) == tok.vocab_size
    assert all(tok.token_to_id(t) == i for i, t in enumerate(tokens))
    ordinary = [tok.token_bytes(i) for i in range(tok.vocab_size) if tokens[i] not in tok.special_tokens]
    assert len(set(ordinary)) == len(ordinary)  # the byte alphabet is a bijection too


def test_training_layout_bytes_then_merges_then_specials(tok: ByteBPETokenizer) -> None:
    assert [tok.token_bytes(i) for i in range(256)] == [bytes([b]) for b in range(256)]
    assert tok.special_tokens == {EOT: tok.vocab_size - 2, PAD: tok.vocab_size - 1}
    for rank, (a, b) in enumerate(tok.merges):
        assert tok.token_to_id(a + b) == 256 + rank  # each merge made a new token, in order
    assert tok.vocab_size == 256 + len(tok.merges) + 2


def test_lookups_reject_unknown_tokens_and_ids(tok: ByteBPETokenizer) -> None:
    with pytest.raises(ValueError, match="token: 'no such token' is not in the vocabulary"):
        tok.token_to_id("no such token")
    v = tok.vocab_size
    with pytest.raises(ValueError, match=rf"i: token id {v} is outside .*\[0, {v}\)"):
        tok.id_to_token(v)
    with pytest.raises(ValueError, match=r"i: token id -1 is outside"):
        tok.token_bytes(-1)


# --------------------------------------------------- TOK-3 case and TOK-4 leading space


def test_case_matters(tok: ByteBPETokenizer) -> None:
    upper, lower = tok.token_to_id("The"), tok.token_to_id("the")  # both are real vocab tokens
    assert upper != lower
    assert tok.encode("The") == [upper]
    assert tok.encode("the") == [lower]
    assert tok.encode("The cat") != tok.encode("the cat")


def test_leading_space_belongs_to_the_token(tok: ByteBPETokenizer) -> None:
    spaced, bare = tok.token_to_id("Ġcat"), tok.token_to_id("cat")  # " cat" and "cat"
    assert spaced != bare
    assert tok.encode("cat") == [bare]
    assert tok.encode(" cat") == [spaced]
    assert tok.encode("the cat") == [tok.token_to_id("the"), spaced]
    assert tok.decode([spaced]) == " cat"


# ----------------------------------------------------------------------- special tokens


def test_special_tokens_are_matched_only_when_allowed(tok: ByteBPETokenizer) -> None:
    eot = tok.token_to_id(EOT)
    text = f"the end{EOT}The start"
    allowed = tok.encode(text, allow_special=True)
    assert allowed == [*tok.encode("the end"), eot, *tok.encode("The start")]
    plain = tok.encode(text)
    assert eot not in plain
    assert len(plain) > len(allowed)
    assert tok.decode(plain) == tok.decode(allowed) == text


def test_special_tokens_longest_match_wins() -> None:
    tok = ByteBPETokenizer(_byte_vocab(), [], {"<a>": 256, "<a><b>": 257})
    assert tok.encode("<a><b><a>", allow_special=True) == [257, 256]
    table = tok.special_tokens
    table.clear()  # a copy: the tokenizer keeps its own table
    assert tok.special_tokens == {"<a>": 256, "<a><b>": 257}
    assert tok.vocab_size == 258


# ----------------------------------------------------------------------------- training


def naive_train(corpus: list[str], vocab_size: int, pattern: str = GPT2_PATTERN) -> list[tuple[bytes, bytes]]:
    """Textbook BPE: recount every pair from scratch before each merge (slow, obviously right)."""
    compiled = regex.compile(pattern)
    words = Counter(piece.encode() for text in corpus for piece in split_isolated(compiled, text))
    seqs = {w: [bytes([b]) for b in w] for w in words}
    vocab = {bytes([b]) for b in range(256)}
    merges: list[tuple[bytes, bytes]] = []
    while len(vocab) < vocab_size:
        counts: Counter[tuple[bytes, bytes]] = Counter()
        for w, seq in seqs.items():
            for pair in itertools.pairwise(seq):
                counts[pair] += words[w]
        if not counts or max(counts.values()) < 2:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        vocab.add(best[0] + best[1])
        for w, seq in seqs.items():
            out, i = [], 0
            while i < len(seq):
                if seq[i : i + 2] == list(best):
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            seqs[w] = out
    return merges


@PROPERTY
@given(
    corpus=st.lists(st.text(st.sampled_from("ab c\n1é"), max_size=40), min_size=1, max_size=5),
    extra=st.integers(0, 40),
)
@example(corpus=["aaaa aaaa aaa"], extra=10)
@example(corpus=["ab ab ab cd cd cd"], extra=10)
def test_training_matches_textbook_bpe(corpus: list[str], extra: int) -> None:
    trained = ByteBPETokenizer.train(corpus, vocab_size=256 + extra)
    merges = [(token_to_bytes(a), token_to_bytes(b)) for a, b in trained.merges]
    assert merges == naive_train(corpus, 256 + extra)
    for text in corpus:
        assert trained.decode(trained.encode(text)) == text


def test_training_ties_go_to_the_smallest_pair() -> None:
    trained = ByteBPETokenizer.train(["xy xy ab ab"], vocab_size=257)
    assert trained.merges == [("Ġ", "a")]  # (Ġ,a), (Ġ,x), (a,b), (x,y) all occur twice; b" " < b"a" < b"x"


def test_training_stops_when_no_pair_repeats() -> None:
    trained = ByteBPETokenizer.train(["abc xyz"], vocab_size=1000, special_tokens=[EOT])
    assert trained.merges == []
    assert trained.vocab_size == 257
    assert trained.special_tokens == {EOT: 256}


def test_training_ignores_special_tokens_in_the_corpus() -> None:
    trained = ByteBPETokenizer.train([f"{EOT}{EOT}{EOT}ab"], vocab_size=300, special_tokens=[EOT])
    assert trained.merges == []  # without the split, "<|", "|>", "endoftext" pairs would repeat


def test_training_is_fast_enough() -> None:
    rng = random.Random(0)  # 50 KB of made-up words: varied enough that 744 merges all repeat
    syllables = ["ka", "ri", "to", "men", "sa", "lo", "ve", "dun", "pi", "gor", "e", "a", "th", "str"]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(3000)]
    corpus = " ".join(rng.choice(words) + rng.choice(["", "", "", ",", "."]) for _ in range(10_000))[:50_000]
    start = time.perf_counter()
    trained = ByteBPETokenizer.train([corpus], vocab_size=1000)
    assert time.perf_counter() - start < 5.0
    assert trained.vocab_size == 1000


def test_train_rejects_a_vocab_smaller_than_the_byte_alphabet_plus_specials() -> None:
    with pytest.raises(ValueError, match=r"vocab_size must be at least 258 .* got 257"):
        ByteBPETokenizer.train([CORPUS], vocab_size=257, special_tokens=[EOT, PAD])
    with pytest.raises(ValueError, match=r"vocab_size must be at least 256"):
        ByteBPETokenizer.train([CORPUS], vocab_size=10)
    with pytest.raises(ValueError, match="special_tokens must be distinct"):
        ByteBPETokenizer.train([CORPUS], vocab_size=300, special_tokens=[EOT, EOT])


# -------------------------------------------------------------------- bad inputs


def test_decode_rejects_out_of_range_ids(tok: ByteBPETokenizer) -> None:
    v = tok.vocab_size
    with pytest.raises(ValueError, match=rf"ids: token id {v} is outside the vocabulary range \[0, {v}\)"):
        tok.decode([1, 2, v])
    with pytest.raises(ValueError, match=rf"ids: token id -1 is outside the vocabulary range \[0, {v}\)"):
        tok.decode([-1])


def _with(vocab: dict[str, int], **extra: int) -> dict[str, int]:
    return {**vocab, **extra}


INVALID: list[tuple[str, Callable[[], ByteBPETokenizer], str]] = [
    ("duplicate id", lambda: ByteBPETokenizer(_with(_byte_vocab(), ab=5), [("a", "b")]), "vocab"),
    ("gap in ids", lambda: ByteBPETokenizer(_with(_byte_vocab(), ab=300), [("a", "b")]), "vocab"),
    ("missing byte", lambda: ByteBPETokenizer({c: i for i, c in enumerate(BYTE_TO_CHAR[1:])}, []), "vocab"),
    ("not byte alphabet", lambda: ByteBPETokenizer(_with(_byte_vocab(), **{"a b": 256}), []), "vocab"),
    ("merge part missing", lambda: ByteBPETokenizer(_with(_byte_vocab(), ab=256), [("ab", "c")]), "merges"),
    ("merge result missing", lambda: ByteBPETokenizer(_byte_vocab(), [("a", "b")]), "merges"),
    ("merge repeated", lambda: ByteBPETokenizer(_with(_byte_vocab(), ab=256), [("a", "b")] * 2), "merges"),
    ("special id clash", lambda: ByteBPETokenizer(_byte_vocab(), [], {EOT: 3}), "vocab"),
    ("special id gap", lambda: ByteBPETokenizer(_byte_vocab(), [], {EOT: 257}), "vocab"),
    ("special is vocab", lambda: ByteBPETokenizer(_byte_vocab(), [], {"a": 256}), "special_tokens"),
    ("empty special", lambda: ByteBPETokenizer(_byte_vocab(), [], {"": 256}), "special_tokens"),
    ("surrogate special", lambda: ByteBPETokenizer(_byte_vocab(), [], {"\ud800": 256}), "special_tokens"),
    ("surrogate corpus", lambda: ByteBPETokenizer.train(["ok \udfff"], 300), "corpus"),
    ("id not an int", lambda: ByteBPETokenizer(_with(_byte_vocab(), ab="256"), [("a", "b")]), "vocab"),  # type: ignore[arg-type]
    ("merge not a pair", lambda: ByteBPETokenizer(_byte_vocab(), [("a", "b", "c")]), "merges"),  # type: ignore[list-item]
    ("bad pattern", lambda: ByteBPETokenizer(_byte_vocab(), [], pattern="(unclosed"), "pattern"),
    ("bad train pattern", lambda: ByteBPETokenizer.train(["x"], 300, pattern="[z-a]"), "pattern"),
]


@pytest.mark.parametrize(("build", "name"), [(b, n) for _, b, n in INVALID], ids=[i for i, _, _ in INVALID])
def test_constructor_validation_names_the_parameter(build: Callable[[], ByteBPETokenizer], name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        build()


def test_valid_hand_built_tokenizer() -> None:
    vocab, merges = _with(_byte_vocab(), ab=256, abc=257), [("a", "b"), ("ab", "c")]
    tok = ByteBPETokenizer(vocab, merges, {EOT: 258})
    assert tok.encode("abcab") == [257, 256]
    assert tok.vocab_size == 259
    assert "vocab_size=259" in repr(tok)
    same = ByteBPETokenizer.from_vocab_and_merges(vocab, merges, {EOT: 258})
    assert same.vocab == tok.vocab and same.merges == tok.merges == merges


def test_lowest_rank_merges_first_one_occurrence_at_a_time() -> None:
    # "abc" is made by two merges; rank 1 uses it before rank 2 can fire on the second "ab c".
    vocab = _with(_byte_vocab(), ab=256, bc=257, abc=258, abcab=259)
    merges = [("a", "b"), ("abc", "ab"), ("ab", "c"), ("b", "c")]
    tok = ByteBPETokenizer(vocab, merges)
    assert tok.encode("abcabc") == [259, tok.token_to_id("c")]  # HF/tiktoken order, not "merge all (ab, c)"


def test_word_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokenizer_module, "_CACHE_LIMIT", 2)
    tok = ByteBPETokenizer.train([CORPUS], vocab_size=300)
    text = "the cat and the dog and a bird"
    assert tok.encode(text) == tok.encode(text)
    assert len(tok._cache) <= 2
    assert tok.decode(tok.encode(text)) == text


def test_byte_alphabet_helpers() -> None:
    assert bytes_to_token(b" \n\x00a\xff") == "\u0120\u010a\u0100a\u00ff"
    assert token_to_bytes(bytes_to_token(bytes(range(256)))) == bytes(range(256))
    with pytest.raises(ValueError, match="not in the byte alphabet"):
        token_to_bytes("a b")


def test_patterns() -> None:
    def pieces(pattern: str, text: str) -> list[str]:
        return split_isolated(regex.compile(pattern), text)

    gpt2 = ["The", " cat", "'s", " 2024", " pets", "!!", " ", " ok"]
    assert pieces(GPT2_PATTERN, "The cat's 2024 pets!!  ok") == gpt2
    assert pieces(SMOLLM_PATTERN, "in 2024  7") == ["in", " ", "2", "0", "2", "4", "  ", "7"]
    llama3 = ["in", " ", "123", "45", " CAT", "'S", "\n\n", "x"]
    assert pieces(LLAMA3_PATTERN, "in 12345 CAT'S\n\nx") == llama3
    assert pieces("a", "banana") == ["b", "a", "n", "a", "n", "a"]  # gaps are kept: nothing is lost
    assert pieces("x*", "axxbx c") == ["a", "xx", "b", "x", " c"]  # empty matches are skipped


# ------------------------------------------------------------- HuggingFace agreement

HF_PATTERNS = {"gpt2": GPT2_PATTERN, "smollm": SMOLLM_PATTERN, "llama3": LLAMA3_PATTERN}
HFPair = tuple[Any, ByteBPETokenizer]  # (tokenizers.Tokenizer, the same file loaded here)


def _train_hf(kind: str, tmp: Path) -> tuple[Any, Path]:
    """Train a `tokenizers` byte-level BPE with the given pre-tokenizer and save its tokenizer.json."""
    tk = pytest.importorskip("tokenizers")
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers

    hf = tk.Tokenizer(models.BPE())
    if kind == "gpt2":
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    elif kind == "smollm":
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
    else:
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=[EOT, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator([CORPUS], trainer)
    path = tmp / f"{kind}-tokenizer.json"
    hf.save(str(path))
    return hf, path


@pytest.fixture(scope="module", params=sorted(HF_PATTERNS))
def hf_pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> HFPair:
    hf, path = _train_hf(request.param, tmp_path_factory.mktemp("hf"))
    return hf, ByteBPETokenizer.from_hf_tokenizer_json(path)


@pytest.mark.hf
@pytest.mark.parametrize(("kind", "pattern"), sorted(HF_PATTERNS.items()))
def test_hf_pre_tokenizer_selects_the_pattern(kind: str, pattern: str, tmp_path: Path) -> None:
    _, path = _train_hf(kind, tmp_path)
    loaded = ByteBPETokenizer.from_hf_tokenizer_json(path)
    assert loaded.pattern == pattern
    assert loaded.special_tokens == {EOT: 0, PAD: 1}  # the HF trainer puts specials first


@pytest.mark.hf
@PROPERTY
@given(text=HF_TEXT)
@example(text="The cat sat on the mat. the cat\n\n  The storm is  coming 2024!")
@example(text="\U0001f600\U0001f431 \u65e5\u672c\u8a9e\u306e\u6587\u7ae0 caf\u00e9 cafe\u0301 \u2764\ufe0f")
@example(text="x  123   4567\t\t89 \u0661\u0662\u0663 \u00bd")
@example(text="I'M sure YOU'RE right 'S 'ſ 'LL don't")
@example(text="def f(x):\n    return {'a': [1, 2]}  # 3.14\r\n")
def test_hf_encode_and_decode_agree(hf_pair: HFPair, text: str) -> None:
    hf, tok = hf_pair
    ids = tok.encode(text)
    assert ids == hf.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=False) == text


@pytest.mark.hf
@PROPERTY
@given(parts=st.lists(st.sampled_from([EOT, PAD, "<|", " ", "the"]) | st.text(ASSIGNED_CHARS, max_size=6)))
def test_hf_special_tokens_agree(hf_pair: HFPair, parts: list[str]) -> None:
    hf, tok = hf_pair
    text = "".join(parts)
    ids = tok.encode(text, allow_special=True)  # HF always splits added tokens out of the text
    assert ids == hf.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=False) == text


@pytest.mark.hf
@PROPERTY
@given(data=st.data())
def test_hf_decode_of_arbitrary_ids_agrees(hf_pair: HFPair, data: st.DataObject) -> None:
    hf, tok = hf_pair
    ids = data.draw(st.lists(st.integers(0, tok.vocab_size - 1), max_size=12))
    assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=False)  # invalid UTF-8 -> U+FFFD alike


def _load_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@pytest.mark.hf
def test_hf_merges_in_string_form_load_the_same(tmp_path: Path) -> None:
    _, path = _train_hf("gpt2", tmp_path)
    data = _load_json(path)
    data["model"]["merges"] = [f"{a} {b}" for a, b in data["model"]["merges"]]  # the older file format
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data), encoding="utf-8")
    a, b = ByteBPETokenizer.from_hf_tokenizer_json(path), ByteBPETokenizer.from_hf_tokenizer_json(old)
    assert a.merges == b.merges and a.vocab == b.vocab
    assert a.encode(CORPUS) == b.encode(CORPUS)


@pytest.mark.hf
@pytest.mark.parametrize("ignore_merges", [False, True])
def test_hf_ignore_merges_agrees(ignore_merges: bool, tmp_path: Path) -> None:
    tk = pytest.importorskip("tokenizers")
    _, path = _train_hf("gpt2", tmp_path)
    data = _load_json(path)
    word = bytes_to_token(b" zyzzyva")  # a whole-word token that no merge chain builds
    data["model"]["vocab"][word] = len(data["model"]["vocab"])
    data["model"]["ignore_merges"] = ignore_merges
    path.write_text(json.dumps(data), encoding="utf-8")
    hf, tok = tk.Tokenizer.from_file(str(path)), ByteBPETokenizer.from_hf_tokenizer_json(path)
    for text in ["a zyzzyva", "zyzzyva", " zyzzyva zyzzyvas", CORPUS]:
        assert tok.encode(text) == hf.encode(text, add_special_tokens=False).ids
    assert (tok.encode(" zyzzyva") == [tok.token_to_id(word)]) == ignore_merges


def _edit(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(data))
    node = out
    *parents, last = key.split(".")
    for p in parents:
        node = node[p]
    node[last] = value
    return out


UNREPRODUCIBLE = [
    ("model.type", "WordPiece", "only 'BPE'"),
    ("model.dropout", 0.1, "dropout"),
    ("model.vocab", ["a"], "model.vocab is missing"),
    ("model.continuing_subword_prefix", "##", "continuing_subword_prefix"),
    ("normalizer", {"type": "NFC"}, "normalizer 'NFC' cannot be reproduced"),
    ("decoder", {"type": "WordPiece", "prefix": "##", "cleanup": True}, "decoder 'WordPiece'"),
    ("pre_tokenizer", {"type": "Whitespace"}, "not byte-level"),
    ("pre_tokenizer.add_prefix_space", True, "add_prefix_space"),
    ("pre_tokenizer.use_regex", False, "cannot be reproduced exactly"),
    (
        "pre_tokenizer",
        {"type": "Sequence", "pretokenizers": [{"type": "Digits"}, {"type": "ByteLevel"}]},
        "cannot be reproduced exactly",
    ),
    (
        "pre_tokenizer",
        {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Removed", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False},
            ],
        },
        "cannot be reproduced exactly",
    ),
    ("added_tokens.0.lstrip", True, "lstrip"),
    ("model.merges", [["a", "b", "c"]], "path: merge .* is not a pair"),
    ("model.merges", ["a b c"], "path: merge .* is not a pair"),
]


def test_a_tokenizer_json_that_is_not_one_is_named_without_hanging(tmp_path: Path) -> None:
    """Issue #14 audit: a FIFO blocked the reader for ever; bad JSON was a bare JSONDecodeError, a JSON list an
    AttributeError. Each is now a ValueError naming the file (a missing one stays FileNotFoundError)."""
    import os

    cases: list[tuple[Path, str]] = [(tmp_path, "not a regular file")]
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.json")
        cases.append((tmp_path / "fifo.json", "not a regular file"))
    for name, data, words in (("cut.json", b'{"model": ', "not a UTF-8 JSON tokenizer file"),
                              ("latin1.json", b'{"a": "\xff"}', "not a UTF-8 JSON tokenizer file"),
                              ("list.json", b"[1, 2]", "a JSON list")):
        (tmp_path / name).write_bytes(data)
        cases.append((tmp_path / name, words))
    for path, words in cases:
        with pytest.raises(ValueError, match=rf"^path: '{regex.escape(str(path))}' (is |holds )?{words}"):
            ByteBPETokenizer.from_hf_tokenizer_json(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ByteBPETokenizer.from_hf_tokenizer_json(tmp_path / "gone.json")


@pytest.mark.hf
@pytest.mark.parametrize(("key", "value", "message"), UNREPRODUCIBLE, ids=[k for k, _, _ in UNREPRODUCIBLE])
def test_hf_files_that_cannot_be_reproduced_are_rejected(
    key: str, value: Any, message: str, tmp_path: Path
) -> None:
    _, path = _train_hf("gpt2", tmp_path)
    data = _load_json(path)
    if key.startswith("added_tokens."):
        data["added_tokens"][0]["lstrip"] = value
    else:
        data = _edit(data, key, value)
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        ByteBPETokenizer.from_hf_tokenizer_json(path)



# ------------------------------------------------- merge order: heap against the textbook loop


def textbook_merge(data: bytes, rank: dict[tuple[str, str], int]) -> list[str]:
    """The merge loop the tokenizer used before its heap (an independent oracle, on token strings).

    After every merge, rescan all adjacent pairs and fuse the lowest-ranked one, leftmost
    on ties: O(n^2) per word, but obviously right. ``rank`` maps each merge to its index.
    """
    symbols = [BYTE_TO_CHAR[b] for b in data]
    while True:
        found = [(rank[pair], i) for i, pair in enumerate(itertools.pairwise(symbols)) if pair in rank]
        if not found:
            return symbols
        _, i = min(found)
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]


def textbook_encode(tok: ByteBPETokenizer, text: str) -> list[int]:
    """Pre-tokenize with the tokenizer's pattern, then merge each piece with :func:`textbook_merge`."""
    pieces = split_isolated(regex.compile(tok.pattern), text)
    if tok not in _RANKS:
        _RANKS[tok] = {pair: r for r, pair in enumerate(tok.merges)}
    return [tok.token_to_id(s) for piece in pieces for s in textbook_merge(piece.encode("utf-8"), _RANKS[tok])]


_RANKS: weakref.WeakKeyDictionary[ByteBPETokenizer, dict[tuple[str, str], int]] = weakref.WeakKeyDictionary()


@st.composite
def merge_lists(draw: st.DrawFn) -> list[tuple[str, str]]:
    """Random merge lists over the letters a, b, c: merged tokens take part in later (and earlier-ranked) merges."""
    tokens, merges = ["a", "b", "c"], []
    for _ in range(draw(st.integers(1, 25))):
        pair = (draw(st.sampled_from(tokens)), draw(st.sampled_from(tokens)))
        if pair not in merges:
            merges.append(pair)
            if pair[0] + pair[1] not in tokens:
                tokens.append(pair[0] + pair[1])
    return draw(st.permutations(merges))  # any rank order, even one where a merge needs a later one's result


@settings(max_examples=300, deadline=None, derandomize=True)
@given(merges=merge_lists(), words=st.lists(st.text("abc", max_size=40), min_size=1, max_size=5))
@example(merges=[("a", "b"), ("abc", "ab"), ("ab", "c"), ("b", "c")], words=["abcabc"])
@example(merges=[("a", "a")], words=["aaaaa"])
def test_heap_merges_equal_the_textbook_loop(merges: list[tuple[str, str]], words: list[str]) -> None:
    vocab = _byte_vocab()
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = ByteBPETokenizer(vocab, merges)
    for word in words:
        assert tok.encode(word) == textbook_encode(tok, word), word


@PROPERTY
@given(text=st.text(TEXT_CHARS, max_size=80) | CODE_LIKE)
@example(text=CORPUS)
def test_trained_tokenizer_merges_equal_the_textbook_loop(tok: ByteBPETokenizer, text: str) -> None:
    assert tok.encode(text) == textbook_encode(tok, text)


def test_long_words_encode_in_near_linear_time() -> None:
    """A 100 KB single word completes (the textbook loop takes minutes); no timing is asserted here."""
    vocab, merges = _with(_byte_vocab(), ab=256, abab=257), [("a", "b"), ("ab", "ab")]
    tok = ByteBPETokenizer(vocab, merges)
    assert tok.encode("ab" * 50_000) == [257] * 25_000  # 50,000 "ab", then paired leftmost first
    assert tok.encode("ab" * 50_000 + "a") == [257] * 25_000 + [ord("a")]
    assert tok.encode("b" + "ab" * 50_000) == [ord("b")] + [257] * 25_000


def test_a_100_kb_word_encodes_within_a_deadline(tok: ByteBPETokenizer) -> None:
    """Issue #14: the merge loop was quadratic in a word's length (32 KB took 98 s, so 100 KB ~15 min); now ~0.5 s.
    Run in a thread so that a regression fails here after DEADLINE seconds instead of holding up CI for minutes."""
    import threading

    deadline = 60.0  # ~100x the measured time, for a loaded CI machine
    word, done = "the" * 33_334, []
    worker = threading.Thread(target=lambda: done.append(tok.encode(word)), daemon=True)
    worker.start()
    worker.join(deadline)
    assert done, f"encoding one 100 KB word took more than {deadline:.0f} s: the merges are no longer O(n log n)"
    assert tok.decode(done[0]) == word


def test_long_words_on_a_trained_vocabulary(tok: ByteBPETokenizer) -> None:
    word = "the" * 33_334  # 100 KB, one pre-token piece
    ids = tok.encode(word)
    assert tok.decode(ids) == word
    assert ids[:300] == textbook_encode(tok, word[:900])[:300]  # the textbook loop on a prefix it can manage
    assert word not in tok._cache  # words longer than _CACHE_MAX_WORD are not remembered: memory stays bounded


# ----------------------------------------------------------------- argument types


@pytest.mark.parametrize("text", [b"abc", None, 42, ["a"]], ids=["bytes", "None", "int", "list"])
def test_encode_rejects_non_str_with_a_type_error(tok: ByteBPETokenizer, text: Any) -> None:
    with pytest.raises(TypeError, match=rf"^text: expected a str, got {type(text).__name__}"):
        tok.encode(text)


def test_encode_of_bytes_says_how_to_fix_it(tok: ByteBPETokenizer) -> None:
    with pytest.raises(TypeError, match=r"decode bytes to str first"):
        tok.encode(b"abc")  # type: ignore[arg-type]


@pytest.mark.parametrize(("ids", "shown"), [([1, 2.0], "2.0"), ([1, "a"], "'a'"), ([None], "None")])
def test_decode_rejects_non_integer_ids_naming_them(tok: ByteBPETokenizer, ids: list[Any], shown: str) -> None:
    v = tok.vocab_size
    position = len(ids) - 1
    with pytest.raises(TypeError, match=rf"^ids: token id {regex.escape(shown)} is a \w+, not an int; token ids "
                                        rf"are ints in \[0, {v}\) \(position {position} of ids\)"):
        tok.decode(ids)


@pytest.mark.parametrize("ids", [None, "abc", 3])
def test_decode_rejects_a_non_sequence(tok: ByteBPETokenizer, ids: Any) -> None:
    with pytest.raises(TypeError, match=rf"^ids: expected a sequence of int token ids in \[0, {tok.vocab_size}\)"):
        tok.decode(ids)


def test_decode_accepts_integer_like_ids(tok: ByteBPETokenizer) -> None:
    import numpy as np
    import torch

    ids = tok.encode("the cat")
    assert tok.decode(np.array(ids)) == tok.decode(torch.tensor(ids)) == "the cat"
    with pytest.raises(TypeError, match="not an int"):
        tok.decode(torch.tensor(ids, dtype=torch.float32))
    with pytest.raises(ValueError, match=rf"token id {tok.vocab_size} is outside .* \(position 1 of ids\)"):
        tok.decode([0, tok.vocab_size])


def test_lookups_name_a_non_integer_id(tok: ByteBPETokenizer) -> None:
    with pytest.raises(TypeError, match=r"^i: token id '3' is a str, not an int"):
        tok.id_to_token("3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^i: token id 1.5 is a float, not an int"):
        tok.token_bytes(1.5)  # type: ignore[arg-type]


# ------------------------------------------- SmolLM2: byte tokens its vocabulary lacks

SMOLLM2_LACKS = [0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xC0, 0xC1, 0xF1, 0xF2, *range(0xF5, 0x100)]


@pytest.fixture(scope="module")
def smollm2_file(smollm2_gguf: Path) -> Any:
    pytest.importorskip("gguf")
    from reference.convert import gguf

    return gguf.read(smollm2_gguf)


@pytest.fixture(scope="module")
def smollm2_tok(smollm2_file: Any) -> ByteBPETokenizer:
    from reference.convert import gguf

    return gguf.gguf_tokenizer(smollm2_file)


@pytest.fixture(scope="module")
def smollm2_hf(smollm2_file: Any) -> Any:
    pytest.importorskip("transformers")
    from spec.targets import smollm2

    return smollm2.hf_tokenizer(smollm2_file.path)


def _text_needing(byte: int) -> str | None:
    """A character whose UTF-8 starts with ``byte``, or None for the bytes this test does not cover."""
    if byte < 0x80:
        return chr(byte)
    if byte in (0xF1, 0xF2):
        return chr((byte - 0xF0) << 18)  # U+40000 / U+80000: four bytes, this lead byte, then 0x80 0x80 0x80
    return None


def test_smollm2_lacks_21_byte_tokens(smollm2_tok: ByteBPETokenizer) -> None:
    vocab = smollm2_tok.vocab
    assert [b for b in range(256) if BYTE_TO_CHAR[b] not in vocab] == SMOLLM2_LACKS
    # 0xc0, 0xc1 and 0xf5..0xff are in no character's UTF-8: only 8 of the 21 can be needed by text
    every_char = "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, 0x110000)))  # no surrogates
    reachable = set(every_char.encode("utf-8"))
    assert [b for b in SMOLLM2_LACKS if b in reachable] == SMOLLM2_NEEDED


def test_smollm2_gguf_declares_an_unknown_token_that_is_end_of_text(smollm2_file: Any) -> None:
    assert smollm2_file.get("tokenizer.ggml.unknown_token_id") == 0
    assert smollm2_file.get("tokenizer.ggml.tokens")[0] == "<|endoftext|>"


SMOLLM2_NEEDED = [0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xF1, 0xF2]  # the lacking bytes some str's UTF-8 contains


@pytest.mark.hf
@pytest.mark.parametrize("byte", SMOLLM2_NEEDED, ids=[f"0x{b:02x}" for b in SMOLLM2_NEEDED])
def test_smollm2_raises_where_transformers_drops_silently(
    smollm2_tok: ByteBPETokenizer, smollm2_hf: Any, byte: int
) -> None:
    """transformers' tokenizer of the same GGUF drops the byte (never its unk id 0): we raise, naming the character.

    The other 13 lacking bytes are in no str's UTF-8 (test_smollm2_lacks_21_byte_tokens), so no text meets them.
    """
    char = _text_needing(byte)
    assert char is not None and byte in char.encode("utf-8")
    text = "a" + char + "b"
    theirs = smollm2_hf.encode(text, add_special_tokens=False)
    assert 0 not in theirs  # not the unknown token: the byte is dropped
    if byte < 0x80:  # the character is simply gone
        assert smollm2_hf.encode(char, add_special_tokens=False) == []
        assert smollm2_hf.decode(theirs) == "ab"
    else:  # the lead byte is gone; the three continuation bytes 0x80 stay and decode as three U+FFFD
        assert smollm2_hf.decode(theirs) == "a\ufffd\ufffd\ufffdb"
    message = rf"^text: cannot encode {regex.escape(repr(char))} \(U\+{ord(char):04X}\) at index 1: .* 0x{byte:02x} "
    with pytest.raises(ValueError, match=message):
        smollm2_tok.encode(text)
    with pytest.raises(ValueError, match=r"at index 14:"):
        smollm2_tok.encode("<|im_start|>xy" + char, allow_special=True)  # the index counts the special token's text


@pytest.mark.hf
def test_smollm2_agrees_with_transformers_on_real_text_and_long_words(
    smollm2_tok: ByteBPETokenizer, smollm2_hf: Any
) -> None:
    """Our merges (heap) give transformers' ids on prose, code and long single words.

    transformers reads the file with the plain GPT-2 regex; SmolLM2's own splits digits one by one, which only
    differs where two whitespace characters precede a digit, so texts here have no such place.
    """
    texts = [CORPUS.replace("  ", " "), "the" * 3000, "ab" * 4000, "Supercalifragilistic" * 300,
             "x" * 5000, "\u65e5\u672c\u8a9e" * 1000, "=" * 3000 + "!", "\U0001f600" * 500]
    for text in texts:
        assert not regex.search(r"\s\s\p{N}", text)
        assert smollm2_tok.encode(text) == smollm2_hf.encode(text, add_special_tokens=False), text[:40]


def _smollm2_can_encode(text: str) -> bool:
    return not any(b in SMOLLM2_LACKS for b in text.encode("utf-8"))


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(text=(st.text(st.characters(codec="utf-8"), max_size=60) | CODE_LIKE).filter(_smollm2_can_encode))
def test_smollm2_merges_equal_the_textbook_loop(smollm2_tok: ByteBPETokenizer, text: str) -> None:
    assert smollm2_tok.encode(text) == textbook_encode(smollm2_tok, text)
