"""Realistic examples: an expensive target's claims run explicit examples of real text before the drawn ones.

On SmolLM2 each claim that runs the model gets only a few examples, and Hypothesis's first drawn example is its
minimal one (ids [[0]], prefill 1: no cached step at all in GEN-2). ``Target.realistic_examples`` makes the runner
run that many explicit examples first, built from spec.strategies.REAL_PROMPTS in the target's own tokenizer.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import settings
from torch import Tensor

from spec.catalog import CATALOG, ordered
from spec.runner import PASSED, run_claim
from spec.strategies import REAL_PROMPTS
from spec.targets.reference_target import ReferenceTarget

FAST = settings(max_examples=2, derandomize=True, database=None)


class Recording(ReferenceTarget):
    """The reference, recording what GEN-2 hands its decode: (ids, prefill, mask given)."""

    calls: list[tuple[list[list[int]], int, bool]]

    def decode(self, ids: Tensor, prefill: int, attention_mask: Tensor | None = None) -> Tensor:
        self.calls.append((ids.tolist(), prefill, attention_mask is not None))
        return super().decode(ids, prefill, attention_mask)


def _recording(realistic: int) -> Recording:
    base = ReferenceTarget.from_preset("llama-tiny")
    target = Recording(base.model, name="recording")
    target.calls, target.realistic_examples = [], realistic
    return target


def test_gen_2_runs_real_prompts_with_a_prefill_inside_and_a_padded_batch_first() -> None:
    ordered()
    target = _recording(2)
    # the tiny model's vocabulary (97) is smaller than its stand-in tokenizer's (600): IDs beyond it are left out
    prompts = [[t for t in target.tokenizer().encode(p) if t < target.vocab_size] for p in REAL_PROMPTS]
    result = run_claim(CATALOG["GEN-2"], target, profile=FAST)
    assert result.status == PASSED, result.detail
    assert result.realistic == 2 and result.examples == 4
    (ids0, pre0, m0), (padded0, _, pm0) = target.calls[0], target.calls[1]
    assert not m0 and pm0
    for row, prompt in zip(ids0, prompts, strict=False):  # real text, cut to the claim's length (12)
        assert row == prompt[:len(row)] and len(row) >= 5
    assert 1 < pre0 < len(ids0[0])  # the prefill point lies inside the sequence: cached steps do run
    lengths = [sum(1 for t in row if t != target.vocab_size - 1) for row in padded0]
    assert len(set(lengths)) > 1  # rows of different lengths, left-padded
    second = target.calls[2][0]
    assert second[0] == prompts[1][:len(second[0])]  # the second realistic example starts from the next prompt
    drawn = [c for c in target.calls[4:] if not c[2]]
    assert drawn and drawn[0][0] == [[0]] and drawn[0][1] == 1  # then Hypothesis's own examples, minimal first


def test_without_realistic_examples_the_first_example_is_hypothesis_minimal_one() -> None:
    ordered()
    target = _recording(0)
    result = run_claim(CATALOG["GEN-2"], target, profile=FAST)
    assert result.status == PASSED and result.realistic == 0 and result.examples == 2
    assert target.calls[0][0] == [[0]] and target.calls[0][1] == 1


def test_claims_that_draw_no_model_input_and_trained_claims_get_no_realistic_examples() -> None:
    ordered()
    target = _recording(2)
    assert run_claim(CATALOG["DEC-5"], target, profile=FAST).realistic == 0  # sampler only: model-free
    assert run_claim(CATALOG["POS-1"], target, profile=FAST).realistic == 0  # built configs: nothing to make real


def test_a_built_model_too_small_for_any_real_id_still_gets_whole_rows() -> None:
    """RES-1 draws realistic ids for a model it built with a vocabulary of 8: no real prompt ID fits, so the IDs are
    taken modulo 8 instead of leaving an empty row (CI once failed SmolLM2's RES-1 on ids of shape [1, 0])."""
    from spec.strategies import Realistic

    small = ReferenceTarget.from_preset("llama-tiny")
    small.vocab_size = 8
    real = Realistic(0, [[1000 + i for i in range(12)], [2000 + i for i in range(9)]])
    ids = real.ids(small, min_len=1, max_len=8, batch=2)
    assert ids.shape == (2, 8) and int(ids.max()) < 8
    assert ids[0].tolist() == [(1000 + i) % 8 for i in range(8)]


class Sampling(ReferenceTarget):
    """The reference, recording what the sampler claims hand its sampler: (row, temperature, top_k, top_p)."""

    samples: list[tuple[list[float], float, int | None, float | None]]

    def sample(self, logits: Tensor, generator: torch.Generator, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None) -> Tensor:
        self.samples.append((logits[0].tolist(), temperature, top_k, top_p))
        return super().sample(logits, generator, temperature, top_k, top_p)


@pytest.mark.parametrize(("cid", "top_k", "top_p"), [("DEC-2", None, None), ("DEC-3", 40, None), ("DEC-4", None, 0.9)])
def test_sampler_claims_sample_the_targets_own_logits_of_a_real_prompt_first(cid: str, top_k: int | None,
                                                                               top_p: float | None) -> None:
    """Issue #11: temperature 0.7, top-k 40, top-p 0.9 on the target's own 64 largest next-token logits after a
    real prompt (the head of a real distribution, so k and p cut inside it), then the drawn grid rows."""
    ordered()
    base = ReferenceTarget.from_preset("llama-tiny")
    target = Sampling(base.model, name="sampling")
    target.samples, target.realistic_examples = [], 2
    result = run_claim(CATALOG[cid], target, profile=FAST)
    assert result.status == PASSED, result.detail
    assert result.realistic == 2
    prompt = [t for t in target.tokenizer().encode(REAL_PROMPTS[0]) if t < target.vocab_size]
    last = base.logits(torch.tensor([prompt]))[0, -1]
    head = sorted(torch.topk(last, 64).indices.tolist())
    row, temperature, k, p = target.samples[0]
    assert row == last[head].tolist() and (temperature, k, p) == (0.7, top_k, top_p)
    assert all(len(s[0]) <= 12 for s in target.samples[2:])  # then the drawn rows


def test_without_realistic_examples_the_sampler_claims_draw_grid_rows() -> None:
    ordered()
    target = Sampling(ReferenceTarget.from_preset("llama-tiny").model, name="sampling")
    target.samples = []
    assert run_claim(CATALOG["DEC-3"], target, profile=FAST).realistic == 0
    assert all(len(s[0]) <= 12 for s in target.samples)
