"""Meta-tests of claims POS-1..3 and ATT-1..6 (spec/claims/pos.py, spec/claims/att.py).

Each claim must pass on the reference (several presets, float32 and float64) and fail
on a target that carries one realistic bug. Hypothesis runs derandomized; failing runs
skip shrinking (only the verdict matters here). Bugs inside the reference's attention
are injected by patching one function of reference.attention for the duration of one
call (or one claim run), which leaves every other test untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast
from unittest import mock

import pytest
import torch
from hypothesis import Phase, settings
from torch import Tensor

import reference
import reference.attention as attention
from reference.block import Block
from reference.config import ModelConfig
from reference.positions import apply_rotary, rotary_angles
from spec.catalog import CATALOG, load_all
from spec.runner import Result, run_claim
from spec.target import Target
from spec.targets.reference_target import ReferenceTarget

load_all()

BROKEN_MUTANT = ("TypeError", "AttributeError", "NameError")  # a crash in the mutant is no kill
PASS = settings(max_examples=8, derandomize=True, database=None)
FAIL = settings(max_examples=30, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.reuse, Phase.generate])

CLAIMS = ["POS-1", "POS-2", "POS-3", "ATT-1", "ATT-2", "ATT-3", "ATT-4", "ATT-5", "ATT-6"]
# learned, sinusoidal, rotary (halves, partial, interleaved), ALiBi, none; MHA, GQA, MQA
PRESETS = ["gpt2-tiny", "llama-tiny", "mqa-sinusoidal", "gptj-tiny", "bloom-tiny", "nopos-tiny"]


def run(claim_id: str, target: Target, profile: settings) -> Result:
    return run_claim(CATALOG[claim_id], target, profile=profile)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("claim_id", CLAIMS)
def test_passes_on_reference(claim_id: str, preset: str, dtype: torch.dtype) -> None:
    r = run(claim_id, ReferenceTarget.from_preset(preset, dtype=dtype), PASS)
    assert r.status == "passed", (r.detail, r.counterexample)
    assert r.examples >= 1


# -- mutants -------------------------------------------------------------------------------------------
def _model(preset: str, **changes: object) -> reference.Transformer:
    return reference.build(reference.preset(preset).with_(**changes))


class PositionsByDefault(ReferenceTarget):
    """Its builder adds sinusoidal positions even when the config asks for none."""

    def build(self, config: ModelConfig, seed: int = 0) -> ReferenceTarget:
        cfg = config.with_(positions="sinusoidal") if config.positions == "none" else config
        return ReferenceTarget(reference.build(cfg, seed=seed, dtype=self.dtype), name="mutant[built]")


class PositionsDropped(ReferenceTarget):
    """Its builder ignores the position scheme of the config."""

    def build(self, config: ModelConfig, seed: int = 0) -> ReferenceTarget:
        return ReferenceTarget(reference.build(config.with_(positions="none"), seed=seed, dtype=self.dtype),
                               name="mutant[built]")


class PositionsForgotten(ReferenceTarget):
    """The input stage forgets to add the position table."""

    @torch.no_grad()
    def embed(self, ids: Tensor) -> Tensor:
        return self.model.embed(ids)


class PositionsFromOne(ReferenceTarget):
    """Counts positions from 1 (a cache offset applied to a fresh sequence)."""

    @torch.no_grad()
    def embed(self, ids: Tensor) -> Tensor:
        pos = torch.arange(1, ids.shape[1] + 1, device=ids.device).expand_as(ids)
        return self.model._embed(ids, pos)


class KeysNotRotated(ReferenceTarget):
    """Rotates the queries but not the keys."""

    @torch.no_grad()
    def queries_keys(self, layer: int, ids: Tensor) -> tuple[Tensor, Tensor]:
        states = self.residual_states(ids)
        blk = cast(Block, self.model.blocks[layer])
        q, k, _ = blk.attn.project(blk.N1(states[layer]))
        cfg = self.model.cfg
        pos = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        cos, sin = rotary_angles(pos, cfg.rotary_dim, cfg.rotary_theta, q.dtype)
        return apply_rotary(q, cos, sin, cfg.rotary_interleaved), k


class QueriesBeforeNorm(ReferenceTarget):
    """Projects queries and keys from the residual stream before the block's norm."""

    @torch.no_grad()
    def queries_keys(self, layer: int, ids: Tensor) -> tuple[Tensor, Tensor]:
        blk = cast(Block, self.model.blocks[layer])
        q, k, _ = blk.attn.project(self.residual_states(ids)[layer])
        return q, k


class PaddingVisible(ReferenceTarget):
    """Reports attention weights computed without the attention mask, so padding keys get weight."""

    @torch.no_grad()
    def attention_weights(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        return super().attention_weights(ids, None)


def _non_causal(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float, bias: Tensor | None = None,
                causal: bool = False) -> Tensor:
    """The fused path with the causal flag dropped (k, v keep their n_kv_heads heads, as the module passes them)."""
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=False, scale=scale,
                                                            enable_gqa=k.shape[1] != q.shape[1])


class NoCausalMask(ReferenceTarget):
    """Its forward pass lets every position see the whole sequence."""

    @torch.no_grad()
    def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        with mock.patch.object(attention, "fast_attention", _non_causal):
            return super().logits(ids, attention_mask)


def _wrong_axis(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float, bias: Tensor | None = None,
                causal: bool = False) -> Tensor:
    """Causal attention whose softmax normalises over the queries (dim -2) instead of the keys."""
    n_rep = q.shape[1] // k.shape[1]
    k, v = attention.repeat_kv(k, n_rep), attention.repeat_kv(v, n_rep)
    scores = (q @ k.transpose(-1, -2)) * scale + (0 if bias is None else bias)
    t = scores.shape[-1]
    hidden = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    if mask is not None:
        hidden = hidden | ~mask
    return torch.softmax(scores.masked_fill(hidden, float("-inf")), dim=-2) @ v


class WrongAxisStream(ReferenceTarget):
    """Its residual stream mixes values with weights normalised over the wrong axis (reported weights are right)."""

    @torch.no_grad()
    def residual_states(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        with mock.patch.object(attention, "fast_attention", _wrong_axis):
            return super().residual_states(ids, attention_mask)


def _builds(cls: type[ReferenceTarget]) -> type[ReferenceTarget]:
    """A ReferenceTarget whose build() hands out ``cls`` targets (the bug lives in the built models)."""

    class Builder(ReferenceTarget):
        def build(self, config: ModelConfig, seed: int = 0) -> ReferenceTarget:
            return cls(reference.build(config, seed=seed, dtype=self.dtype), name="mutant[built]")

    Builder.__name__ = f"Builds{cls.__name__}"
    return Builder


@pytest.mark.parametrize(("claim_id", "target"), [
    ("POS-1", PositionsByDefault(_model("llama-tiny"))),
    ("POS-1", PositionsDropped(_model("llama-tiny"))),
    ("POS-2", PositionsForgotten(_model("gpt2-tiny"))),
    ("POS-2", PositionsFromOne(_model("mqa-sinusoidal"))),
    ("POS-3", KeysNotRotated(_model("llama-tiny"))),
    ("ATT-1", QueriesBeforeNorm(_model("llama-tiny"))),
    ("ATT-2", ReferenceTarget(_model("llama-tiny", attn_scale=1 / 8))),  # 1/d_head instead of 1/sqrt(d_head)
    ("ATT-3", PaddingVisible(_model("gpt2-tiny"))),
    ("ATT-4", NoCausalMask(_model("llama-tiny"))),
    ("ATT-5", _builds(WrongAxisStream)(_model("llama-tiny"))),
], ids=["POS-1-positions-by-default", "POS-1-positions-dropped", "POS-2-forgotten", "POS-2-from-one",
        "POS-3-keys-not-rotated", "ATT-1-before-norm", "ATT-2-scale-1/d", "ATT-3-padding-visible",
        "ATT-4-no-causal-mask", "ATT-5-wrong-axis"])
def test_claims_fail_on_mutants(claim_id: str, target: ReferenceTarget) -> None:
    r = run(claim_id, target, FAIL)
    assert r.status == "failed", (r.status, r.detail)
    assert not r.detail.startswith(BROKEN_MUTANT), f"the mutant itself is broken: {r.detail}"


def _tiled(x: Tensor, n_rep: int) -> Tensor:
    """GQA with the key/value heads tiled (head h reads kv head h % kv_heads) instead of interleaved."""
    return x if n_rep == 1 else x.repeat(1, n_rep, 1, 1)


_FAST_ATTENTION = attention.fast_attention


def _tiled_fast(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float, bias: Tensor | None = None,
                causal: bool = False) -> Tensor:
    """The fused path with its key/value heads tiled (``_tiled``) instead of grouped."""
    n_rep = q.shape[1] // k.shape[1]
    return _FAST_ATTENTION(q, _tiled(k, n_rep), _tiled(v, n_rep), mask, scale, bias, causal)


def _merged_transposed(x: Tensor) -> Tensor:
    """Heads concatenated feature-major ([T, d_head, heads]) where W_O expects head-major rows."""
    b, h, t, d = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, t, h * d)


# The fused path shares key/value heads inside SDPA (enable_gqa), so its tiled-heads bug lives in fast_attention.
@pytest.mark.parametrize(("name", "bug"), [("fast_attention", _tiled_fast), ("merge_heads", _merged_transposed)],
                         ids=["ATT-6-tiled-kv", "ATT-6-heads-transposed"])
def test_att_6_fails_on_wrong_head_wiring(name: str, bug: Callable[..., Tensor]) -> None:
    with mock.patch.object(attention, name, bug):
        r = run("ATT-6", ReferenceTarget(_model("llama-tiny")), FAIL)
    assert r.status == "failed", (r.status, r.detail)
    assert not r.detail.startswith(BROKEN_MUTANT), f"the mutant itself is broken: {r.detail}"
