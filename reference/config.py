"""The model's shape and wiring, as one frozen dataclass.

Every choice the documents discuss (how wide each stage is, how many heads share
keys and values, how positions enter, which norm and nonlinearity, whether the
unembedding is tied to the embedding) is a field here. Invalid combinations are
rejected at construction, with the offending field named, so a wrong model can
never be built silently.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import Literal

from reference.positions import SCHEMES, PositionScheme

PositionKind = Literal["learned", "sinusoidal", "rotary", "alibi", "none"]
NormKind = Literal["layernorm", "rmsnorm"]
Activation = Literal["gelu", "gelu_tanh", "silu", "relu"]

POSITION_KINDS: tuple[str, ...] = tuple(SCHEMES)  # the schemes of reference.positions, by name
NORM_KINDS: tuple[str, ...] = ("layernorm", "rmsnorm")
ACTIVATIONS: tuple[str, ...] = ("gelu", "gelu_tanh", "silu", "relu")
BOOL_FIELDS: tuple[str, ...] = ("mlp_gated", "mlp_bias", "norm_bias", "rotary_interleaved", "attn_qkv_bias",
                                "attn_out_bias", "parallel_residual", "embedding_norm", "tied_embeddings",
                                "unembed_bias")


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a decoder-only transformer.

    Widths (claims EMB-5, BLK-1): the embedding, every block and the final norm
    all carry vectors of width ``d_model``; attention works in ``n_heads`` heads of
    width ``d_head``; keys and values have ``n_kv_heads`` heads (``n_heads`` for
    multi-head, 1 for multi-query, anything dividing ``n_heads`` for grouped-query).
    """

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int | None = None  # None means n_heads (MHA)
    d_head: int | None = None  # None means d_model // n_heads
    d_mlp: int | None = None  # None means 4 * d_model
    mlp_activation: Activation = "gelu"
    mlp_gated: bool = False  # SwiGLU / GeGLU: act(h W_gate) * (h W_in)
    mlp_bias: bool = True
    norm: NormKind = "layernorm"
    norm_eps: float = 1e-5
    norm_bias: bool = True  # LayerNorm only; RMSNorm never has a bias
    positions: PositionKind = "learned"
    max_positions: int = 1024
    rotary_theta: float = 10000.0
    rotary_fraction: float = 1.0  # share of each head's width that is rotated
    rotary_interleaved: bool = False  # GPT-J pairs (0,1),(2,3)… instead of halves
    attn_qkv_bias: bool = True
    attn_out_bias: bool = True
    attn_scale: float | None = None  # None means 1 / sqrt(d_head) (claim ATT-2)
    parallel_residual: bool = False  # h + Attn(N1 h) + MLP(N2 h)
    embedding_scale: float = 1.0  # Gemma multiplies the looked-up rows by sqrt(d_model)
    embedding_norm: bool = False  # Bloom normalises right after the lookup
    tied_embeddings: bool = True  # U = E^T (claim OUT-3)
    unembed_bias: bool = False

    def __post_init__(self) -> None:
        _positive(self, "vocab_size", "d_model", "n_layers", "n_heads", "max_positions")
        for name in ("n_kv_heads", "d_head", "d_mlp"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"ModelConfig.{name} must be a positive int or None, got {value!r}")
        _booleans(self, *BOOL_FIELDS)
        _numbers(self, "norm_eps", "rotary_theta", "rotary_fraction", "embedding_scale")
        if self.attn_scale is not None:
            _numbers(self, "attn_scale")
        _choice(self, "positions", POSITION_KINDS)
        _choice(self, "norm", NORM_KINDS)
        _choice(self, "mlp_activation", ACTIVATIONS)
        if self.n_heads % self.kv_heads != 0:
            raise ValueError(
                f"ModelConfig.n_kv_heads={self.kv_heads} must divide n_heads={self.n_heads} "
                "(each key/value head serves a whole group of query heads)"
            )
        if self.d_head is None and self.d_model % self.n_heads != 0:
            raise ValueError(
                f"ModelConfig.d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                "set d_head explicitly"
            )
        if not (math.isfinite(self.norm_eps) and self.norm_eps > 0):
            raise ValueError(f"ModelConfig.norm_eps must be a finite number > 0, got {self.norm_eps!r}")
        if not (0.0 < self.rotary_fraction <= 1.0):
            raise ValueError(f"ModelConfig.rotary_fraction must lie in (0, 1], got {self.rotary_fraction!r}")
        if not (math.isfinite(self.rotary_theta) and self.rotary_theta > 1.0):
            raise ValueError(f"ModelConfig.rotary_theta must be a finite number > 1, got {self.rotary_theta!r}")
        self.scheme.check(self)  # what the position scheme needs (an even rotary width, an even d_model)
        if self.attn_scale is not None and not (math.isfinite(self.attn_scale) and self.attn_scale > 0):
            raise ValueError(f"ModelConfig.attn_scale must be a finite number > 0 or None, got {self.attn_scale!r}")
        if not (math.isfinite(self.embedding_scale) and self.embedding_scale > 0):
            raise ValueError(f"ModelConfig.embedding_scale must be a finite number > 0, got {self.embedding_scale!r}")
        if self.norm == "rmsnorm" and self.norm_bias:
            raise ValueError("ModelConfig.norm_bias must be False when norm='rmsnorm' (RMSNorm has no bias)")

    @property
    def scheme(self) -> PositionScheme:
        """The position scheme named by ``positions`` (reference.positions.SCHEMES)."""
        return SCHEMES[self.positions]

    @property
    def kv_heads(self) -> int:
        """Number of key/value heads (n_heads for MHA, 1 for MQA)."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def head_dim(self) -> int:
        """Width of one attention head, d_head."""
        return self.d_model // self.n_heads if self.d_head is None else self.d_head

    @property
    def mlp_dim(self) -> int:
        """Inner width of the MLP, d_mlp."""
        return 4 * self.d_model if self.d_mlp is None else self.d_mlp

    @property
    def rotary_dim(self) -> int:
        """How many leading coordinates of each head the rotary embedding turns."""
        return int(self.head_dim * self.rotary_fraction)

    @property
    def scale(self) -> float:
        """The factor that multiplies q . k before the softmax (claim ATT-2)."""
        return 1.0 / math.sqrt(self.head_dim) if self.attn_scale is None else self.attn_scale

    def with_(self, **changes: object) -> ModelConfig:
        """A copy with some fields changed (and validated again)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def _positive(cfg: ModelConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")


def _booleans(cfg: ModelConfig, *names: str) -> None:
    """Real bools only: the string "False" is truthy, so accepting it would silently mean True."""
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, bool):
            raise ValueError(f"ModelConfig.{name} must be True or False (a bool), got {value!r}")


def _numbers(cfg: ModelConfig, *names: str) -> None:
    """Real numbers (int or float, not bool, not str); each field's range is checked after."""
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"ModelConfig.{name} must be a real number, got {value!r}")


def _choice(cfg: ModelConfig, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if value not in allowed:
        raise ValueError(f"ModelConfig.{name} must be one of {allowed}, got {value!r}")
