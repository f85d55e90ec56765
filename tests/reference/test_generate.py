"""The generation loop: GEN-1 (autoregression), GEN-2 (cache), GEN-3 (batching), eos, sampling, validation."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import PRESETS, Transformer, build, generate

NAMES = sorted(PRESETS)
MODEL_PROPERTY = settings(max_examples=25, deadline=None, derandomize=True)
ModelFor = Callable[..., Transformer]


def left_pad(prompts: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def greedy_by_recompute(model: Transformer, prompt: list[int], n: int) -> list[int]:
    """GEN-1 spelled out: a fresh full forward on the prefix, argmax of the last position, append."""
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            last = model(torch.tensor([tokens])).logits[0, -1]
            tokens.append(int(torch.argmax(last)))
    return tokens


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", NAMES)
def test_greedy_generation_is_argmax_of_fresh_forward_passes(name: str, dtype: torch.dtype,
                                                            model_for: ModelFor) -> None:
    model = model_for(name, dtype)
    prompt = [5, 17, 3, 42]
    out = generate(model, torch.tensor([prompt]), 6)
    assert out.shape == (1, 10) and out.dtype == torch.long
    assert out[0, :4].tolist() == prompt  # the prompt is kept
    assert out[0].tolist() == greedy_by_recompute(model, prompt, 6)
    assert torch.equal(generate(model, torch.tensor([prompt]), 6, use_cache=False), out)  # GEN-2


@MODEL_PROPERTY
@given(name=st.sampled_from(NAMES), lengths=st.lists(st.integers(1, 6), min_size=1, max_size=3),
       n=st.integers(0, 5), seed=st.integers(0, 2**16))
def test_batched_left_padded_generation_equals_each_prompt_alone(name: str, lengths: list[int], n: int, seed: int,
                                                                 model_for: ModelFor) -> None:
    # GEN-3. float64 so near-ties in the argmax cannot be flipped by batching-order rounding.
    model = model_for(name, torch.float64)
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, model.cfg.vocab_size, (k,), generator=g).tolist() for k in lengths]
    ids, mask = left_pad(prompts, pad=1)
    for use_cache in (True, False):
        out = generate(model, ids, n, attention_mask=mask, use_cache=use_cache)
        assert out.shape == (len(prompts), ids.shape[1] + n)
        assert torch.equal(out[:, : ids.shape[1]], ids)
        for row, p in enumerate(prompts):
            alone = generate(model, torch.tensor([p]), n, use_cache=use_cache)[0]
            assert out[row, ids.shape[1] - len(p):].tolist() == alone.tolist()


def test_zero_new_tokens_returns_the_prompt(model_for: ModelFor) -> None:
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(generate(model_for("gpt2-tiny"), ids, 0), ids)


def with_eos(free: torch.Tensor, prompt_len: int, eos: int) -> torch.Tensor:
    """What generation with ``eos`` must return, given the free-running greedy output.

    A row is copied up to and including its first eos and holds eos afterwards; the loop
    stops after the step at which the last row finished (or after all steps).
    """
    new = free[:, prompt_len:].clone()
    steps = new.shape[1]
    done_at = []
    for row in range(new.shape[0]):
        hits = (new[row] == eos).nonzero().flatten().tolist()
        if hits:
            new[row, hits[0]:] = eos
        done_at.append(hits[0] + 1 if hits else steps)
    return torch.cat([free[:, :prompt_len], new[:, : max(done_at)]], dim=1)


@pytest.mark.parametrize("use_cache", [True, False])
def test_eos_finishes_rows_pads_them_and_ends_the_loop(use_cache: bool, model_for: ModelFor) -> None:
    model = model_for("llama-tiny", torch.float64)
    ids, mask = left_pad([[3, 9, 27], [81, 4]])
    free = generate(model, ids, 8, attention_mask=mask, use_cache=use_cache)
    candidates = sorted(set(free[:, 3:].flatten().tolist()) | {0, 96})  # every emitted token, and likely misses
    shorter = 0
    for eos in candidates:
        out = generate(model, ids, 8, attention_mask=mask, eos_token_id=eos, use_cache=use_cache)
        expected = with_eos(free, 3, eos)
        assert out.tolist() == expected.tolist(), f"eos={eos}"
        shorter += out.shape[1] < free.shape[1]
    # One row: the loop must stop right after the row emits eos, at every step it can.
    single = free[:1]  # row 0 is unpadded: prompt [3, 9, 27] then its continuation
    for eos in set(single[0, 3:].tolist()):
        out = generate(model, single[:, :3], 8, eos_token_id=eos, use_cache=use_cache)
        first = single[0, 3:].tolist().index(eos)
        assert out.tolist() == [single[0, : 3 + first + 1].tolist()]
        shorter += 1
    assert shorter > 0


@pytest.mark.parametrize("use_cache", [True, False])
def test_sampled_generation_is_reproducible_with_the_same_seed(use_cache: bool, model_for: ModelFor) -> None:
    model = model_for("neox-tiny")
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    state = torch.get_rng_state()

    def run(seed: int) -> torch.Tensor:
        return generate(model, ids, 8, temperature=1.5, top_k=20, top_p=0.95,
                        generator=torch.Generator().manual_seed(seed), use_cache=use_cache)

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.shape == (2, 11) and torch.equal(a[:, :3], ids)


def test_sampled_generation_needs_a_generator(model_for: ModelFor) -> None:
    with pytest.raises(ValueError, match="generator"):
        generate(model_for("gpt2-tiny"), torch.tensor([[1, 2]]), 2, temperature=1.0)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", None])
def test_max_new_tokens_is_validated(bad: object, model_for: ModelFor) -> None:
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 0"):
        generate(model_for("gpt2-tiny"), torch.tensor([[1, 2]]), bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, 97, 1000])
def test_eos_token_id_out_of_range_is_rejected(bad: int, model_for: ModelFor) -> None:
    with pytest.raises(ValueError, match=r"eos_token_id must lie in \[0, 97\)"):
        generate(model_for("gpt2-tiny"), torch.tensor([[1, 2]]), 2, eos_token_id=bad)


# Bug (reported): generate.py line 31 only range-checks eos_token_id. A non-integral
# value such as 1.5 passes, can never equal a token, and so is silently ignored; a
# bool passes as 0/1. max_new_tokens (line 29) rejects both kinds.
@pytest.mark.parametrize("bad", [1.5, True])
def test_eos_token_id_must_be_an_int(bad: object, model_for: ModelFor) -> None:
    with pytest.raises((ValueError, TypeError), match="eos_token_id"):
        generate(model_for("gpt2-tiny"), torch.tensor([[1, 2]]), 2, eos_token_id=bad)  # type: ignore[arg-type]


def test_prompt_plus_new_tokens_beyond_max_positions_is_rejected(model_for: ModelFor) -> None:
    model = model_for("gpt2-tiny")  # max_positions 64
    with pytest.raises(ValueError, match=r"max_new_tokens: 60 prompt \+ 5 new tokens exceed max_positions=64"):
        generate(model, torch.ones(1, 60, dtype=torch.long), 5)
    assert generate(model, torch.ones(1, 60, dtype=torch.long), 4).shape == (1, 64)  # exactly full is fine


@pytest.mark.parametrize(("ids", "error", "words"), [
    ([[1, 2]], TypeError, "ids must be a torch.Tensor of token IDs, got list"),
    (torch.tensor([1, 2]), ValueError, r"ids must have shape \[batch, seq\], got \(2,\)"),
    (torch.tensor([[1.0, 2.0]]), TypeError, "ids must hold integer token IDs"),
    (torch.tensor([[1, 97]]), ValueError, r"token ID 97, outside the vocabulary range \[0, 97\)"),
])
def test_generation_checks_the_ids_first(model_for: ModelFor, ids: object, error: type[Exception],
                                         words: str) -> None:
    """Issue #14: a list or a 1-D tensor was a raw TypeError from ones_like / an unpacking error."""
    with pytest.raises(error, match=words):
        generate(model_for("gpt2-tiny"), ids, 1)  # type: ignore[arg-type]


def test_generation_checks_the_mask(model_for: ModelFor) -> None:
    with pytest.raises(ValueError, match="attention_mask must contain only 0"):
        generate(model_for("gpt2-tiny"), torch.tensor([[1, 2]]), 1, attention_mask=torch.tensor([[1, 3]]))


def test_generation_leaves_the_model_unchanged() -> None:
    model = build(PRESETS["gemma-tiny"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    generate(model, torch.tensor([[1, 2, 3]]), 4)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# ------------------------------------------------------------------------ non-finite weights (issue #14)


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny", "mqa-sinusoidal", "nopos-tiny"])
@pytest.mark.parametrize("weight", ["W_Q", "W_K"])
def test_a_nan_weight_never_gives_finite_logits_or_tokens(name: str, weight: str) -> None:
    # Before: a NaN in W_Q or W_K gave finite logits on the default (fused) attention path, and generate
    # returned tokens, because the fused kernel turned the all-NaN score rows into zeros.
    model = build(PRESETS[name], seed=3)
    with torch.no_grad():
        getattr(model.blocks[0].attn, weight)[0, 0] = float("nan")
    ids = torch.tensor([[5, 9, 2, 7], [1, 1, 4, 3]])
    for impl in ("fast", "explicit"):
        model.attention_impl = impl
        with torch.no_grad():
            assert not bool(torch.isfinite(model(ids).logits).any()), impl  # every position is poisoned
            cache = model.new_cache(2)
            model(ids[:, :3], cache=cache)
            assert not bool(torch.isfinite(model(ids[:, 3:], cache=cache).logits).any()), impl  # a decode step
        with pytest.raises(FloatingPointError, match=r"logits at step 0 are not finite .* batch rows \[0, 1\]"):
            generate(model, ids, 3)
