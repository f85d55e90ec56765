"""Hypothesis strategies for the spec's inputs: configs, token IDs, logits, temperatures.

Every strategy draws small values (tiny models, short sequences) so thousands of
examples run on a laptop CPU, and shrinks towards the simplest case: one layer,
one head, short sequences, logits near zero.

Realistic examples. On an expensive target (a real trained model, where each claim runs only a few examples:
``Target.realistic_examples``), the runner first runs explicit examples built from real text: while
:data:`REALISTIC` is set, :func:`target_ids`, :func:`padded_batch`, :func:`prefill_points` and the sampling-value
strategies return fixed realistic values — prompts of 5-40 tokens from :data:`REAL_PROMPTS` (cut to what the claim
asks for), a left-padded batch of prompts of different lengths, a prefill point inside the sequence, and for the
sampler claims the target's own next-token logits after a real prompt (:func:`real_logits_row`) at temperature
0.7, top-k 40 and top-p 0.9 — instead of drawing. Only then come the drawn examples, whose first is Hypothesis's
minimal one (ids [[0]], prefill 1), so a claim never sees only trivial input on a real model.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

import torch
from hypothesis import strategies as st
from torch import Tensor

from reference.config import ModelConfig
from reference.positions import SCHEMES
from spec.target import Target

T_ = TypeVar("T_")

POSITION_KINDS = tuple(SCHEMES)  # every position scheme of the reference, "none" first


@st.composite
def configs(draw: st.DrawFn, *, positions: tuple[str, ...] = POSITION_KINDS, max_layers: int = 2,
            tied: bool | None = None, unembed_bias: bool | None = None) -> ModelConfig:
    """A tiny ModelConfig over every wiring: MHA/GQA/MQA, each position kind, both norms, GELU/gated."""
    n_heads = draw(st.sampled_from([1, 2, 4]))
    n_kv = draw(st.sampled_from([d for d in (1, 2, 4) if n_heads % d == 0]))
    d_head = draw(st.sampled_from([4, 8]))
    d_model = draw(st.sampled_from([8, 16, 32]))
    pos = draw(st.sampled_from(positions))
    norm = draw(st.sampled_from(["layernorm", "rmsnorm"]))
    gated = draw(st.booleans())
    return ModelConfig(
        vocab_size=draw(st.integers(8, 64)),
        d_model=d_model,
        n_layers=draw(st.integers(1, max_layers)),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_head=d_head,
        d_mlp=draw(st.sampled_from([16, 32])),
        mlp_activation=draw(st.sampled_from(["gelu", "gelu_tanh", "silu", "relu"])),
        mlp_gated=gated,
        mlp_bias=draw(st.booleans()),
        norm=norm,  # type: ignore[arg-type]
        norm_bias=norm == "layernorm" and draw(st.booleans()),
        positions=pos,  # type: ignore[arg-type]
        max_positions=32,
        rotary_fraction=draw(st.sampled_from([0.5, 1.0])),
        rotary_interleaved=draw(st.booleans()),
        attn_qkv_bias=draw(st.booleans()),
        attn_out_bias=draw(st.booleans()),
        parallel_residual=draw(st.booleans()),
        tied_embeddings=draw(st.booleans()) if tied is None else tied,
        unembed_bias=draw(st.booleans()) if unembed_bias is None else unembed_bias,
    )


def built_configs(target: Target, *, positions: tuple[str, ...] = POSITION_KINDS, max_layers: int = 2,
                  tied: bool | None = None, unembed_bias: bool | None = None) -> st.SearchStrategy[ModelConfig]:
    """:func:`configs` as ``target.build`` can honour them (Target.buildable); a draw whose buildable form breaks
    one of the constraints asked for here stays as drawn, so build refuses it by name."""
    def nearest(drawn: ModelConfig) -> ModelConfig:
        near = target.buildable(drawn)
        kept = (near.positions in positions and (tied is None or near.tied_embeddings == tied)
                and (unembed_bias is None or near.unembed_bias == unembed_bias))
        return near if kept else drawn

    return configs(positions=positions, max_layers=max_layers, tied=tied, unembed_bias=unembed_bias).map(nearest)


seeds = st.integers(0, 2**31 - 1)


def token_ids(vocab_size: int, *, min_len: int = 1, max_len: int = 12, batch: int = 1,
              max_positions: int = 1 << 30) -> st.SearchStrategy[Tensor]:
    """A [batch, seq] int64 tensor of IDs in [0, vocab_size)."""
    hi = max(min_len, min(max_len, max_positions))

    @st.composite
    def draw_ids(draw: st.DrawFn) -> Tensor:
        n = draw(st.integers(min_len, hi))
        rows = [draw(st.lists(st.integers(0, vocab_size - 1), min_size=n, max_size=n)) for _ in range(batch)]
        return torch.tensor(rows, dtype=torch.long)

    return draw_ids()


def target_ids(target: Target, *, min_len: int = 1, max_len: int = 12, batch: int = 1,
               realistic: bool = True) -> st.SearchStrategy[Tensor]:
    """Token IDs that fit the target's vocabulary and context, on its device (realistic ones while REALISTIC is set,
    unless ``realistic`` is False: a claim that needs hundreds of distinct rows, which six real prompts cannot give)."""
    real = _realistic() if realistic else None
    if real is not None:
        return st.just(real.ids(target, min_len=min_len, max_len=max_len, batch=batch))
    if batch * max_len > MAX_DRAWN_IDS:
        return seeded_ids(target.vocab_size, min_len=min_len, max_len=max_len, batch=batch,
                          max_positions=target.max_positions).map(lambda t: t.to(target.device))
    return token_ids(target.vocab_size, min_len=min_len, max_len=max_len, batch=batch,
                     max_positions=target.max_positions).map(lambda t: t.to(target.device))


# More IDs than this are not drawn one by one: Hypothesis holds 8,192 choices per example (more overrun it, and its
# large_base_example health check fails the claim), and ATT-1 on a d_model = 2048 model needs 2,121 rows of up to 4.
MAX_DRAWN_IDS = 4096


def seeded_ids(vocab_size: int, *, min_len: int = 1, max_len: int = 12, batch: int = 1,
               max_positions: int = 1 << 30) -> st.SearchStrategy[Tensor]:
    """A [batch, seq] int64 tensor of IDs uniform in [0, vocab_size) from a drawn length and seed: the same kind of
    input as :func:`token_ids` for a batch too big to draw ID by ID (shrinking then shortens it and lowers the
    seed, not single IDs)."""
    hi = max(min_len, min(max_len, max_positions))

    @st.composite
    def draw_ids(draw: st.DrawFn) -> Tensor:
        n = draw(st.integers(min_len, hi), label="length")
        seed = draw(seeds, label="ids_seed")
        return torch.randint(0, vocab_size, (batch, n), generator=generator(seed))

    return draw_ids()


PaddedBatch = tuple[Tensor, Tensor, list[Tensor]]


def padded_batch(target: Target, *, max_len: int = 8, max_rows: int = 3,
                 reserve: int = 0) -> st.SearchStrategy[PaddedBatch]:
    """Prompts of different lengths, left-padded with a drawn pad ID (claims GEN-2, GEN-3, REF-1).

    Returns (ids [B, L], attention_mask [B, L] of 0/1, the unpadded rows as [1, l_r] tensors);
    at least two lengths differ and L + reserve <= target.max_positions. While REALISTIC is set: real prompts
    cut to 3 different lengths, padded with the last vocabulary ID.
    """
    cap = max(2, min(max_len, target.max_positions - reserve))
    real = _realistic()
    if real is not None:
        lengths = [cap, max(1, cap // 2), max(1, (3 * cap) // 4)][:max(2, max_rows)]
        return st.just(_left_padded(target, real.rows_of_lengths(target, lengths), target.vocab_size - 1))

    @st.composite
    def draw_batch(draw: st.DrawFn) -> PaddedBatch:
        n_rows = draw(st.integers(2, max_rows), label="rows")
        lengths = [draw(st.integers(1, cap), label=f"len{r}") for r in range(n_rows)]
        if len(set(lengths)) == 1:  # force unequal lengths, so some row is padded
            lengths[0] = lengths[0] - 1 if lengths[0] > 1 else 2
        v = target.vocab_size
        rows = [draw(st.lists(st.integers(0, v - 1), min_size=n, max_size=n), label=f"row{r}")
                for r, n in enumerate(lengths)]
        return _left_padded(target, rows, draw(st.integers(0, v - 1), label="pad_id"))

    return draw_batch()


def _left_padded(target: Target, rows: list[list[int]], pad: int) -> PaddedBatch:
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long, device=target.device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long,
                        device=target.device)
    singles = [torch.tensor([r], dtype=torch.long, device=target.device) for r in rows]
    return ids, mask, singles


def prefill_points(length: int) -> st.SearchStrategy[int]:
    """Where cached decoding starts in a sequence of ``length`` tokens: 1..length (realistic: inside it)."""
    if _realistic() is not None:
        return st.just(max(1, min(length - 1, length // 2 + 1)))
    return st.integers(1, length)


def realistic_or(strategy: st.SearchStrategy[T_], value: T_) -> st.SearchStrategy[T_]:
    """``strategy`` unchanged while drawing; ``value`` while a realistic example runs."""
    return st.just(value) if _realistic() is not None else strategy


def sampling_temperatures(strategy: st.SearchStrategy[float]) -> st.SearchStrategy[float]:
    """A sampler claim's temperatures: ``strategy``, or 0.7 in a realistic example (a common chat setting)."""
    return realistic_or(strategy, 0.7)


def top_ks(lo: int, hi: int) -> st.SearchStrategy[int]:
    """A top-k value in [lo, hi] (realistic: 40, or the nearest value in range)."""
    return realistic_or(st.integers(lo, hi), min(max(40, lo), hi))


def top_ps(lo: float, hi: float) -> st.SearchStrategy[float]:
    """A top-p value in [lo, hi] (realistic: 0.9, or the nearest value in range)."""
    return realistic_or(st.floats(lo, hi), min(max(0.9, lo), hi))


def real_logits_row(target: Target, width: int = 64) -> list[float] | None:
    """In a realistic example: the ``width`` largest next-token logits the target itself gives after a real
    prompt, in token-ID order — the head of a real distribution, wide enough that top-k = 40 and top-p = 0.9 cut
    inside it (the sampler claims' realistic row); None while drawing, where the claim draws its own row."""
    real = _realistic()
    if real is None:
        return None
    ids = torch.tensor([real._prompt(0, target)], dtype=torch.long, device=target.device)
    last = target.logits(ids)[0, -1].detach().double().cpu()  # [V]
    keep = torch.topk(last, min(width, last.numel())).indices.sort().values
    return [float(x) for x in last[keep]]


# Real text for the realistic examples: 5-40 tokens each in a byte-level BPE vocabulary of ~50k (SmolLM2's).
REAL_PROMPTS: tuple[str, ...] = (
    "The capital of France is Paris, and the capital of Italy is",
    "When Mary and John went to the store, John gave a drink to",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "In 1969, two astronauts walked on the surface of the Moon while a third stayed in orbit. Their names were",
    "Water boils at 100 degrees Celsius at sea level, but at the top of a high mountain it boils at a",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
)


@dataclass
class Realistic:
    """One realistic example: which prompt comes first, and the real prompts' token IDs (see module docstring)."""

    index: int
    prompts: list[list[int]]
    consulted: bool = False  # set when a strategy used this example's realistic values

    def _prompt(self, k: int, target: Target) -> list[int]:
        """Prompt k in the target's vocabulary: IDs it lacks are dropped, or, for a model built with a vocabulary
        too small for any of them (RES-1's built models), all IDs are taken modulo its size, so no row is empty."""
        row = self.prompts[(self.index + k) % len(self.prompts)]
        kept = [t for t in row if t < target.vocab_size] or [t % target.vocab_size for t in row]
        return kept[:target.max_positions]

    def ids(self, target: Target, *, min_len: int, max_len: int, batch: int) -> Tensor:
        """[batch, n] real prompts cut to one length n in [min_len, max_len]: as long as the shortest allows."""
        rows = [self._prompt(k, target) for k in range(batch)]
        n = max(min_len, min(max_len, min(len(r) for r in rows), target.max_positions))
        rows = [(r * (n // max(1, len(r)) + 1))[:n] for r in rows]  # a prompt shorter than min_len repeats
        return torch.tensor(rows, dtype=torch.long, device=target.device)

    def rows_of_lengths(self, target: Target, lengths: list[int]) -> list[list[int]]:
        """Real prompts cut to the given lengths (a left-padded batch's rows)."""
        return [self._prompt(k, target)[:n] for k, n in enumerate(lengths)]


REALISTIC: ContextVar[Realistic | None] = ContextVar("realistic", default=None)


def _realistic() -> Realistic | None:
    """The realistic example being run, marked as consulted; None while drawing."""
    real = REALISTIC.get()
    if real is not None:
        real.consulted = True
    return real


def realistic_prompts(target: Target) -> list[list[int]]:
    """REAL_PROMPTS in the target's own tokenizer."""
    tok = target.tokenizer()
    return [tok.encode(p) for p in REAL_PROMPTS]


def logit_vectors(*, min_vocab: int = 2, max_vocab: int = 40, magnitude: float = 30.0,
                  batch: int = 1) -> st.SearchStrategy[Tensor]:
    """[batch, V] float64 logits with |z| <= magnitude (no NaN/inf)."""
    floats = st.floats(-magnitude, magnitude, allow_nan=False, allow_infinity=False, width=64)

    @st.composite
    def draw_logits(draw: st.DrawFn) -> Tensor:
        v = draw(st.integers(min_vocab, max_vocab))
        rows = [draw(st.lists(floats, min_size=v, max_size=v)) for _ in range(batch)]
        return torch.tensor(rows, dtype=torch.float64)

    return draw_logits()


def temperatures(lo: float = 0.05, hi: float = 20.0) -> st.SearchStrategy[float]:
    """Positive temperatures, log-uniform-ish between lo and hi."""
    return st.floats(math.log(lo), math.log(hi)).map(math.exp)


def scales(lo: float = 0.01, hi: float = 100.0) -> st.SearchStrategy[float]:
    """Positive scale factors a, log-uniform-ish between lo and hi."""
    return st.floats(math.log(lo), math.log(hi)).map(math.exp)


def permutations(n: int) -> st.SearchStrategy[Tensor]:
    """A random permutation of range(n) as an int64 tensor."""
    return st.permutations(list(range(n))).map(lambda p: torch.tensor(p, dtype=torch.long))


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh torch.Generator on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)


# -- logits on a grid for the sampler claims (DEC-1 .. DEC-4; see spec/claims/dec.py's docstring) ------
def grid_logits(*, min_vocab: int = 2, max_vocab: int = 16, lo: int = -16, hi: int = 16, step: float = 0.25,
                batch: int = 1) -> st.SearchStrategy[list[list[float]]]:
    """[batch][V] logits on the grid ``step * k`` for integers lo <= k <= hi (exact in every float dtype)."""

    @st.composite
    def draw(d: st.DrawFn) -> list[list[float]]:
        v = d(st.integers(min_vocab, max_vocab), label="vocab")
        row = st.lists(st.integers(lo, hi), min_size=v, max_size=v)
        return [[step * k for k in d(row)] for _ in range(batch)]

    return draw()


def spread(row: list[float], step: float = 0.25) -> list[float]:
    """The row, made non-uniform: all-equal rows get their first entry raised by 8 steps."""
    if len(set(row)) == 1:
        return [row[0] + 8 * step, *row[1:]]
    return row


def unique_max(row: list[float], step: float = 0.25) -> list[float]:
    """The row with a unique maximum: the first of tied maxima is raised by one grid step."""
    m = max(row)
    if row.count(m) > 1:
        i = row.index(m)
        return [*row[:i], m + step, *row[i + 1:]]
    return row


temperatures_away_from_one = st.one_of(st.floats(0.25, 0.8), st.floats(1.25, 4.0))
