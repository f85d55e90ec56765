"""The position-wise MLP: widen, bend, project back.

Each position's vector is mapped to the inner width d_mlp, passed through a
nonlinearity, and projected back to d_model (claim MLP-1). Gated forms (SwiGLU,
GeGLU) multiply act(h W_gate) by a second projection h W_in. Nothing mixes
positions here: a position's output depends on its own input alone (MLP-2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reference.config import ModelConfig
from reference.linear import linear

if TYPE_CHECKING:
    from reference.stages import Stages

ACTIVATION_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "relu": F.relu,
}


class MLP(nn.Module):
    """act(h W_in + b_in) W_out + b_out, or act(h W_gate) * (h W_in) W_out when gated."""

    def __init__(self, cfg: ModelConfig, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        d, m = cfg.d_model, cfg.mlp_dim
        self.act = ACTIVATION_FUNCTIONS[cfg.mlp_activation]
        self.W_in = nn.Parameter(torch.empty(d, m, **kw))  # type: ignore[arg-type]
        self.W_gate = nn.Parameter(torch.empty(d, m, **kw)) if cfg.mlp_gated else None  # type: ignore[arg-type]
        self.W_out = nn.Parameter(torch.empty(m, d, **kw))  # type: ignore[arg-type]
        self.b_in = nn.Parameter(torch.zeros(m, **kw)) if cfg.mlp_bias else None  # type: ignore[arg-type]
        self.b_gate = (nn.Parameter(torch.zeros(m, **kw))  # type: ignore[arg-type]
                       if cfg.mlp_bias and cfg.mlp_gated else None)
        self.b_out = nn.Parameter(torch.zeros(d, **kw)) if cfg.mlp_bias else None  # type: ignore[arg-type]
        from reference.stages import REFERENCE  # (reference.stages imports this module)

        self.stages: Stages = REFERENCE

    def forward(self, x: Tensor) -> Tensor:
        """[batch, seq, d_model] -> [batch, seq, d_model] (the ``mlp`` stage)."""
        return self.stages.mlp(self, x)


def position_wise(m: MLP, x: Tensor) -> Tensor:
    """The MLP stage: each position's vector through m's weights alone (claims MLP-1, MLP-2)."""
    inner = linear(x, m.W_in, m.b_in)  # [batch, seq, d_mlp]
    if m.W_gate is not None:
        inner = m.stages.gate(m.act, linear(x, m.W_gate, m.b_gate), inner)
    else:
        inner = m.act(inner)
    return linear(inner, m.W_out, m.b_out)


def gated(act: Callable[[Tensor], Tensor], gate: Tensor, up: Tensor) -> Tensor:
    """The gate stage of SwiGLU / GeGLU: act(h W_gate) * (h W_in)."""
    return act(gate) * up
