"""Meta-tests for the DEC, GEN and REF claims: each passes on the reference and fails on a realistic bug.

Every wrong target below is a ReferenceTarget that overrides exactly one behaviour
(sampler, filtered distribution, decode, logits, generate or reference_model) with a
bug seen in real implementations.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from hypothesis import Phase, settings
from torch import Tensor

import reference
from reference.model import Transformer
from reference.validation import check_top_k, check_top_p
from spec.catalog import CATALOG, load_all
from spec.runner import run_claim
from spec.target import Target
from spec.targets.mutants import top_k_plus_one, top_p_below
from spec.targets.reference_target import ReferenceTarget

load_all()

PROFILE = settings(max_examples=30, derandomize=True)
FAST = settings(max_examples=15, derandomize=True)
# Mutants only need to fail: skip shrinking the counterexample.
NO_SHRINK = settings(max_examples=30, derandomize=True, phases=[Phase.explicit, Phase.generate])
SAMPLER = ("DEC-2", "DEC-3", "DEC-4", "DEC-5")
MODEL = ("DEC-1", "GEN-1", "GEN-2", "GEN-3", "GEN-4", "REF-1")
HF_PROFILE = settings(max_examples=10, derandomize=True)


def _run(claim_id: str, target: Target, profile: settings = PROFILE) -> str:
    r = run_claim(CATALOG[claim_id], target, profile=profile)
    return f"{r.status}: {r.detail}\n{r.counterexample}"


def _status(claim_id: str, target: Target, profile: settings = PROFILE) -> str:
    return run_claim(CATALOG[claim_id], target, profile=profile).status


# ---------------------------------------------------------------------------------------------- passing
def _pass_or_known_bug(claim_id: str, out: str) -> None:
    """DEC-4 found (and the reference fixed) top_p_filter keeping no token when p rounds to 0 in float32."""
    assert out.startswith("passed"), out


# The sampler claims do not involve the model: one preset per dtype is enough.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("claim_id", SAMPLER)
def test_sampler_claims_pass_on_reference(claim_id: str, dtype: torch.dtype) -> None:
    _pass_or_known_bug(claim_id, _run(claim_id, ReferenceTarget.from_preset("llama-tiny", dtype=dtype)))


@pytest.mark.parametrize(("preset", "dtype", "profile"), [
    ("llama-tiny", torch.float32, PROFILE), ("gpt2-tiny", torch.float32, FAST), ("bloom-tiny", torch.float32, FAST),
    ("llama-tiny", torch.float64, FAST), ("mqa-sinusoidal", torch.float64, FAST)],
    ids=["llama-tiny-float32", "gpt2-tiny-float32", "bloom-tiny-float32", "llama-tiny-float64",
         "mqa-sinusoidal-float64"])
@pytest.mark.parametrize("claim_id", MODEL)
def test_model_claims_pass_on_reference(claim_id: str, preset: str, dtype: torch.dtype, profile: settings) -> None:
    _pass_or_known_bug(claim_id, _run(claim_id, ReferenceTarget.from_preset(preset, dtype=dtype), profile))


# ---------------------------------------------------------------------------------------------- mutants
def _filtered(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None, *,
              k_filter: Callable[[Tensor, int], Tensor] = reference.top_k_filter,
              p_filter: Callable[[Tensor, float], Tensor] = reference.top_p_filter,
              renormalise: bool = True, temperature_after_top_p: bool = False) -> Tensor:
    """reference.filtered_probabilities with one stage swappable (for the mutants)."""
    t = float(temperature)
    if t == 0.0:
        return reference.softmax(logits, 0.0)
    k, p = check_top_k(top_k, logits.shape[-1]), check_top_p(top_p)
    z = logits.double() if logits.dtype == torch.float64 else logits.float()
    if not temperature_after_top_p:
        z = z / t
    full = torch.softmax(z, dim=-1)
    if k is not None:
        z = k_filter(z, k)
    if p is not None:
        z = p_filter(z, p)
    if temperature_after_top_p:
        z = z / t
    probs = torch.softmax(z, dim=-1)
    if not renormalise:
        probs = torch.where(torch.isfinite(z), full, torch.zeros_like(full))
    return probs


class _FilterMutant(ReferenceTarget):
    """filtered_probabilities and sample both go through ``_filtered`` with the mutant's options."""

    options: dict[str, object] = {}  # noqa: RUF012

    def filtered_probabilities(self, logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                               top_p: float | None = None) -> Tensor:
        return _filtered(logits, temperature, top_k, top_p, **self.options)  # type: ignore[arg-type]

    def sample(self, logits: Tensor, generator: torch.Generator, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None) -> Tensor:
        if temperature == 0:
            return logits.argmax(dim=-1)
        probs = self.filtered_probabilities(logits, temperature, top_k, top_p)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class TopPBelow(_FilterMutant):
    options = {"p_filter": top_p_below}  # noqa: RUF012


class TopKPlusOne(_FilterMutant):
    """Keeps k + 1 tokens even where nothing ties (an off-by-one in the sorted-position mask)."""

    options = {"k_filter": top_k_plus_one}  # noqa: RUF012


class TopKNotRenormalised(_FilterMutant):
    options = {"renormalise": False}  # noqa: RUF012


class TemperatureAfterTopP(_FilterMutant):
    options = {"temperature_after_top_p": True}  # noqa: RUF012


class IgnoresTemperature(ReferenceTarget):
    def sample(self, logits: Tensor, generator: torch.Generator, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None) -> Tensor:
        return reference.sample(logits, generator, 1.0 if temperature > 0 else 0.0, top_k, top_p)


class ZeroTemperatureDivides(ReferenceTarget):
    def sample(self, logits: Tensor, generator: torch.Generator, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None) -> Tensor:
        probs = torch.softmax(logits / temperature, dim=-1)  # T = 0: inf - inf = NaN
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class GlobalRNG(ReferenceTarget):
    def sample(self, logits: Tensor, generator: torch.Generator, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None) -> Tensor:
        if temperature == 0:
            return logits.argmax(dim=-1)
        probs = reference.filtered_probabilities(logits, temperature, top_k, top_p)
        return torch.multinomial(probs, 1).squeeze(-1)  # the generator is ignored


class GreedyMaxValue(ReferenceTarget):
    """Greedy (T = 0) returns torch.max's value (the top probability, truncated to an integer), not its index."""

    def sample(self, logits: Tensor, generator: torch.Generator, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None) -> Tensor:
        if temperature == 0:
            token, _ = torch.max(torch.softmax(logits.float(), dim=-1), dim=-1)
            return token.long()
        return reference.sample(logits, generator, temperature, top_k, top_p)


class DecodeRestartsPositions(ReferenceTarget):
    """Each decode step forgets the cache's position offset: the new token is placed at position 0."""

    @torch.no_grad()
    def decode(self, ids: Tensor, prefill: int, attention_mask: Tensor | None = None) -> Tensor:
        cache = self.model.new_cache(ids.shape[0], ids.shape[1])
        mask = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        out = [self.model(ids[:, :prefill], mask[:, :prefill], cache).logits]
        for t in range(prefill, ids.shape[1]):
            cache.next_position.zero_()
            out.append(self.model(ids[:, t:t + 1], mask[:, t:t + 1], cache).logits)
        return torch.cat(out, dim=1)


class PackedBatch(ReferenceTarget):
    """Packs the batch into one sequence without a block mask: later rows attend to earlier rows."""

    @torch.no_grad()
    def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        b, t = ids.shape
        mask = None if attention_mask is None else attention_mask.reshape(1, b * t)
        return self.model(ids.reshape(1, b * t), mask).logits.reshape(b, t, -1)


class DropoutOn(ReferenceTarget):
    @torch.no_grad()
    def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return torch.nn.functional.dropout(self.model(ids, attention_mask).logits, p=0.1, training=True)


class DropsPrompt(ReferenceTarget):
    def generate(self, ids: Tensor, max_new_tokens: int, attention_mask: Tensor | None = None) -> Tensor:
        return reference.generate(self.model, ids, max_new_tokens, attention_mask=attention_mask)[:, ids.shape[1]:]


class PerturbedConverter(ReferenceTarget):
    """Its reference_model() differs from the weights it runs: one entry of W_O in block 0 moved by 0.1."""

    def reference_model(self) -> Transformer:
        model = copy.deepcopy(self.model)
        with torch.no_grad():
            model.get_parameter("blocks.0.attn.W_O")[0, 0] += 0.1
        return model


MUTANTS: list[tuple[type[ReferenceTarget], tuple[str, ...]]] = [
    (IgnoresTemperature, ("DEC-2", "DEC-5")),
    (ZeroTemperatureDivides, ("DEC-1", "DEC-5")),
    (TopPBelow, ("DEC-4",)),
    (TopKPlusOne, ("DEC-3",)),
    (TopKNotRenormalised, ("DEC-3",)),
    (TemperatureAfterTopP, ("DEC-4",)),
    (GlobalRNG, ("DEC-5",)),
    (GreedyMaxValue, ("DEC-1",)),
    (DecodeRestartsPositions, ("GEN-2",)),
    (PackedBatch, ("GEN-3",)),
    (DropoutOn, ("GEN-4",)),
    (DropsPrompt, ("GEN-1",)),
    (PerturbedConverter, ("REF-1",)),
]


@pytest.mark.parametrize(("mutant", "claim_id"), [(m, c) for m, cs in MUTANTS for c in cs],
                         ids=[f"{m.__name__}-{c}" for m, cs in MUTANTS for c in cs])
def test_fails_on_mutant(mutant: type[ReferenceTarget], claim_id: str) -> None:
    base = ReferenceTarget.from_preset("llama-tiny")
    target = mutant(base.model, name=f"mutant:{mutant.__name__}")
    assert _status(claim_id, target, NO_SHRINK) == "failed", f"{mutant.__name__} survived {claim_id}"


def test_ref1_is_no_converter_without_reference_model() -> None:
    class NoConverter(Target):
        vocab_size = 97

        def __init__(self) -> None:
            self.model = reference.build(reference.preset("llama-tiny"))

        def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
            return self.model(ids, attention_mask).logits

    assert _status("REF-1", NoConverter()) == "no converter for this target"


def test_dec1_is_not_exposed_without_sampler_or_generate() -> None:
    class LogitsOnly(Target):
        vocab_size = 97

        def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
            return torch.zeros(*ids.shape, 97)

    assert _status("DEC-1", LogitsOnly()) == "not exposed"


# ---------------------------------------------------------------------------------------------- HuggingFace
@pytest.mark.hf
@pytest.mark.parametrize("name", ["hf:gpt2", "hf:llama"])
def test_passes_on_hf(name: str) -> None:
    pytest.importorskip("transformers")
    from spec.targets.registry import resolve

    target = resolve(name)
    for claim_id in MODEL:
        out = _run(claim_id, target, HF_PROFILE)
        assert out.startswith("passed"), f"{name} {claim_id}: {out}"


class _NoMask(ReferenceTarget):
    """A target that takes no attention mask, as several public GPT codebases: padded batches are not exposed."""

    def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        if attention_mask is not None and not bool(attention_mask.all()):
            from spec.target import NotExposed

            raise NotExposed("logits", "takes no attention mask")
        return super().logits(ids)


class _NoMaskScaled(_NoMask):
    """The same, with its logits off by a factor: the unpadded comparison must still catch it."""

    def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return super().logits(ids, attention_mask) * 1.01


def test_ref_1_runs_its_unpadded_parts_on_a_target_without_a_mask() -> None:
    """Issue #12: the padded batch is a skipped part, named; logits, residual states and decoding still count."""
    from spec.runner import FAILED, PARTLY

    r = run_claim(CATALOG["REF-1"], _NoMask.from_preset("llama-tiny"), profile=FAST)
    assert r.status == PARTLY and r.examples > 0 and "takes no attention mask" in r.detail, (r.status, r.detail)
    assert run_claim(CATALOG["REF-1"], _NoMaskScaled.from_preset("llama-tiny"), profile=FAST).status == FAILED
