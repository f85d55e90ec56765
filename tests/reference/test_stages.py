"""The named stages (reference/stages.py) and the position schemes (reference/positions.py), issue #15."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import Tensor

import reference
from reference.attention import scores_to_weights
from reference.config import POSITION_KINDS
from reference.positions import SCHEMES
from reference.stages import REFERENCE, Stages


def _ids(seed: int = 0) -> Tensor:
    return torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(seed))


def test_the_fused_path_is_taken_only_while_the_stages_it_skips_are_the_references() -> None:
    assert REFERENCE.fusable and Stages().fusable
    assert replace(REFERENCE, scale=lambda cfg: 1.0).fusable  # SDPA takes the scale as an argument
    for name in ("visibility", "repeat_kv", "weights", "attend"):
        same = getattr(REFERENCE, name)
        assert not replace(REFERENCE, **{name: lambda *a, f=same, **k: f(*a, **k)}).fusable, name


@pytest.mark.parametrize("preset", ["llama-tiny", "gpt2-tiny", "bloom-tiny"])
def test_a_replaced_weights_stage_runs_on_the_explicit_path(preset: str) -> None:
    """The same softmax under another name: explicit path, same logits to float32 rounding (padded and cached)."""
    fast = reference.build(reference.preset(preset), seed=1)
    renamed = reference.build(reference.preset(preset), seed=1)
    renamed.use_stages(replace(REFERENCE, weights=lambda s, m: scores_to_weights(s, m)))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[0, :2] = 0
    torch.testing.assert_close(renamed(_ids(), mask).logits, fast(_ids(), mask).logits)
    assert torch.equal(reference.generate(renamed, _ids(), 3, attention_mask=mask),
                       reference.generate(fast, _ids(), 3, attention_mask=mask))


def test_a_broken_stage_lives_in_its_model_only() -> None:
    ids = _ids()
    before = reference.build(reference.preset("llama-tiny"))(ids).logits
    broken = reference.build(reference.preset("llama-tiny"))
    broken.use_stages(replace(REFERENCE, weights=lambda s, m: torch.softmax(s.masked_fill(~m, -torch.inf), -2)))
    assert all(getattr(m, "stages", broken.stages) is broken.stages for m in broken.modules())
    assert not torch.allclose(broken(ids).logits, before, atol=1e-3)
    assert torch.equal(reference.build(reference.preset("llama-tiny"))(ids).logits, before)


def test_sampler_stages_are_the_public_functions() -> None:
    z = torch.randn(3, 11, generator=torch.Generator().manual_seed(2))
    greedy_top = replace(REFERENCE, top_k=lambda logits, k: reference.top_k_filter(logits, 1))
    assert torch.equal(reference.filtered_probabilities(z, 0.7, 5, 0.9, stages=REFERENCE),
                       reference.filtered_probabilities(z, 0.7, 5, 0.9))
    assert torch.equal(reference.sample(z, torch.Generator().manual_seed(0), 0.7, 5, stages=greedy_top), z.argmax(-1))


def test_one_object_per_position_scheme() -> None:
    assert tuple(SCHEMES) == POSITION_KINDS and next(iter(SCHEMES)) == "none"
    b, t = 2, 5
    pos = torch.arange(t).expand(b, t)
    for name, scheme in SCHEMES.items():
        assert scheme.name == name
        cfg = reference.preset("llama-tiny").with_(positions=name)
        assert cfg.scheme is scheme
        model = reference.build(cfg)
        assert (model.pos is not None) == scheme.learned
        added = scheme.added(pos, cfg, model.pos, torch.float32)
        angles = scheme.angles(pos, cfg, torch.float32)
        bias = scheme.bias(pos, pos, cfg, torch.float32)
        assert (added is not None) == scheme.additive and (angles is not None) == scheme.rotates
        assert (bias is not None) == scheme.biases_scores
        assert scheme.sees_order == (name != "none")
        if added is not None:
            assert added.shape == (b, t, cfg.d_model)
        if bias is not None:
            assert bias.shape == (b, cfg.n_heads, t, t)


def test_schemes_check_their_own_config() -> None:
    with pytest.raises(ValueError, match="rotary width of 1"):
        reference.ModelConfig(vocab_size=8, d_model=8, n_layers=1, n_heads=2, d_head=2, rotary_fraction=0.5,
                              positions="rotary")
    with pytest.raises(ValueError, match="must be even for sinusoidal"):
        reference.ModelConfig(vocab_size=8, d_model=9, n_layers=1, n_heads=1, positions="sinusoidal")
    reference.ModelConfig(vocab_size=8, d_model=9, n_layers=1, n_heads=1, positions="learned")
