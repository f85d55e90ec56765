"""Meta-tests of claims TOK-1..5 and EMB-1..8 (spec/claims/tok.py, spec/claims/emb.py).

Each claim must pass on the reference (several presets, float32 and float64) and fail
on a target that carries one realistic bug. Hypothesis runs derandomized; failing runs
skip shrinking (only the verdict matters here).
"""

from __future__ import annotations

import unicodedata

import pytest
import torch
import torch.nn.functional as F
from hypothesis import Phase, settings
from torch import Tensor

import reference
from reference.config import ModelConfig
from reference.embedding import embed as row_lookup
from reference.tokenizer import ByteBPETokenizer
from spec.catalog import CATALOG, load_all
from spec.oracles import check_cosine_law
from spec.runner import Result, run_claim
from spec.target import Target, Tokenizer
from spec.targets.reference_target import ReferenceTarget
from spec.targets.tokenizers import CORPUS, builtin_tokenizer

load_all()

BROKEN_MUTANT = ("TypeError", "AttributeError", "NameError")  # a crash in the mutant is no kill
PASS = settings(max_examples=8, derandomize=True, database=None)
FAIL = settings(max_examples=30, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.reuse, Phase.generate])

CLAIMS = ["TOK-1", "TOK-2", "TOK-3", "TOK-4", "TOK-5",
          "EMB-1", "EMB-2", "EMB-3", "EMB-4", "EMB-5", "EMB-6", "EMB-7", "EMB-8"]
# every position kind, a scaled lookup (gemma) and a norm after the lookup (bloom)
PRESETS = ["gpt2-tiny", "llama-tiny", "mqa-sinusoidal", "gemma-tiny", "bloom-tiny"]
SLOW = {"EMB-6"}  # nine short training runs per example on its own fixed config: one preset (both dtypes)


def run(claim_id: str, target: Target, profile: settings) -> Result:
    return run_claim(CATALOG[claim_id], target, profile=profile)


def _cases() -> list[tuple[str, str]]:
    return [(c, p) for c in CLAIMS for p in (PRESETS[:1] if c in SLOW else PRESETS)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize(("claim_id", "preset"), _cases())
def test_passes_on_reference(claim_id: str, preset: str, dtype: torch.dtype) -> None:
    r = run(claim_id, ReferenceTarget.from_preset(preset, dtype=dtype), PASS)
    assert r.status == ("illustrated" if CATALOG[claim_id].illustration else "passed"), (r.detail, r.counterexample)
    assert r.examples >= 1


def test_builtin_tokenizer() -> None:
    tok = builtin_tokenizer()
    assert tok is builtin_tokenizer(None) is builtin_tokenizer(97)  # small model vocabularies get the default
    assert 550 <= tok.vocab_size <= 600
    assert len(CORPUS.encode()) > 3000
    for word in ("The", "the", " cat", "cat"):
        assert len(tok.encode(word)) == 1, word  # real merged tokens for TOK-3 / TOK-4


# -- tokenizer mutants ----------------------------------------------------------------------------
class _Wrapped:
    """The built-in tokenizer with one method replaced in a subclass."""

    def __init__(self, inner: ByteBPETokenizer) -> None:
        self.inner = inner

    @property
    def vocab_size(self) -> int:
        return self.inner.vocab_size

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.inner.decode(ids)

    def id_to_token(self, i: int) -> str:
        return self.inner.id_to_token(i)

    def token_to_id(self, token: str) -> int:
        return self.inner.token_to_id(token)


class Normalising(_Wrapped):
    """Applies Unicode NFC before encoding: 'e' + combining acute comes back as one precomposed 'é'."""

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(unicodedata.normalize("NFC", text))


class DuplicateString(_Wrapped):
    """The last id (an added special token) reports the string of id 0, so two ids share one string."""

    def id_to_token(self, i: int) -> str:
        return self.inner.id_to_token(0 if i == self.vocab_size - 1 else i)


class Uncased(_Wrapped):
    """Lower-cases the text before encoding, like an 'uncased' vocabulary."""

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(text.lower())


class DropsControls(_Wrapped):
    """Silently drops control characters, as a BPE without those byte tokens and without an unknown token does."""

    def encode(self, text: str) -> list[int]:
        return self.inner.encode("".join(c for c in text if unicodedata.category(c) != "Cc"))


class RefusesControls(_Wrapped):
    """Refuses text with a control character (ValueError), as the reference does for bytes its vocabulary lacks."""

    def encode(self, text: str) -> list[int]:
        bad = [c for c in text if unicodedata.category(c) == "Cc"]
        if bad:
            raise ValueError(f"cannot encode {bad[0]!r}")
        return self.inner.encode(text)


def _spaces_apart() -> ByteBPETokenizer:
    """A BPE whose pre-tokenizer isolates whitespace, so ' cat' is ' ' + 'cat'."""
    return ByteBPETokenizer.train([CORPUS], 600, special_tokens=["<|endoftext|>"], pattern=r"\s+|\S+")


class WithTokenizer(ReferenceTarget):
    """The reference with a given tokenizer (the mutant)."""

    def __init__(self, tok: Tokenizer) -> None:
        super().__init__(reference.build(reference.preset("gpt2-tiny")), name="mutant", tokenizer=tok)


@pytest.mark.parametrize(("claim_id", "tok"), [
    ("TOK-1", Normalising(builtin_tokenizer())),
    ("TOK-2", DuplicateString(builtin_tokenizer())),
    ("TOK-3", Uncased(builtin_tokenizer())),
    ("TOK-4", _spaces_apart()),
], ids=["TOK-1-nfc", "TOK-2-duplicate", "TOK-3-uncased", "TOK-4-spaces-apart"])
def test_tokenizer_claims_fail_on_mutants(claim_id: str, tok: Tokenizer) -> None:
    assert run(claim_id, WithTokenizer(tok), FAIL).status == "failed"


def test_tok_1_fails_on_a_tokenizer_that_drops_characters() -> None:
    r = run("TOK-1", WithTokenizer(DropsControls(builtin_tokenizer())), FAIL)
    assert r.status == "failed" and r.detail.startswith("AssertionError: decode(encode("), r.detail


def test_tok_1_reports_a_refusal_as_the_claims_failure() -> None:
    r = run("TOK-1", WithTokenizer(RefusesControls(builtin_tokenizer())), FAIL)
    assert r.status == "failed" and r.detail.startswith("Refused: encode("), r.detail
    assert "refused the text: cannot encode" in r.detail  # the tokenizer's own message is kept


@pytest.mark.parametrize("claim_id", ["TOK-2", "TOK-3", "TOK-4"])
def test_other_tok_claims_are_not_about_refused_text(claim_id: str) -> None:
    """TOK-2 uses drawn text only as a source of ids, and TOK-3/TOK-4 draw no control characters."""
    r = run(claim_id, WithTokenizer(RefusesControls(builtin_tokenizer())), PASS)
    assert r.status == "passed", (r.detail, r.counterexample)


# -- model mutants -----------------------------------------------------------------------------------
def _preset(name: str) -> ReferenceTarget:
    return ReferenceTarget.from_preset(name)


class OffByOneLookup(ReferenceTarget):
    """Looks up row t + 1 for token t."""

    @torch.no_grad()
    def embed(self, ids: Tensor) -> Tensor:
        return super().embed((ids + 1) % self.vocab_size)


class OverflowedTable(ReferenceTarget):
    """A table exported through float16 whose largest entry overflowed to inf: 0 * inf poisons one-hot products."""

    def embedding_matrix(self) -> Tensor:
        E = super().embedding_matrix().clone()
        E.view(-1)[E.abs().argmax()] = float("inf")
        return E


class ShiftedSequence(ReferenceTarget):
    """Feeds the sequence rolled by one position to the lookup (inputs and labels confused)."""

    @torch.no_grad()
    def embed(self, ids: Tensor) -> Tensor:
        return super().embed(ids.roll(1, dims=1))


class WeightDecay(ReferenceTarget):
    """Its training step applies decoupled weight decay to every parameter, so absent rows shrink too."""

    def train_step(self, ids: Tensor, targets: Tensor, lr: float) -> None:
        super().train_step(ids, targets, lr)
        with torch.no_grad():
            for p in self.model.parameters():
                p.mul_(1 - 0.01 * lr)


class FactorisedTable(ReferenceTarget):
    """Exposes a table narrower than the residual stream (as models with an input projection do)."""

    def embedding_matrix(self) -> Tensor:
        E = super().embedding_matrix()
        return E[:, : E.shape[1] // 2]


class FrozenEmbedding(ReferenceTarget):
    """Its training step leaves the embedding table untouched (the table was frozen by mistake)."""

    def train_step(self, ids: Tensor, targets: Tensor, lr: float) -> None:
        saved = self.model.embed.E.detach().clone()
        super().train_step(ids, targets, lr)
        with torch.no_grad():
            self.model.embed.E.copy_(saved)


def _builds(cls: type[ReferenceTarget]) -> type[ReferenceTarget]:
    """A ReferenceTarget whose build() hands out ``cls`` targets (the bug lives in the built models)."""

    class Builder(ReferenceTarget):
        def build(self, config: ModelConfig, seed: int = 0) -> ReferenceTarget:
            return cls(reference.build(config, seed=seed, device=self.device, dtype=self.dtype), name="mutant[built]")

    Builder.__name__ = f"Builds{cls.__name__}"
    return Builder


class PaddingRowZero(ReferenceTarget):
    """Its models zero the vector of token 0 in the forward pass, treating id 0 as padding."""

    def build(self, config: ModelConfig, seed: int = 0) -> ReferenceTarget:
        model = reference.build(config, seed=seed, device=self.device, dtype=self.dtype)
        table = model.embed

        def forward(ids: Tensor) -> Tensor:
            return row_lookup(ids, table.E, table.scale) * (ids != 0)[..., None].to(table.E.dtype)

        table.forward = forward  # type: ignore[method-assign]
        return ReferenceTarget(model, name="mutant[built]")


@pytest.mark.parametrize(("claim_id", "target"), [
    ("TOK-5", PaddingRowZero(reference.build(reference.preset("gpt2-tiny")))),
    ("EMB-1", OffByOneLookup(reference.build(reference.preset("llama-tiny")))),
    ("EMB-1", OffByOneLookup(reference.build(reference.preset("gpt2-tiny")))),
    ("EMB-2", OverflowedTable(reference.build(reference.preset("llama-tiny")))),
    ("EMB-3", ShiftedSequence(reference.build(reference.preset("llama-tiny")))),
    ("EMB-4", _builds(WeightDecay)(reference.build(reference.preset("llama-tiny")))),
    ("EMB-5", FactorisedTable(reference.build(reference.preset("llama-tiny")))),
    ("EMB-6", _builds(FrozenEmbedding)(reference.build(reference.preset("llama-tiny")))),
    ("EMB-7", _builds(FrozenEmbedding)(reference.build(reference.preset("llama-tiny")))),
], ids=["TOK-5-id0-padding", "EMB-1-off-by-one", "EMB-1-off-by-one-learned", "EMB-2-inf-entry",
        "EMB-3-rolled", "EMB-4-weight-decay", "EMB-5-narrow-table", "EMB-6-frozen", "EMB-7-frozen"])
def test_model_claims_fail_on_mutants(claim_id: str, target: ReferenceTarget) -> None:
    r = run(claim_id, target, FAIL)
    assert r.status == "failed", (r.status, r.detail)
    assert not r.detail.startswith(BROKEN_MUTANT), f"the mutant itself is broken: {r.detail}"


@pytest.mark.parametrize("d", [3, 32, 768])
def test_emb_8_rejects_wrong_geometry(d: int) -> None:
    """EMB-8 needs nothing from a target; its test has power: cosines of directions drawn from the positive orthant
    (uniform entries) fail the law EMB-8 checks, while Gaussian directions from the same generator pass it."""
    g = torch.Generator().manual_seed(0)
    orthant = F.cosine_similarity(torch.rand(2000, d, generator=g, dtype=torch.float64),
                                  torch.rand(2000, d, generator=g, dtype=torch.float64), dim=1).numpy()
    with pytest.raises(AssertionError):
        check_cosine_law(orthant, d, 1e-4)
    gauss = F.cosine_similarity(torch.randn(2000, d, generator=g, dtype=torch.float64),
                                torch.randn(2000, d, generator=g, dtype=torch.float64), dim=1).numpy()
    check_cosine_law(gauss, d, 1e-4)


def test_live_model_refuses_a_copy() -> None:
    """Claims that edit weights report 'not exposed' when reference_model() hands out a copy."""

    class Copying(ReferenceTarget):
        def reference_model(self) -> reference.Transformer:
            clone = reference.build(self.model.cfg)
            clone.load_state_dict(self.model.state_dict())
            return clone

    r = run("TOK-5", _builds(Copying)(reference.build(reference.preset("gpt2-tiny"))), FAIL)
    assert r.status in ("not exposed", "no converter for this target"), (r.status, r.detail)
    assert "copy" in r.detail


class NormedLookupOffByOne(ReferenceTarget):
    """Bloom (a LayerNorm after the lookup) whose lookup reads row t + 1: the exposed table is one row off."""

    def embedding_matrix(self) -> Tensor:
        return super().embedding_matrix().roll(-1, dims=0)


@pytest.mark.parametrize("claim_id", ["EMB-1", "EMB-3"])
def test_lookup_through_an_embedding_norm_is_checked_not_skipped(claim_id: str) -> None:
    """Issue #12: after an embedding norm EMB-1 and EMB-3 used to return early; a lookup of row t + 1 passed them on
    bloom-tiny. Now embed(ids) must be a per-coordinate affine function of the normalised rows E[ids]."""
    ok = run(claim_id, ReferenceTarget.from_preset("bloom-tiny"), PASS)
    assert ok.status == "passed", (ok.detail, ok.counterexample)
    bad = run(claim_id, NormedLookupOffByOne.from_preset("bloom-tiny"), FAIL)
    assert bad.status == "failed" and "affine function of the normalised rows" in bad.detail, (bad.status, bad.detail)
