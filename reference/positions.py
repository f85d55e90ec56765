"""Order: how a position enters the computation.

Attention by itself treats its inputs as a set (claim POS-1); positions break the
symmetry. Three schemes are common:

- additive (learned table or fixed sinusoids): h0 = E[t] + P[pos], so one token at
  two positions starts as two different vectors (POS-2);
- rotary: queries and keys are turned by an angle proportional to their position,
  which keeps their lengths and makes q_m . k_n depend on m - n only (POS-3);
- ALiBi: a per-head penalty proportional to the distance between query and key is
  added to the scores (Bloom).

Each scheme is one object below (``SCHEMES``, by the name ``ModelConfig.positions`` takes): what
it adds to the input, the angles that turn queries and keys, the bias it adds to the scores.
The model, the targets and the claims ask the scheme; none of them compares names.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from reference.config import ModelConfig


def positions_from_mask(mask: Tensor, offset: Tensor) -> Tensor:
    """Position of each token: count of real tokens before it, plus the cache's offset.

    mask [batch, seq] bool, offset [batch] long -> [batch, seq] long. Left padding
    gets position 0 (its value is never read by a real token).
    """
    pos = offset[:, None] + mask.long().cumsum(dim=1) - 1
    return pos.clamp(min=0)


def token_positions(real: Tensor, offset: Tensor, past: int) -> Tensor:
    """The positions stage: ``positions_from_mask`` (``past``, the count of cached slots, is not needed)."""
    return positions_from_mask(real, offset)


def sinusoidal_table(n_positions: int, d_model: int, *, device: torch.device | None = None,
                     dtype: torch.dtype = torch.float32) -> Tensor:
    """The fixed sin/cos table of "Attention Is All You Need": [n_positions, d_model]."""
    pos = torch.arange(n_positions, dtype=torch.float64, device=device)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float64, device=device) / d_model)
    table = torch.zeros(n_positions, d_model, dtype=torch.float64, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table.to(dtype)


class LearnedPositions(nn.Module):
    """A trained table P of one row per position: [max_positions, d_model]."""

    def __init__(self, max_positions: int, d_model: int, *,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.P = nn.Parameter(torch.empty(max_positions, d_model, device=device, dtype=dtype))

    def forward(self, pos: Tensor) -> Tensor:
        return self.P[pos]  # [batch, seq, d_model]


def rotary_angles(pos: Tensor, rotary_dim: int, theta: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos and sin of pos * theta^(-2i/rotary_dim): [batch, seq] -> two [batch, 1, seq, rotary_dim // 2].

    Angles are computed in float32 (float64 for float64 models) whatever the model dtype.
    """
    work = torch.float64 if dtype == torch.float64 else torch.float32
    inv_freq = 1.0 / theta ** (torch.arange(0, rotary_dim, 2, device=pos.device, dtype=work) / rotary_dim)
    angles = pos.to(work)[:, None, :, None] * inv_freq  # [batch, 1, seq, rotary_dim // 2]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor, interleaved: bool = False) -> Tensor:
    """Rotate the first rotary_dim coordinates of each head of x [batch, heads, seq, d_head].

    Coordinates are paired either as halves (i, i + r/2), the GPT-NeoX/Llama layout, or
    as neighbours (2i, 2i + 1), the GPT-J layout. Each pair is turned by its angle, so
    lengths are kept (claim POS-3). The remaining coordinates pass through unchanged.
    """
    r = 2 * cos.shape[-1]
    x_rot, x_pass = x[..., :r], x[..., r:]
    if interleaved:
        a, b = x_rot[..., 0::2], x_rot[..., 1::2]
        turned = torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2)
    else:
        a, b = x_rot[..., : r // 2], x_rot[..., r // 2 :]
        turned = torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)
    return torch.cat((turned, x_pass), dim=-1) if x_pass.shape[-1] else turned


def alibi_slopes(n_heads: int) -> Tensor:
    """The per-head slopes of ALiBi (Press et al.), geometric in 2^(-8/n), as in Bloom: [n_heads] float64."""
    closest = 2 ** math.floor(math.log2(n_heads))
    base = 2.0 ** (-(2.0 ** -(math.log2(closest) - 3)))
    slopes = [base ** (i + 1) for i in range(closest)]
    if closest != n_heads:
        extra = 2.0 ** (-(2.0 ** -(math.log2(2 * closest) - 3)))
        slopes += [extra ** (2 * i + 1) for i in range(n_heads - closest)]
    return torch.tensor(slopes, dtype=torch.float64)


def alibi_bias(slopes: Tensor, q_pos: Tensor, k_pos: Tensor, dtype: torch.dtype) -> Tensor:
    """Score penalty slope_h * (k_pos - q_pos): [batch, heads, q, k].

    Only differences of positions matter to the softmax, so this equals Bloom's
    slope_h * k_pos up to a per-row constant.
    """
    dist = (k_pos[:, None, None, :] - q_pos[:, None, :, None]).to(torch.float32)  # [batch, 1, q, k]
    return (slopes.to(device=dist.device, dtype=torch.float32)[None, :, None, None] * dist).to(dtype)


# ============================================================================================ the schemes
class PositionScheme:
    """How positions enter: at the input, by turning queries and keys, or as a bias on the scores.

    The defaults are "not at all" (``NoPositions``); each scheme overrides what it does.
    """

    name = ""
    additive = False  # adds a vector P[pos] to each token's embedding (POS-2)
    learned = False  # that vector is a row of a trained table (the model holds a LearnedPositions)
    rotates = False  # turns queries and keys by position (POS-3)
    biases_scores = False  # adds a distance penalty to the scores (needs an explicit mask, never the causal flag)

    @property
    def sees_order(self) -> bool:
        """Whether the model can tell one order of tokens from another (POS-1)."""
        return self.additive or self.rotates or self.biases_scores

    def check(self, cfg: ModelConfig) -> None:
        """Raise ValueError when ``cfg`` cannot carry this scheme."""

    def added(self, pos: Tensor, cfg: ModelConfig, table: LearnedPositions | None, dtype: torch.dtype) -> Tensor | None:
        """What is added to the token rows at positions ``pos`` [batch, seq]: [batch, seq, d_model], or None."""
        return None

    def angles(self, pos: Tensor, cfg: ModelConfig, dtype: torch.dtype) -> tuple[Tensor, Tensor] | None:
        """cos and sin that turn queries and keys at positions ``pos`` (``apply_rotary``), or None."""
        return None

    def bias(self, q_pos: Tensor, k_pos: Tensor, cfg: ModelConfig, dtype: torch.dtype) -> Tensor | None:
        """What is added to the scores of queries at ``q_pos`` and keys at ``k_pos``: [batch, heads, q, k], or None."""
        return None

    def __repr__(self) -> str:
        return f"<positions {self.name!r}>"


class NoPositions(PositionScheme):
    """No positions at all: attention sees a set, only the causal mask breaks the symmetry (POS-1)."""

    name = "none"


class Learned(PositionScheme):
    """A trained table P, one row per position, added to the token rows (GPT-2)."""

    name = "learned"
    additive = learned = True

    def added(self, pos: Tensor, cfg: ModelConfig, table: LearnedPositions | None, dtype: torch.dtype) -> Tensor:
        assert table is not None, "a learned scheme needs the model's table"
        return table(pos)  # type: ignore[no-any-return]


class Sinusoidal(PositionScheme):
    """The fixed sin/cos table added to the token rows ("Attention Is All You Need")."""

    name = "sinusoidal"
    additive = True

    def check(self, cfg: ModelConfig) -> None:
        if cfg.d_model % 2 != 0:
            raise ValueError(f"ModelConfig.d_model={cfg.d_model} must be even for sinusoidal positions")

    def added(self, pos: Tensor, cfg: ModelConfig, table: LearnedPositions | None, dtype: torch.dtype) -> Tensor:
        return sinusoidal_table(cfg.max_positions, cfg.d_model, device=pos.device, dtype=dtype)[pos]


class Rotary(PositionScheme):
    """Queries and keys turned by angles proportional to position (Llama, GPT-NeoX, GPT-J)."""

    name = "rotary"
    rotates = True

    def check(self, cfg: ModelConfig) -> None:
        if cfg.rotary_dim < 2 or cfg.rotary_dim % 2 != 0:
            raise ValueError(
                f"ModelConfig.rotary_fraction={cfg.rotary_fraction} gives a rotary width of {cfg.rotary_dim} "
                f"(int(d_head * rotary_fraction), d_head={cfg.head_dim}); with positions='rotary' it must be "
                "a positive even number of coordinates (rotations turn pairs; a width of 0 encodes no position)"
            )

    def angles(self, pos: Tensor, cfg: ModelConfig, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        return rotary_angles(pos, cfg.rotary_dim, cfg.rotary_theta, dtype)


class ALiBi(PositionScheme):
    """A per-head penalty proportional to the query-key distance, added to the scores (Bloom)."""

    name = "alibi"
    biases_scores = True

    def bias(self, q_pos: Tensor, k_pos: Tensor, cfg: ModelConfig, dtype: torch.dtype) -> Tensor:
        return alibi_bias(alibi_slopes(cfg.n_heads), q_pos, k_pos, dtype)


# the names ModelConfig.positions takes; "none" first, the simplest case Hypothesis shrinks to
SCHEMES: dict[str, PositionScheme] = {s.name: s for s in (NoPositions(), Learned(), Sinusoidal(), Rotary(), ALiBi())}
