"""Byte-level BPE: the first stage of the pipeline, text -> token IDs.

A model never sees characters. It sees integers, each the row number of one entry
in a fixed vocabulary of token strings. This module is a readable, exact reference
of the scheme the GPT-2 family uses to produce those integers, byte-level
byte-pair encoding (BPE):

1. The text is encoded as UTF-8, so it becomes a sequence of bytes. Every one of
   the 256 byte values is itself a token (ids 0..255 when trained here).
2. A regular expression (the *pre-tokenizer pattern*) cuts the text into pieces
   ("words") such as ``"The"``, ``" storm"``, ``" is"``, ``"!!"``, ``"\\n\\n"``;
   merges never cross a piece boundary.
3. Inside each piece, an ordered list of learned *merges* repeatedly fuses the
   adjacent pair of tokens with the lowest rank into one longer token, until no
   listed pair is left. Training picks those merges by frequency: the pair seen
   most often in the corpus is merged first, so common words end up as one token
   and rare ones as several pieces (``" Pickle"`` might be ``" P"`` + ``"ickle"``).

Why it is lossless (claim TOK-1). Every Python string without lone surrogates
has a UTF-8 encoding; every byte has a token, so nothing is ever "unknown"; a
merge only concatenates the bytes of its two parts. Decoding therefore just
joins the tokens' bytes and decodes UTF-8, which gives back the exact input:
accents, CJK, emoji, control characters and runs of whitespace included.

The vocabulary is one-to-one (claim TOK-2): each token string has exactly one id
and each id exactly one token string, so ids are plain addresses into the
embedding matrix and back. Tokens are case-sensitive (claim TOK-3): ``"The"`` and
``"the"`` are different strings, hence different ids, and nothing lower-cases the
text first. Spaces are not separate tokens: the pre-tokenizer glues a single
leading space to the word after it (claim TOK-4), so ``" cat"`` (mid-sentence)
and ``"cat"`` (start of text) are different tokens, and decoding needs no rule
for where to put spaces back.

Token strings are written, as in GPT-2's ``vocab.json``/``merges.txt`` and in
HuggingFace ``tokenizer.json`` files, in GPT-2's byte-to-unicode alphabet: each
byte is shown as one printable character (e.g. the space byte as ``"Ġ"``), so a
token string is a readable word like ``"Ġcat"`` rather than raw bytes.

Special tokens (e.g. ``"<|endoftext|>"``) are outside the byte scheme: they are
literal strings with their own ids, recognised in the text only when asked to
(``encode(text, allow_special=True)``); otherwise their characters are encoded
as ordinary text.

Limits, stated rather than hidden:

* A Python ``str`` may hold lone surrogates (e.g. ``"\\ud800"``); those have no
  UTF-8 encoding, so ``encode`` rejects them with a ``ValueError``.
* A vocabulary read from a trained model's file may lack some byte tokens
  (SmolLM2's lacks 21; see ``reference.convert.gguf``). Text needing such a byte
  cannot be encoded, and ``encode`` says so with a ``ValueError`` naming the
  character and its index, rather than dropping the byte (what HuggingFace's BPE
  without an unknown token does) and returning ids that decode to other text.
* An arbitrary id sequence may cut a multi-byte character in half; ``decode``
  then uses ``errors="replace"`` (U+FFFD per broken sequence), as HuggingFace and
  tiktoken do, instead of raising.
* Character classes such as ``\\p{L}`` come from the Unicode tables of the
  ``regex`` module; other engines (e.g. Oniguruma inside HuggingFace
  ``tokenizers``) may ship an older Unicode version and so classify characters
  assigned only in the newest version differently.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
import operator
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import regex

# GPT-2's pre-tokenizer: English contractions, a letter run, a digit run or a
# symbol run (each with at most one leading space), then whitespace. The
# ``\s+(?!\S)`` branch leaves the last space of a run to the word after it.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# GPT-2's pattern with every digit a piece of its own (SmolLM: HuggingFace's
# ``Digits(individual_digits=True)`` followed by the GPT-2 ByteLevel regex). A
# digit never takes a leading space, and a whitespace run before a digit is kept
# whole, because in SmolLM the digit ends the text the GPT-2 regex sees.
SMOLLM_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"""

# Llama 3's pre-tokenizer: case-insensitive contractions, a letter run that may
# take one leading non-letter, digits in groups of at most three, and newlines
# kept apart from other whitespace.
LLAMA3_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

_CACHE_LIMIT = 1 << 16  # pre-token words remembered per tokenizer
_CACHE_MAX_WORD = 256  # longer words are not remembered, so the cache holds at most ~16M characters


def _byte_alphabet() -> list[str]:
    """Return GPT-2's printable stand-in character for each byte value 0..255.

    Bytes that are visible, non-space Latin-1 characters stand for themselves; the
    other 68 (controls, space, soft hyphen, ...) are given the characters U+0100,
    U+0101, ... in byte order. Token strings then never contain whitespace or
    control characters, which keeps vocab files readable and splittable.
    """
    visible = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    alphabet: list[str] = []
    extra = 0
    for b in range(256):
        if b in visible:
            alphabet.append(chr(b))
        else:
            alphabet.append(chr(0x100 + extra))
            extra += 1
    return alphabet


BYTE_TO_CHAR: tuple[str, ...] = tuple(_byte_alphabet())
CHAR_TO_BYTE: dict[str, int] = {c: b for b, c in enumerate(BYTE_TO_CHAR)}


def bytes_to_token(data: bytes) -> str:
    """Write raw bytes as a token string in the byte-to-unicode alphabet."""
    return "".join(BYTE_TO_CHAR[b] for b in data)


def token_to_bytes(token: str) -> bytes:
    """Invert :func:`bytes_to_token`; ValueError if a character is not in the alphabet."""
    try:
        return bytes(CHAR_TO_BYTE[c] for c in token)
    except KeyError as err:
        raise ValueError(f"token {token!r} has {err.args[0]!r}, which is not in the byte alphabet") from None


def _utf8(text: str, name: str = "text") -> bytes:
    """UTF-8 bytes of ``text``; a clear ValueError (naming ``name``) for lone surrogates, which have none."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = text[err.start]
        raise ValueError(
            f"{name} has a lone surrogate {bad!r} at index {err.start}; such a str has no UTF-8 "
            "encoding and cannot be tokenized"
        ) from None


def split_isolated(pattern: regex.Pattern[str], text: str) -> list[str]:
    """Cut ``text`` into the pattern's matches and the gaps between them, in order.

    Keeping the gaps (HuggingFace calls this the "Isolated" behaviour) makes the
    pieces always concatenate back to ``text``, whatever the pattern; the patterns
    above match every character, so for them there are no gaps. Empty matches
    are ignored.
    """
    pieces: list[str] = []
    end = 0
    for match in pattern.finditer(text):
        start, stop = match.span()
        if start == stop:
            continue
        if start > end:
            pieces.append(text[end:start])
        pieces.append(text[start:stop])
        end = stop
    if end < len(text):
        pieces.append(text[end:])
    return pieces


class ByteBPETokenizer:
    """A byte-level BPE tokenizer: vocab, ranked merges, a pre-tokenizer pattern, special tokens.

    ``vocab`` maps token strings (byte-to-unicode alphabet) to ids; ``merges`` is
    ordered, its index being the rank (lower merges first); ``special_tokens``
    maps literal strings to ids. Together the ids must be exactly 0..V-1.
    ``ignore_merges`` reproduces the HuggingFace BPE option of the same name: a
    word that is a whole vocab token is emitted as that token without merging.
    """

    def __init__(
        self,
        vocab: dict[str, int],
        merges: list[tuple[str, str]],
        special_tokens: dict[str, int] | None = None,
        pattern: str = GPT2_PATTERN,
        *,
        ignore_merges: bool = False,
    ) -> None:
        specials = dict(special_tokens or {})
        _check_vocab(vocab, specials)
        self._pattern = pattern
        self.ignore_merges = ignore_merges
        self._regex = _compile_pattern(pattern)
        self._vocab = dict(vocab)
        self._merge_ranks = _rank_merges(vocab, merges)
        self._merges = [(a, b) for a, b in merges]
        self._specials = specials
        size = len(vocab) + len(specials)
        self._id_to_token = [""] * size
        self._id_to_bytes = [b""] * size
        for token, i in vocab.items():
            self._id_to_token[i] = token
            self._id_to_bytes[i] = token_to_bytes(token)
        for token, i in specials.items():
            self._id_to_token[i] = token
            self._id_to_bytes[i] = token.encode("utf-8")
        self._byte_ids = [vocab[c] for c in BYTE_TO_CHAR]
        self._special_regex = _special_splitter(specials)
        self._cache: dict[str, tuple[int, ...]] = {}

    # ----------------------------------------------------------------- training

    @classmethod
    def train(
        cls,
        corpus: Iterable[str],
        vocab_size: int,
        special_tokens: Sequence[str] = (),
        pattern: str = GPT2_PATTERN,
    ) -> ByteBPETokenizer:
        """Learn merges from ``corpus`` until ``vocab_size`` tokens (specials included) exist.

        Classic BPE: start from the 256 byte tokens (ids 0..255 in byte order),
        count adjacent token pairs inside the pre-tokenized words, merge the most
        frequent pair everywhere, and repeat. Ties go to the pair whose bytes sort
        first, so training is deterministic. Training stops early when no pair
        occurs at least twice. Special tokens get the last ids; where they occur
        in the corpus they only separate text and are not learned from.
        """
        specials = list(special_tokens)
        minimum = 256 + len(specials)
        if vocab_size < minimum:
            raise ValueError(
                f"vocab_size must be at least {minimum} (256 byte tokens + {len(specials)} special "
                f"tokens), got {vocab_size}"
            )
        if len(set(specials)) != len(specials) or "" in specials:
            raise ValueError(f"special_tokens must be distinct non-empty strings, got {specials!r}")
        compiled = _compile_pattern(pattern)
        splitter = _special_splitter({s: 0 for s in specials})
        words: Counter[bytes] = Counter()
        for text in corpus:
            chunks = [text] if splitter is None else splitter.split(text)
            for chunk in chunks:
                if chunk and chunk not in specials:
                    words.update(_utf8(piece, "corpus") for piece in split_isolated(compiled, chunk))
        token_bytes = [bytes([b]) for b in range(256)]
        merges = _learn_merges(words, token_bytes, vocab_size - len(specials))
        vocab = {bytes_to_token(t): i for i, t in enumerate(token_bytes)}
        special_ids = {s: len(vocab) + k for k, s in enumerate(specials)}
        merge_strings = [(bytes_to_token(a), bytes_to_token(b)) for a, b in merges]
        return cls(vocab, merge_strings, special_ids, pattern)

    # ------------------------------------------------------------ loading files

    @classmethod
    def from_vocab_and_merges(
        cls,
        vocab: dict[str, int],
        merges: list[tuple[str, str]],
        special_tokens: dict[str, int] | None = None,
        pattern: str = GPT2_PATTERN,
    ) -> ByteBPETokenizer:
        """Build a tokenizer from an explicit vocab and merge list (same as the constructor)."""
        return cls(vocab, merges, special_tokens, pattern)

    @classmethod
    def from_hf_tokenizer_json(cls, path: str | os.PathLike[str]) -> ByteBPETokenizer:
        """Load a HuggingFace ``tokenizer.json`` holding a byte-level BPE model.

        Reads the file with ``json`` (never pickle). Takes ``model.vocab``,
        ``model.merges`` (``"a b"`` strings or ``[a, b]`` pairs) and ``added_tokens``
        (as special tokens: HuggingFace always splits them out of the text, which is
        ``encode(..., allow_special=True)`` here). The pre-tokenizer must be one this
        class reproduces exactly, otherwise ValueError:

        * ``ByteLevel`` with its built-in regex -> :data:`GPT2_PATTERN`;
        * ``Sequence[Digits(individual_digits=True), ByteLevel]`` -> :data:`SMOLLM_PATTERN`;
        * ``Sequence[Split(Regex(p), "Isolated"), ByteLevel(use_regex=False)]`` -> ``p``.

        Split patterns are compiled with the ``regex`` module; for the three patterns
        above the tests check that it cuts text exactly as HuggingFace's Oniguruma does.
        Normalizers (which would change the text) are rejected, and so is a vocab
        lacking any of the 256 byte tokens (it could not encode every text). The
        post-processor is not applied: it only adds template tokens such as BOS, so
        ``encode`` here matches HuggingFace's ``encode(text, add_special_tokens=False)``.
        """
        data = _read_json(path)
        model = data.get("model") or {}
        if model.get("type") != "BPE":
            raise ValueError(f"path: model.type is {model.get('type')!r}, only 'BPE' is supported")
        if model.get("dropout") not in (None, 0, 0.0):
            raise ValueError("path: BPE dropout is random and cannot be reproduced")
        for option in ("continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(option):
                raise ValueError(f"path: model.{option} is set; byte-level BPE here has no such affixes")
        normalizer = data.get("normalizer")
        if normalizer is not None and normalizer != {"type": "Sequence", "normalizers": []}:
            raise ValueError(f"path: normalizer {normalizer.get('type')!r} cannot be reproduced exactly")
        decoder = data.get("decoder")
        if decoder is not None and decoder.get("type") != "ByteLevel":
            raise ValueError(f"path: decoder {decoder.get('type')!r} cannot be reproduced exactly")
        pattern = _pattern_from_hf(data.get("pre_tokenizer"))
        specials: dict[str, int] = {}
        for added in data.get("added_tokens") or []:
            if added.get("single_word") or added.get("lstrip") or added.get("rstrip"):
                raise ValueError(
                    f"path: added token {added['content']!r} uses single_word/lstrip/rstrip, "
                    "which cannot be reproduced exactly"
                )
            specials[added["content"]] = added["id"]
        if not isinstance(model.get("vocab"), dict):
            raise ValueError("path: model.vocab is missing or not a token -> id mapping")
        vocab = dict(model["vocab"])
        for token, i in specials.items():
            if token in vocab and vocab[token] == i:
                del vocab[token]  # trainers list special tokens in the model vocab too
        merges = [_parse_merge(m) for m in model.get("merges") or []]
        return cls(vocab, merges, specials, pattern, ignore_merges=bool(model.get("ignore_merges")))

    # ---------------------------------------------------------------- encoding

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Turn ``text`` into token ids.

        With ``allow_special`` the special tokens are found literally in the text
        first (longest match wins) and become their own ids; without it their
        characters are encoded like any other text. Each remaining stretch is cut
        by the pre-tokenizer pattern and each piece is BPE-merged on its own.

        Nothing is dropped or invented: TypeError if ``text`` is not a str,
        ValueError for a lone surrogate or for a character whose UTF-8 needs a
        byte this vocabulary has no token for (see :meth:`_check_encodable`).
        """
        if not isinstance(text, str):
            hint = " (decode bytes to str first, e.g. data.decode('utf-8'))" if isinstance(text, bytes) else ""
            raise TypeError(f"text: expected a str, got {type(text).__name__}{hint}")
        _utf8(text)  # reject lone surrogates up front, with a clear message
        ids: list[int] = []
        for start, chunk, special_id in self._split_special(text, allow_special):
            if special_id is not None:
                ids.append(special_id)
                continue
            self._check_encodable(chunk, start)
            for piece in split_isolated(self._regex, chunk):
                ids.extend(self._encode_word(piece))
        return ids

    def _split_special(self, text: str, allow_special: bool) -> Iterator[tuple[int, str, int | None]]:
        """Yield (start index, plain text, None) and (start index, special token, its id) stretches in order."""
        if not allow_special or self._special_regex is None:
            yield 0, text, None
            return
        end = 0
        for match in self._special_regex.finditer(text):
            if match.start() > end:
                yield end, text[end : match.start()], None
            yield match.start(), match.group(), self._specials[match.group()]
            end = match.end()
        if end < len(text):
            yield end, text[end:], None

    @functools.cached_property
    def _tokenless_bytes(self) -> bytes:
        """The byte values that have no token (``_byte_ids`` entry -1), in order; usually none.

        The constructor insists on all 256 byte tokens; a subclass reading a model's file
        may take some out again (``reference.convert.gguf.GGUFByteBPETokenizer``). Computed
        on first use, i.e. after any subclass has finished its constructor.
        """
        return bytes(b for b, i in enumerate(self._byte_ids) if i < 0)

    @functools.cached_property
    def _tokenless_regex(self) -> re.Pattern[bytes] | None:
        """A regex matching any byte of :attr:`_tokenless_bytes`; None when every byte has a token."""
        missing = self._tokenless_bytes
        return re.compile(b"[" + b"".join(re.escape(bytes([b])) for b in missing) + b"]") if missing else None

    def _check_encodable(self, chunk: str, start: int) -> None:
        """Raise ValueError at the first character of ``chunk`` whose UTF-8 has a byte without a token.

        ``start`` is the chunk's index in the whole text, so the message points into
        what the caller passed. Dropping the byte instead would return ids that
        decode to different text, a silent wrong answer.
        """
        if self._tokenless_regex is None:
            return
        data = chunk.encode("utf-8")
        found = self._tokenless_regex.search(data)
        if found is None:
            return
        index = len(data[: found.start()].decode("utf-8", errors="ignore"))  # characters wholly before the byte
        char = chunk[index]
        raise ValueError(
            f"text: cannot encode {char!r} (U+{ord(char):04X}) at index {start + index}: its UTF-8 byte "
            f"0x{data[found.start()]:02x} has no token in this vocabulary, which lacks "
            f"{len(self._tokenless_bytes)} of the 256 byte tokens"
        )

    def _encode_word(self, word: str) -> tuple[int, ...]:
        """Token ids of one pre-token word; words up to ``_CACHE_MAX_WORD`` characters are cached (bounded)."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        data = word.encode("utf-8")
        whole = self._vocab.get(bytes_to_token(data)) if self.ignore_merges else None
        ids = (whole,) if whole is not None else self._merge_word([self._byte_ids[b] for b in data])
        if len(word) <= _CACHE_MAX_WORD:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[word] = ids
        return ids

    def _merge_word(self, ids: list[int]) -> tuple[int, ...]:
        """Apply merges to one word: always the lowest-ranked adjacent pair, leftmost first.

        Merging one occurrence at a time (not all occurrences of a pair at once)
        matches HuggingFace ``tokenizers`` and tiktoken even for merge lists in
        which a merged token takes part in a lower-ranked merge.

        Rescanning every pair after each merge would cost O(n^2) for a word of n
        bytes (minutes for a 32 KB run of letters). Instead the symbols form a
        linked list (``after[i]`` is the next live position; a merged-away symbol
        gets id -1), and a heap holds every adjacent pair that has a merge, keyed
        by (rank, position): its top is the lowest-ranked, leftmost pair. A merge
        only creates the two pairs around the new symbol, so it pushes at most two
        entries; entries whose pair has since changed are skipped when popped.
        That is O(n log n), with the same merges in the same order.
        """
        ranks = self._merge_ranks
        n = len(ids)
        after = list(range(1, n + 1))  # n marks the end of the word
        before = list(range(-1, n - 1))  # -1 marks its start
        heap: list[tuple[int, int, int, int]] = []  # (rank, left position, left id, right id)
        for pos in range(n - 1):
            entry = ranks.get((ids[pos], ids[pos + 1]))
            if entry is not None:
                heap.append((entry[0], pos, ids[pos], ids[pos + 1]))
        heapq.heapify(heap)
        while heap:
            _rank, left, a, b = heapq.heappop(heap)
            right = after[left]
            if ids[left] != a or right == n or ids[right] != b:
                continue  # stale: one of the two symbols was merged since this entry was pushed
            ids[left], ids[right] = ranks[(a, b)][1], -1
            after[left] = after[right]
            if after[left] < n:
                before[after[left]] = left
            for pos in (before[left], left):  # the new pairs: (previous, merged) and (merged, next)
                if pos >= 0 and after[pos] < n:
                    entry = ranks.get((ids[pos], ids[after[pos]]))
                    if entry is not None:
                        heapq.heappush(heap, (entry[0], pos, ids[pos], ids[after[pos]]))
        return tuple(i for i in ids if i >= 0)

    # ---------------------------------------------------------------- decoding

    def decode(self, ids: Iterable[int]) -> str:
        """Join the tokens' bytes and decode UTF-8; broken sequences become U+FFFD.

        Ids from ``encode`` always decode to the exact original text. An arbitrary
        id sequence can split a multi-byte character, hence ``errors="replace"``.
        Anything but integer ids in [0, vocab_size) is an error naming the bad id
        and its position: TypeError for a non-integer, ValueError out of range.
        """
        if isinstance(ids, str) or not isinstance(ids, Iterable):
            raise TypeError(f"ids: expected a sequence of int token ids in [0, {self.vocab_size}), "
                            f"got {type(ids).__name__}")
        data = b"".join(self._id_to_bytes[self._check_id(i, "ids", k)] for k, i in enumerate(ids))
        return data.decode("utf-8", errors="replace")

    # ----------------------------------------------------------- vocab lookups

    @property
    def pattern(self) -> str:
        """The pre-tokenizer regex (GPT2_PATTERN unless chosen otherwise)."""
        return self._pattern

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (valid ids are 0..vocab_size-1)."""
        return len(self._id_to_token)

    @property
    def special_tokens(self) -> dict[str, int]:
        """A copy of the special-token table (literal string -> id)."""
        return dict(self._specials)

    @property
    def vocab(self) -> dict[str, int]:
        """A copy of the ordinary vocab (byte-alphabet token string -> id), specials excluded."""
        return dict(self._vocab)

    @property
    def merges(self) -> list[tuple[str, str]]:
        """A copy of the merge list; a merge's index is its rank."""
        return list(self._merges)

    def token_to_id(self, token: str) -> int:
        """Id of a token string (byte-alphabet vocab token or special token)."""
        i = self._vocab.get(token, self._specials.get(token))
        if i is None:
            raise ValueError(f"token: {token!r} is not in the vocabulary")
        return i

    def id_to_token(self, i: int) -> str:
        """Token string of an id (byte alphabet for ordinary tokens, literal for specials)."""
        return self._id_to_token[self._check_id(i, "i")]

    def token_bytes(self, i: int) -> bytes:
        """The raw bytes an id stands for (UTF-8 of the literal for special tokens)."""
        return self._id_to_bytes[self._check_id(i, "i")]

    def _check_id(self, i: Any, name: str, position: int | None = None) -> int:
        """``i`` as an int if it is a valid id; else TypeError (not an integer) or ValueError (out of range).

        The message names the parameter ``name``, the bad id, the allowed range and,
        for an id inside a sequence, its ``position`` there.
        """
        where = "" if position is None else f" (position {position} of {name})"
        try:
            index = operator.index(i)  # ints, numpy integers, integer 0-d tensors; never floats or strings
        except TypeError:
            raise TypeError(f"{name}: token id {i!r} is a {type(i).__name__}, not an int; token ids are ints in "
                            f"[0, {self.vocab_size}){where}") from None
        if not 0 <= index < len(self._id_to_token):
            raise ValueError(f"{name}: token id {index} is outside the vocabulary range [0, {self.vocab_size}){where}")
        return index

    def __repr__(self) -> str:
        return (
            f"ByteBPETokenizer(vocab_size={self.vocab_size}, merges={len(self._merges)}, "
            f"special_tokens={len(self._specials)})"
        )


# -------------------------------------------------------------------- helpers


def _check_vocab(vocab: dict[str, int], specials: dict[str, int]) -> None:
    """Raise ValueError unless vocab and specials together map one-to-one onto 0..V-1."""
    for name, table in (("vocab", vocab), ("special_tokens", specials)):
        for token, i in table.items():
            if not isinstance(token, str) or not token:
                raise ValueError(f"{name}: token {token!r} is not a non-empty str")
            if isinstance(i, bool) or not isinstance(i, int):
                raise ValueError(f"{name}: id of {token!r} is {i!r}, not an int")
    for token in specials:
        _utf8(token, "special_tokens")  # matched in, and decoded to, text: it needs a UTF-8 form
    for token in vocab:
        bad = [c for c in token if c not in CHAR_TO_BYTE]
        if bad:
            raise ValueError(f"vocab: token {token!r} has {bad[0]!r}, which is not in the byte alphabet")
    missing = [c for c in BYTE_TO_CHAR if c not in vocab]
    if missing:
        raise ValueError(f"vocab: missing {len(missing)} of the 256 byte tokens, e.g. {missing[0]!r}")
    clash = sorted(set(vocab) & set(specials))
    if clash:
        raise ValueError(f"special_tokens: {clash[0]!r} is also an ordinary vocab token")
    ids = [*vocab.values(), *specials.values()]
    seen: set[int] = set()
    for i in ids:
        if i in seen:
            owners = [t for t, j in [*vocab.items(), *specials.items()] if j == i]
            raise ValueError(f"vocab: id {i} is used by more than one token: {owners!r}")
        seen.add(i)
    if seen != set(range(len(ids))):
        gap = min(set(range(len(ids))) - seen)
        raise ValueError(f"vocab: ids (special tokens included) must be 0..{len(ids) - 1}; {gap} is missing")


def _rank_merges(
    vocab: dict[str, int], merges: list[tuple[str, str]]
) -> dict[tuple[int, int], tuple[int, int]]:
    """Map each merge's (left id, right id) to (rank, id of the merged token)."""
    ranks: dict[tuple[int, int], tuple[int, int]] = {}
    for rank, merge in enumerate(merges):
        if len(merge) != 2:
            raise ValueError(f"merges: entry {rank} is {merge!r}, not a pair of token strings")
        a, b = merge
        for part in (a, b, a + b):
            if part not in vocab:
                raise ValueError(f"merges: entry {rank} {merge!r} needs {part!r}, which is not in vocab")
        key = (vocab[a], vocab[b])
        if key in ranks:
            raise ValueError(f"merges: entry {rank} {merge!r} repeats entry {ranks[key][0]}")
        ranks[key] = (rank, vocab[a + b])
    return ranks


def _compile_pattern(pattern: str) -> regex.Pattern[str]:
    """Compile a pre-tokenizer pattern; ValueError naming ``pattern`` if it is not a valid regex."""
    try:
        return regex.compile(pattern)
    except regex.error as err:
        raise ValueError(f"pattern: {pattern!r} is not a valid regular expression: {err}") from None


def _special_splitter(specials: dict[str, int]) -> regex.Pattern[str] | None:
    """A regex matching any special token literally, the longest one first; None if there are none."""
    if not specials:
        return None
    ordered = sorted(specials, key=lambda s: (-len(s), s))
    return regex.compile("(" + "|".join(regex.escape(s) for s in ordered) + ")")


def _learn_merges(words: Counter[bytes], token_bytes: list[bytes], target: int) -> list[tuple[bytes, bytes]]:
    """Greedy BPE over unique words weighted by frequency; appends new tokens to ``token_bytes``.

    Pair counts are kept up to date incrementally: a merge only revisits the words
    that contain the merged pair. A heap with lazily discarded stale entries gives
    the most frequent pair, ties broken by the smaller (left bytes, right bytes).
    """
    seqs = [list(w) for w in words]  # a byte string iterates as its byte values = ids 0..255
    freqs = list(words.values())
    counts: Counter[tuple[int, int]] = Counter()
    where: dict[tuple[int, int], set[int]] = {}
    for w, seq in enumerate(seqs):
        for pair in itertools.pairwise(seq):
            counts[pair] += freqs[w]
            where.setdefault(pair, set()).add(w)
    heap = [(-n, token_bytes[a], token_bytes[b], a, b) for (a, b), n in counts.items()]
    heapq.heapify(heap)
    id_of = {t: i for i, t in enumerate(token_bytes)}
    merges: list[tuple[bytes, bytes]] = []
    while len(token_bytes) < target and heap:
        neg, left, right, a, b = heapq.heappop(heap)
        if counts.get((a, b), 0) != -neg:
            continue  # stale entry: the count changed after it was pushed
        if -neg < 2:
            break
        merged = left + right
        new = id_of.setdefault(merged, len(token_bytes))
        if new == len(token_bytes):
            token_bytes.append(merged)
        merges.append((left, right))
        for w in where.pop((a, b), set()):
            before = Counter(itertools.pairwise(seqs[w]))
            seqs[w] = _merge_all(seqs[w], a, b, new)
            after = Counter(itertools.pairwise(seqs[w]))
            for pair in before.keys() | after.keys():
                delta = (after[pair] - before[pair]) * freqs[w]
                if delta:
                    counts[pair] += delta
                    heapq.heappush(heap, (-counts[pair], token_bytes[pair[0]], token_bytes[pair[1]], *pair))
                if after[pair]:
                    where.setdefault(pair, set()).add(w)
        counts.pop((a, b), None)
    return merges


def _merge_all(seq: list[int], a: int, b: int, new: int) -> list[int]:
    """Replace every non-overlapping (a, b) in ``seq``, left to right, by ``new``."""
    out: list[int] = []
    i = 0
    while i < len(seq):
        if i + 1 < len(seq) and seq[i] == a and seq[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(seq[i])
            i += 1
    return out


def _read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON object in the regular file ``path``; ValueError naming the file for anything else.

    A FIFO or a device is refused before it is opened (reading one blocks or never ends), and text
    that is not UTF-8 JSON, or JSON that is not an object, is named with the file rather than
    surfacing as a bare JSONDecodeError or AttributeError.
    """
    p = Path(path)
    if not p.is_file():
        if not p.exists():
            raise FileNotFoundError(f"path: {str(p)!r} does not exist")
        raise ValueError(f"path: {str(p)!r} is not a regular file (a folder, FIFO or device)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"path: {str(p)!r} is not a UTF-8 JSON tokenizer file: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"path: {str(p)!r} holds a JSON {type(data).__name__}, not a tokenizer.json object")
    return data


def _parse_merge(merge: Any) -> tuple[str, str]:
    """A HuggingFace merge, ``"a b"`` or ``["a", "b"]``, as a pair of token strings."""
    parts = merge.split(" ") if isinstance(merge, str) else list(merge)
    if len(parts) != 2 or not all(isinstance(p, str) for p in parts):
        raise ValueError(f"path: merge {merge!r} is not a pair of token strings")
    return parts[0], parts[1]


def _pattern_from_hf(pre: Any) -> str:
    """The single regex equivalent to a HuggingFace pre-tokenizer, or ValueError if there is none."""
    steps = pre.get("pretokenizers", []) if isinstance(pre, dict) and pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") if isinstance(step, dict) else None for step in steps]
    if not kinds or kinds[-1] != "ByteLevel":
        raise ValueError(f"path: pre_tokenizer {kinds!r} is not byte-level (must end in ByteLevel)")
    byte_level = steps[-1]
    if byte_level.get("add_prefix_space"):
        raise ValueError("path: ByteLevel add_prefix_space=True changes the text; it is not reproduced")
    use_regex = byte_level.get("use_regex", True)
    if kinds == ["ByteLevel"] and use_regex:
        return GPT2_PATTERN
    if kinds == ["Digits", "ByteLevel"] and use_regex and steps[0].get("individual_digits"):
        return SMOLLM_PATTERN
    if kinds == ["Split", "ByteLevel"] and not use_regex:
        split = steps[0]
        pattern = split.get("pattern", {})
        if "Regex" in pattern and split.get("behavior") == "Isolated" and not split.get("invert"):
            return str(pattern["Regex"])
    raise ValueError(f"path: pre_tokenizer {pre!r} cannot be reproduced exactly by a single pattern")
