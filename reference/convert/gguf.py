"""GGUF files of the Llama architecture (llama.cpp's format) as reference Transformers and tokenizers.

A GGUF file holds key/value metadata (the architecture's hyper-parameters under
``llama.*``, the tokenizer under ``tokenizer.ggml.*``) and named tensors, most of
them quantized in blocks (Q4_1, Q8_0, ...). This module reads one with the ``gguf``
package (never transformers, never pickle), dequantizes every tensor to float32
with ``gguf.quants.dequantize`` and maps it onto the reference's parameters. One
converter per source format: this file is the GGUF-llama format only, and any
other ``general.architecture`` is refused.

Metadata -> ModelConfig (llama.cpp's key names):

    llama.embedding_length                  -> d_model
    llama.block_count                       -> n_layers
    llama.attention.head_count              -> n_heads
    llama.attention.head_count_kv           -> n_kv_heads (grouped-query attention)
    llama.feed_forward_length               -> d_mlp (SwiGLU: silu(x W_gate) * (x W_in))
    llama.rope.freq_base                    -> rotary_theta
    llama.attention.layer_norm_rms_epsilon  -> norm_eps (RMSNorm, no bias)
    llama.context_length                    -> max_positions
    tokenizer.ggml.tokens (its length)      -> vocab_size
    no ``output.weight`` tensor             -> tied_embeddings (U = E^T)

Tensors -> reference parameters. GGML lists a matrix's dimensions as (in, out), so
the dequantized array is [out, in], like a torch ``nn.Linear`` weight; the
reference's weights act on the right (x @ W, W [in, out]) and are transposed:

    token_embd.weight          [V, d]         -> embed.E
    blk.N.attn_norm.weight     [d]            -> blocks.N.N1.weight
    blk.N.attn_q.weight        [H*dh, d]      -> blocks.N.attn.W_Q   [d, H*dh]   (rows un-permuted, below)
    blk.N.attn_k.weight        [Hkv*dh, d]    -> blocks.N.attn.W_K   [d, Hkv*dh] (rows un-permuted, below)
    blk.N.attn_v.weight        [Hkv*dh, d]    -> blocks.N.attn.W_V
    blk.N.attn_output.weight   [d, H*dh]      -> blocks.N.attn.W_O   [H*dh, d]
    blk.N.ffn_norm.weight      [d]            -> blocks.N.N2.weight
    blk.N.ffn_gate.weight      [m, d]         -> blocks.N.mlp.W_gate
    blk.N.ffn_up.weight        [m, d]         -> blocks.N.mlp.W_in
    blk.N.ffn_down.weight      [d, m]         -> blocks.N.mlp.W_out
    output_norm.weight         [d]            -> final_norm.weight
    output.weight (if present) [V, d]         -> U [d, V]

The rotary permutation. HF Llama rotates each head's coordinate pairs (i, i + dh/2)
("halves"); llama.cpp's ggml rope rotates neighbours (2i, 2i + 1). So llama.cpp's
converter reorders the rows of W_Q and W_K inside every head, writing HF row
``half * dh/2 + i`` as GGUF row ``2 i + half`` (its ``permute``:
``w.reshape(n_head, 2, dh/2, d).swapaxes(1, 2)``). transformers' GGUF loader undoes
it (``LlamaTensorProcessor._reverse_permute_weights``:
``w.reshape(n_head, dh/2, 2, d).swapaxes(1, 2)``), with n_head = head_count for Q
and head_count_kv for K. ``load(..., undo_rope_permutation=True)`` (the default)
does the same, giving HF's layout with half-split rotary. Keeping the file's row
order and rotating neighbours instead (``undo_rope_permutation=False``, which sets
``rotary_interleaved=True``) is the same model: both q and k of a head are permuted
by one permutation that maps each rotated pair to a rotated pair with the same
frequency, and q . k is unchanged by permuting both vectors alike (tested in
tests/reference/test_gguf.py).

Nothing is inferred from tensor shapes: every shape is checked against the one the
metadata implies, and a tensor this module does not map (biases, ``rope_freqs``,
experts) is an error naming it, never silently ignored.
"""

from __future__ import annotations

import functools
import math
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from reference.config import ModelConfig
from reference.convert.common import UnsupportedConfig, linear
from reference.model import Transformer
from reference.tokenizer import BYTE_TO_CHAR, GPT2_PATTERN, LLAMA3_PATTERN, SMOLLM_PATTERN, ByteBPETokenizer

ARCHITECTURE = "llama"

# llama.cpp token types (gguf.TokenType): only these two occur in byte-level BPE files we accept.
NORMAL, CONTROL = 1, 3

# tokenizer.ggml.pre -> (the reference pattern, ignore_merges), as llama.cpp's llama-vocab.cpp reads them:
# - "gpt-2": the GPT-2 regex alone.
# - "smollm": two regexes applied one after the other, first "\p{N}" (every digit its own piece), then the
#   GPT-2 regex inside each piece. That is exactly SmolLM's own tokenizer.json (Digits(individual_digits)
#   then ByteLevel), which reference.tokenizer.SMOLLM_PATTERN writes as a single regex.
# - "llama-bpe" / "llama3": Llama 3's regex, and llama.cpp sets tokenizer_ignore_merges for them.
PRE_TOKENIZERS: dict[str, tuple[str, bool]] = {
    "gpt-2": (GPT2_PATTERN, False),
    "smollm": (SMOLLM_PATTERN, False),
    "llama-bpe": (LLAMA3_PATTERN, True),
    "llama3": (LLAMA3_PATTERN, True),
}


class GGUFFile:
    """A GGUF file's metadata (as Python values) and its tensors (dequantized on request)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():  # a FIFO or a device would block or never end; a folder has no header
            if self.path.exists():
                raise ValueError(f"GGUF file {str(self.path)!r} is not a regular file (a folder, FIFO or device); "
                                 "give the path of a .gguf file")
            raise FileNotFoundError(f"GGUF file {str(self.path)!r} does not exist")
        try:
            self.reader = _open_reader(str(self.path))
        except (ValueError, IndexError, KeyError, OverflowError, EOFError, struct.error, RecursionError) as err:
            # gguf's reader raises these on a truncated or malformed header (a count past the end of the file, an
            # unknown value type, arrays nested thousands deep): one clear error naming the file instead
            raise ValueError(f"{str(self.path)!r} is not a readable GGUF file: {type(err).__name__}: {err}") from None
        self._tensors = {t.name: t for t in self.reader.tensors}
        self._values: dict[str, Any] = {}

    def has(self, key: str) -> bool:
        return key in self.reader.fields

    def get(self, key: str, default: Any = ...) -> Any:
        """The metadata value under ``key``: int, float, bool, str, or a list of those."""
        if key not in self._values:
            field = self.reader.fields.get(key)
            if field is None:
                if default is ...:
                    raise UnsupportedConfig(f"GGUF file {str(self.path)!r}: metadata has no {key!r}, which this "
                                            "converter needs")
                return default
            self._values[key] = _field_value(field)
        return self._values[key]

    @property
    def tensor_names(self) -> list[str]:
        return list(self._tensors)

    def tensor(self, name: str, shape: tuple[int, ...]) -> Tensor:
        """Tensor ``name`` dequantized to float32, as a torch tensor of the stated (expected) shape.

        GGML lists dimensions fastest-first (ne0 = the input width of a matrix), so the
        array is the reverse of that list; it must equal ``shape`` or this raises.
        """
        from gguf.quants import dequantize

        t = self._tensors.get(name)
        if t is None:
            raise UnsupportedConfig(f"GGUF file has no tensor {name!r} (it has e.g. {self.tensor_names[:6]})")
        stored = tuple(int(n) for n in reversed(t.shape.tolist()))
        if stored != shape:
            raise UnsupportedConfig(f"GGUF tensor {name!r} has shape {stored} but the metadata implies {shape}")
        values = dequantize(t.data, t.tensor_type)
        # Quantized types dequantize into a fresh array, which is used as it is; a float32 tensor comes back as
        # a read-only view of the memory map, which is copied once so the weights are ordinary writable memory.
        fresh = not np.may_share_memory(values, self.reader.data)
        array = np.asarray(values, dtype=np.float32) if fresh else np.array(values, dtype=np.float32, copy=True)
        array = array.reshape(shape)
        if not np.isfinite(array).all():
            bad = int(array.size - np.isfinite(array).sum())
            raise ValueError(f"GGUF file {str(self.path)!r}: tensor {name!r} holds {bad} NaN or inf values; "
                             "a trained model's weights are finite, so the file is corrupt (not loaded)")
        return torch.from_numpy(array)

    def count(self, key: str, default: Any = ...) -> int:
        """The metadata value under ``key`` as a positive integer, or an error naming the file and key."""
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UnsupportedConfig(f"GGUF file {str(self.path)!r}: {key}={value!r} must be a positive integer")
        return value

    def number(self, key: str, default: Any = ...) -> float:
        """The metadata value under ``key`` as a finite float, or an error naming the file and key."""
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UnsupportedConfig(f"GGUF file {str(self.path)!r}: {key}={value!r} must be a finite number")
        return float(value)


def _field_value(field: Any) -> Any:
    """A ReaderField as Python: parts[data[i]] are the value's items (transformers reads them the same way)."""
    from gguf import GGUFValueType

    kind = GGUFValueType(int(field.types[0]))
    if kind == GGUFValueType.ARRAY:
        item = GGUFValueType(int(field.types[-1]))
        return [_scalar(field.parts[i], item) for i in field.data]
    return _scalar(field.parts[field.data[0]], kind)


def _scalar(part: np.ndarray, kind: Any) -> Any:
    from gguf import GGUFValueType

    if kind == GGUFValueType.STRING:
        return bytes(part).decode("utf-8")
    value = part.tolist()[0]
    return bool(value) if kind == GGUFValueType.BOOL else value


@functools.cache
def _fast_reader_class() -> type:
    from gguf import GGUFReader

    class FastReader(GGUFReader):  # type: ignore[misc]
        """GGUFReader reading through a plain ndarray view of its memory map.

        Slicing an ``np.memmap`` builds a new memmap object each time, and the reader
        slices once per metadata item (~250,000 for a 49k-token vocabulary with its
        merges), which took ~12 s; a plain view of the same mapping reads the same
        bytes in ~4 s. Only the container type changes, never a value.
        """

        def _get(self, offset: int, dtype: Any, count: int = 1, override_order: Any = None) -> np.ndarray:
            plain = self.__dict__.get("_plain")
            if plain is None:
                plain = self._plain = self.data.view(np.ndarray)
            count = int(count)
            end = offset + np.dtype(dtype).itemsize * count
            arr = plain[offset:end].view(dtype=dtype)[:count]
            return arr.view(arr.dtype.newbyteorder(self.byte_order if override_order is None else override_order))

    return FastReader


def _open_reader(path: str) -> Any:
    """gguf.GGUFReader over ``path`` (the faster subclass where this gguf version has the method it overrides)."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise ImportError("reading GGUF files needs the `gguf` package: pip install gguf "
                          "(or the project's extra: pip install -e '.[hf]')") from None

    return _fast_reader_class()(path) if hasattr(GGUFReader, "_get") else GGUFReader(path)


def read(path: str | os.PathLike[str]) -> GGUFFile:
    """Open a GGUF file; ValueError (UnsupportedConfig) unless its architecture is llama."""
    f = GGUFFile(path)
    arch = f.get("general.architecture")
    if arch != ARCHITECTURE:
        raise UnsupportedConfig(f"GGUF general.architecture={arch!r} is not supported: this converter reads the "
                                f"{ARCHITECTURE!r} layout only (one converter per source format)")
    return f


def _source(source: str | os.PathLike[str] | GGUFFile) -> GGUFFile:
    return source if isinstance(source, GGUFFile) else read(source)


# ------------------------------------------------------------------------------ config


def config(source: str | os.PathLike[str] | GGUFFile, *, undo_rope_permutation: bool = True) -> ModelConfig:
    """The reference ModelConfig of a GGUF-llama file, every field from a named metadata key."""
    f = _source(source)
    a = ARCHITECTURE
    d = f.count(f"{a}.embedding_length")
    n_heads = f.count(f"{a}.attention.head_count")
    n_kv = f.count(f"{a}.attention.head_count_kv", n_heads)
    if d % n_heads:
        raise UnsupportedConfig(f"{a}.embedding_length={d} is not divisible by {a}.attention.head_count={n_heads}")
    head_dim = d // n_heads
    for key in (f"{a}.attention.key_length", f"{a}.attention.value_length"):
        if f.has(key) and f.count(key) != head_dim:
            raise UnsupportedConfig(f"{key}={f.get(key)} differs from embedding_length / head_count = {head_dim}; "
                                    "heads wider or narrower than d_model / n_heads are not read here")
    rot = f.count(f"{a}.rope.dimension_count", head_dim)
    if rot != head_dim:
        raise UnsupportedConfig(f"{a}.rope.dimension_count={rot} is not supported: llama.cpp's Q/K row permutation "
                                f"spans the whole head ({head_dim}), so only fully rotated heads are read here")
    scaling = f.get(f"{a}.rope.scaling.type", "none")
    if scaling not in ("none", None):
        raise UnsupportedConfig(f"{a}.rope.scaling.type={scaling!r} is not supported: only unscaled rotary")
    if f.has(f"{a}.expert_count") and int(f.get(f"{a}.expert_count")) > 0:
        raise UnsupportedConfig(f"{a}.expert_count={f.get(f'{a}.expert_count')} is not supported: no experts here")
    vocab = len(f.get("tokenizer.ggml.tokens"))
    if f.has(f"{a}.vocab_size") and f.count(f"{a}.vocab_size") != vocab:
        raise UnsupportedConfig(f"{a}.vocab_size={f.get(f'{a}.vocab_size')} differs from the {vocab} entries of "
                                "tokenizer.ggml.tokens")
    fields = dict(
        vocab_size=vocab,
        d_model=d,
        n_layers=f.count(f"{a}.block_count"),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_head=head_dim,
        d_mlp=f.count(f"{a}.feed_forward_length"),
        mlp_activation="silu",
        mlp_gated=True,
        mlp_bias=False,
        norm="rmsnorm",
        norm_eps=f.number(f"{a}.attention.layer_norm_rms_epsilon"),
        norm_bias=False,
        positions="rotary",
        max_positions=f.count(f"{a}.context_length"),
        rotary_theta=f.number(f"{a}.rope.freq_base", 10000.0),
        rotary_fraction=1.0,
        rotary_interleaved=not undo_rope_permutation,
        attn_qkv_bias=False,
        attn_out_bias=False,
        tied_embeddings="output.weight" not in f.tensor_names,
        unembed_bias=False,
    )
    try:
        return ModelConfig(**fields)  # type: ignore[arg-type]
    except ValueError as err:  # e.g. head_count_kv not dividing head_count, eps <= 0: say which file
        raise UnsupportedConfig(f"GGUF file {str(f.path)!r}: its metadata gives an invalid model: {err}") from None


# ------------------------------------------------------------------------------ weights


def unpermute_rope_rows(w: Tensor, n_heads: int) -> Tensor:
    """Undo llama.cpp's Q/K row permutation: w [n_heads * dh, in] in GGUF order -> HF's half-split order.

    Inside each head GGUF row 2 i + half holds HF row half * dh/2 + i (half in {0, 1}).
    """
    rows = w.shape[0]
    if rows % (2 * n_heads):
        raise UnsupportedConfig(f"a Q/K weight with {rows} rows cannot hold {n_heads} heads of even width")
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def permute_rope_rows(w: Tensor, n_heads: int) -> Tensor:
    """llama.cpp's own permutation (HF order -> GGUF order); the inverse of :func:`unpermute_rope_rows`."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def state_dict(source: str | os.PathLike[str] | GGUFFile, cfg: ModelConfig | None = None, *,
               undo_rope_permutation: bool = True) -> dict[str, Tensor]:
    """Every tensor of the file, dequantized to float32, under the reference's parameter names."""
    f = _source(source)
    cfg = cfg or config(f, undo_rope_permutation=undo_rope_permutation)
    d, m, v = cfg.d_model, cfg.mlp_dim, cfg.vocab_size
    q_rows, kv_rows = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    used: set[str] = set()

    def take(name: str, shape: tuple[int, ...]) -> Tensor:
        used.add(name)
        return f.tensor(name, shape)

    def rope_rows(w: Tensor, heads: int) -> Tensor:
        return unpermute_rope_rows(w, heads) if undo_rope_permutation else w

    out: dict[str, Tensor] = {"embed.E": take("token_embd.weight", (v, d))}
    for i in range(cfg.n_layers):
        g, r = f"blk.{i}.", f"blocks.{i}."
        out[r + "N1.weight"] = take(g + "attn_norm.weight", (d,))
        out[r + "attn.W_Q"] = linear(rope_rows(take(g + "attn_q.weight", (q_rows, d)), cfg.n_heads))
        out[r + "attn.W_K"] = linear(rope_rows(take(g + "attn_k.weight", (kv_rows, d)), cfg.kv_heads))
        out[r + "attn.W_V"] = linear(take(g + "attn_v.weight", (kv_rows, d)))
        out[r + "attn.W_O"] = linear(take(g + "attn_output.weight", (d, q_rows)))
        out[r + "N2.weight"] = take(g + "ffn_norm.weight", (d,))
        out[r + "mlp.W_gate"] = linear(take(g + "ffn_gate.weight", (m, d)))
        out[r + "mlp.W_in"] = linear(take(g + "ffn_up.weight", (m, d)))
        out[r + "mlp.W_out"] = linear(take(g + "ffn_down.weight", (d, m)))
    out["final_norm.weight"] = take("output_norm.weight", (d,))
    if not cfg.tied_embeddings:
        out["U"] = linear(take("output.weight", (v, d)))
    left = sorted(set(f.tensor_names) - used)
    if left:
        raise UnsupportedConfig(f"GGUF file holds tensors this converter does not map, so it uses a wiring the "
                                f"reference lacks: {left[:8]}")
    return out


def load(source: str | os.PathLike[str] | GGUFFile, *, device: torch.device | str | None = None,
         dtype: torch.dtype = torch.float32, undo_rope_permutation: bool = True) -> Transformer:
    """A reference Transformer with the file's weights (dequantized to float32, then cast to ``dtype``).

    The dequantized tensors are the model's parameters (transposed views where the
    reference's orientation differs): it is built on the meta device and they are assigned
    in (``reference.convert.assemble``), never allocated and copied a second time.
    """
    from reference.convert import assemble

    f = _source(source)
    cfg = config(f, undo_rope_permutation=undo_rope_permutation)
    weights = state_dict(f, cfg, undo_rope_permutation=undo_rope_permutation)
    return assemble(cfg, weights, device=device, dtype=dtype)


# ------------------------------------------------------------------------------ tokenizer


class GGUFByteBPETokenizer(ByteBPETokenizer):
    """A ByteBPETokenizer whose vocabulary may lack some of the 256 byte tokens, as trained files can.

    SmolLM2's lacks 21: six control characters (0x04 0x06 0x13 0x14 0x16 0x1d), the
    lead bytes 0xf1 0xf2 (code points U+40000..U+BFFFF) and nine bytes that valid
    UTF-8 never contains (0xc0 0xc1 0xf5..0xff). HuggingFace tokenizers' BPE, with
    no unknown token and no byte fallback, silently drops such a byte (llama.cpp too);
    this class never drops input: ``encode`` raises a ValueError naming the character,
    its code point and its index (ByteBPETokenizer.encode, claim TOK-1), so every text it
    encodes survives encode/decode. ``missing_bytes`` lists the bytes.
    """

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]],
                 special_tokens: dict[str, int] | None = None, pattern: str = GPT2_PATTERN, *,
                 ignore_merges: bool = False) -> None:
        specials = dict(special_tokens or {})
        size = len(vocab) + len(specials)
        missing = [b for b, c in enumerate(BYTE_TO_CHAR) if c not in vocab]
        # The base class insists on all 256 byte tokens (its lossless guarantee): give the missing ones
        # temporary ids past the end, then take them out again, so ids stay 0..V-1 and none can be produced.
        padded = {**vocab, **{BYTE_TO_CHAR[b]: size + k for k, b in enumerate(missing)}}
        super().__init__(padded, merges, specials, pattern, ignore_merges=ignore_merges)
        if any(i >= size for pair, (_rank, merged) in self._merge_ranks.items() for i in (*pair, merged)):
            raise UnsupportedConfig("tokenizer.ggml.merges use a byte token that tokenizer.ggml.tokens lacks")
        for b in missing:
            del self._vocab[BYTE_TO_CHAR[b]]
            self._byte_ids[b] = -1
        del self._id_to_token[size:]
        del self._id_to_bytes[size:]
        self.missing_bytes: list[int] = missing


def gguf_tokenizer(source: str | os.PathLike[str] | GGUFFile) -> GGUFByteBPETokenizer:
    """The reference byte-level BPE tokenizer described by the file's ``tokenizer.ggml.*`` metadata.

    ``tokens`` give the ids (their order), ``merges`` the ranked merges ("a b"),
    ``token_type`` which tokens are control tokens (they become special tokens,
    matched in text with ``encode(text, allow_special=True)``), and ``pre`` the
    pre-tokenizer, read as llama.cpp reads it (PRE_TOKENIZERS). Text needing a byte token the
    vocabulary lacks is refused with a ValueError, never dropped (GGUFByteBPETokenizer).

    transformers (5.23) reads the same file with the plain GPT-2 regex, because its
    table of GGUF pre-tokenizers has no "smollm" entry; the two agree except where a
    run of two or more whitespace characters precedes a digit ("a  1": llama.cpp and
    SmolLM2's own tokenizer.json give "a", "  ", "1"; transformers gives "a", " ", " 1").
    """
    f = _source(source)
    model = f.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise UnsupportedConfig(f"tokenizer.ggml.model={model!r} is not supported: only byte-level BPE ('gpt2')")
    pre = f.get("tokenizer.ggml.pre")  # no default: llama.cpp's "default" is a different, four-regex split
    if pre not in PRE_TOKENIZERS:
        raise UnsupportedConfig(f"tokenizer.ggml.pre={pre!r} is not supported; known: {sorted(PRE_TOKENIZERS)}")
    pattern, ignore_merges = PRE_TOKENIZERS[pre]
    tokens: list[str] = f.get("tokenizer.ggml.tokens")
    types: list[int] = f.get("tokenizer.ggml.token_type", [NORMAL] * len(tokens))
    vocab: dict[str, int] = {}
    specials: dict[str, int] = {}
    for i, (token, kind) in enumerate(zip(tokens, types, strict=True)):
        if kind == CONTROL:
            specials[token] = i
        elif kind == NORMAL:
            vocab[token] = i
        else:
            raise UnsupportedConfig(f"tokenizer.ggml.token_type of {token!r} (id {i}) is {kind}; only NORMAL (1) "
                                    "and CONTROL (3) tokens are read here")
    merges = []
    for k, merge in enumerate(f.get("tokenizer.ggml.merges")):
        parts = merge.split(" ")
        if len(parts) != 2:
            raise UnsupportedConfig(f"tokenizer.ggml.merges[{k}]={merge!r} is not two tokens separated by a space")
        merges.append((parts[0], parts[1]))
    return GGUFByteBPETokenizer(vocab, merges, specials, pattern, ignore_merges=ignore_merges)
