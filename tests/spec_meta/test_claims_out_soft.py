"""Meta-tests of claims OUT-1 .. OUT-7 and SOFT-1 .. SOFT-7 (spec/claims/out.py, spec/claims/soft.py).

Each claim must pass on the reference (several presets for OUT, float32 and float64)
and fail on a reference whose one method carries a realistic bug. Hypothesis runs
derandomized; the failing runs skip shrinking (only the verdict matters here).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from torch import Tensor

import reference
from spec.catalog import CATALOG, load_all
from spec.runner import Result, run_claim
from spec.target import Target
from spec.targets.reference_target import ReferenceTarget

load_all()

BROKEN_MUTANT = ("TypeError", "AttributeError", "NameError")  # a crash in the mutant is no kill
PASS = settings(max_examples=12, derandomize=True, database=None)
FAIL = settings(max_examples=40, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.reuse, Phase.generate])

OUT_CLAIMS = [f"OUT-{i}" for i in range(1, 8)]
SOFT_CLAIMS = [f"SOFT-{i}" for i in range(1, 8)]
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])


def run(claim_id: str, target: Target, profile: settings) -> Result:
    return run_claim(CATALOG[claim_id], target, profile=profile)


@DTYPES
@pytest.mark.parametrize("preset", ["gpt2-tiny", "llama-tiny", "mqa-sinusoidal"])
@pytest.mark.parametrize("claim_id", OUT_CLAIMS)
def test_out_passes_on_reference(claim_id: str, preset: str, dtype: torch.dtype) -> None:
    r = run(claim_id, ReferenceTarget.from_preset(preset, dtype=dtype), PASS)
    assert r.status == ("illustrated" if CATALOG[claim_id].illustration else "passed"), (r.detail, r.counterexample)
    assert r.notes == {}, r.notes  # random tables have no zero or repeated rows: nothing set aside


@DTYPES
@pytest.mark.parametrize("claim_id", SOFT_CLAIMS)
def test_soft_passes_on_reference(claim_id: str, dtype: torch.dtype) -> None:
    r = run(claim_id, ReferenceTarget.from_preset("llama-tiny", dtype=dtype), PASS)
    assert r.status == ("illustrated" if CATALOG[claim_id].illustration else "passed"), (r.detail, r.counterexample)


# -- mutants: each overrides exactly one method with a realistic bug -------------------------
class DropsBias(ReferenceTarget):
    """An adapter that forgets the output bias when exposing the unembedding."""

    def unembedding(self) -> tuple[Tensor, Tensor | None]:
        return self.model.W_U.detach(), None


class NormedLastState(ReferenceTarget):
    """The last residual state is handed out after the final norm (applied twice by OUT-1's read-out)."""

    @torch.no_grad()
    def residual_states(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        states = self.model(ids, attention_mask, return_states=True).states
        assert states is not None
        return (*states[:-1], self.model.final_norm(states[-1]))


class SigmoidSoftmax(ReferenceTarget):
    """Independent sigmoids in place of a softmax (binary/multiclass mix-up)."""

    def softmax(self, logits: Tensor, temperature: float = 1.0) -> Tensor:
        return torch.sigmoid(logits / temperature) if temperature > 0 else reference.softmax(logits, 0.0)


class UnembedsWithE(ReferenceTarget):
    """An untied model whose adapter falls back to the embedding table for the output matrix."""

    def unembedding(self) -> tuple[Tensor, Tensor | None]:
        return self.model.E.detach().T, None if self.model.b_U is None else self.model.b_U.detach()


class PaddingRow(ReferenceTarget):
    """An embedding table whose row 0 is a zero padding row."""

    def embedding_matrix(self) -> Tensor:
        E = self.model.E.detach().clone()
        E[0] = 0
        return E


class PairedRows(ReferenceTarget):
    """A loader bug that fills rows 2k and 2k + 1 with the same vector."""

    def embedding_matrix(self) -> Tensor:
        E = self.model.E.detach()
        return E[torch.arange(E.shape[0]) // 2 * 2]


class TiledColumns(ReferenceTarget):
    """A loader with the wrong stride: the first d / 8 columns of E repeated across the width (rank d / 8)."""

    def embedding_matrix(self) -> Tensor:
        E = self.model.E.detach()
        w = E.shape[1] // 8
        return E[:, torch.arange(E.shape[1]) % w]


class ScaledPairs(ReferenceTarget):
    """A quantised loader that copies row 2k's codes into row 2k + 1 but keeps row 2k + 1's own scale: the two rows
    point the same way with different lengths (never bit-identical)."""

    def embedding_matrix(self) -> Tensor:
        E = self.model.E.detach()
        scale = E.norm(dim=1, keepdim=True) / E[torch.arange(E.shape[0]) // 2 * 2].norm(dim=1, keepdim=True)
        return E[torch.arange(E.shape[0]) // 2 * 2] * scale


class TransposedU(ReferenceTarget):
    """Hands out U as stored by nn.Linear ([V, d]) without transposing it."""

    def unembedding(self) -> tuple[Tensor, Tensor | None]:
        return self.model.W_U.detach().T.contiguous(), None


class ShiftedLogits(ReferenceTarget):
    """Off by one: position i returns the logits meant for position i + 1 (the last is repeated)."""

    @torch.no_grad()
    def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        z = self.model(ids, attention_mask).logits
        return torch.cat([z[:, 1:], z[:, -1:]], dim=1)


class UnnormalisedSoftmax(ReferenceTarget):
    """Forgets to divide by the sum."""

    def softmax(self, logits: Tensor, temperature: float = 1.0) -> Tensor:
        if temperature == 0:
            return reference.softmax(logits, 0.0)
        z = logits / temperature
        return torch.exp(z - z.amax(dim=-1, keepdim=True))


class SortedSoftmax(ReferenceTarget):
    """Returns the probabilities in sorted order (the sampling code's sort never scattered back)."""

    def softmax(self, logits: Tensor, temperature: float = 1.0) -> Tensor:
        return torch.sort(reference.softmax(logits, temperature), dim=-1, descending=True).values


class NaiveSoftmax(ReferenceTarget):
    """exp(z) / sum exp(z) without subtracting the maximum first."""

    def softmax(self, logits: Tensor, temperature: float = 1.0) -> Tensor:
        if temperature == 0:
            return reference.softmax(logits, 0.0)
        e = torch.exp(logits / temperature)
        return e / e.sum(dim=-1, keepdim=True)


class MultipliedTemperature(ReferenceTarget):
    """Multiplies the logits by T instead of dividing."""

    def softmax(self, logits: Tensor, temperature: float = 1.0) -> Tensor:
        if temperature == 0:
            return reference.softmax(logits, 0.0)
        return torch.softmax(logits * temperature, dim=-1)


MUTANTS = [
    ("OUT-1", DropsBias, "mqa-sinusoidal"),
    ("OUT-1", NormedLastState, "gpt2-tiny"),
    ("OUT-2", SigmoidSoftmax, "gpt2-tiny"),
    ("OUT-3", UnembedsWithE, "llama-tiny"),
    ("OUT-4", TiledColumns, "gpt2-tiny"),
    ("OUT-5", ScaledPairs, "gpt2-tiny"),
    ("OUT-6", TransposedU, "llama-tiny"),
    ("OUT-7", ShiftedLogits, "gpt2-tiny"),
    ("SOFT-1", UnnormalisedSoftmax, "gpt2-tiny"),
    ("SOFT-2", SortedSoftmax, "gpt2-tiny"),
    ("SOFT-3", NaiveSoftmax, "gpt2-tiny"),
    ("SOFT-4", MultipliedTemperature, "gpt2-tiny"),
    ("SOFT-5", MultipliedTemperature, "gpt2-tiny"),
    ("SOFT-6", MultipliedTemperature, "gpt2-tiny"),
    ("SOFT-7", NaiveSoftmax, "gpt2-tiny"),
]


@DTYPES
@pytest.mark.parametrize(("claim_id", "cls", "preset"), MUTANTS,
                         ids=[f"{c}-{cls.__name__}" for c, cls, _ in MUTANTS])
def test_fails_on_mutant(claim_id: str, cls: type[ReferenceTarget], preset: str, dtype: torch.dtype) -> None:
    r = run(claim_id, cls.from_preset(preset, dtype=dtype), FAIL)
    assert r.status == "failed", (r.status, r.detail)
    assert not r.detail.startswith(BROKEN_MUTANT), f"the mutant itself is broken: {r.detail}"


# -- OUT-4, OUT-5, OUT-6 on zero and repeated rows: facts about the weights, set aside and noted ---------------
GEOMETRY = ["OUT-4", "OUT-5", "OUT-6"]
SET_ASIDE = "neither exactly zero nor repeated"  # the words of the failure when too few rows are left


def hf_padded(family: str, pad: int, **extra: object) -> Target:
    """A tiny HF model with HF's own initialisation, which zeroes the padding row (nn.Embedding(padding_idx)); tied."""
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM

    from spec.targets.hf_presets import family_config
    from spec.targets.hf_target import HFTarget

    torch.manual_seed(0)
    cfg = family_config(family, vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        pad_token_id=pad, **extra)
    target = HFTarget(AutoModelForCausalLM.from_config(cfg, attn_implementation="eager"), name=f"hf-{family}")
    E = target.embedding_matrix()
    assert [int(i) for i in (E == 0).all(dim=1).nonzero()] == [pad]  # the premise: HF zeroed exactly that row
    assert torch.equal(target.unembedding()[0], E.T)  # tied, so OUT-6 meets the zero column too
    return target


PADDED = [("llama", 2, {"num_key_value_heads": 2, "intermediate_size": 64, "tie_word_embeddings": True}),
          ("opt", 1, {"ffn_dim": 64, "dropout": 0.0})]


@pytest.mark.parametrize(("family", "pad", "extra"), PADDED, ids=[f for f, _, _ in PADDED])
@pytest.mark.parametrize("claim_id", GEOMETRY)
def test_geometry_passes_hf_with_padding_row(claim_id: str, family: str, pad: int, extra: dict[str, object]) -> None:
    r = run(claim_id, hf_padded(family, pad, **extra), PASS)
    assert r.status == "illustrated", (r.detail, r.counterexample)
    topic = "zero columns of U (excluded)" if claim_id == "OUT-6" else "zero rows of E (excluded)"
    assert list(r.notes) == [topic] and list(r.notes[topic]) == [f"[{pad}]"], r.notes


@pytest.mark.parametrize("claim_id", GEOMETRY)
def test_geometry_verdict_does_not_depend_on_the_seed(claim_id: str) -> None:
    """The OUT-4 flake: rows were judged only when drawn, so a padded model failed for some seeds and passed for
    others. Random seeds (as the dev profile) must now give the same verdict every time."""
    target = hf_padded(*PADDED[0][:2], **PADDED[0][2])
    for _ in range(3):
        r = run(claim_id, target, settings(max_examples=15, database=None))
        assert r.status == "illustrated", (r.detail, r.counterexample)


class EditedTable(ReferenceTarget):
    """A correct reference (tied gpt2-tiny) whose own weights have rows zeroed or repeated, as a checkpoint may.

    The model computes with the edited table, so embedding_matrix and unembedding are the reference's own.
    """

    @classmethod
    def with_rows(cls, zero: list[int], same: dict[int, list[int]], dtype: torch.dtype = torch.float32
                  ) -> EditedTable:
        target = cls.from_preset("gpt2-tiny", dtype=dtype)
        with torch.no_grad():
            E = target.model.embed.E
            for first, copies in same.items():
                E[copies] = E[first].clone()
            E[zero] = 0
        return target


@DTYPES
@pytest.mark.parametrize("claim_id", GEOMETRY)
def test_geometry_sets_aside_repeated_and_zero_rows(claim_id: str, dtype: torch.dtype) -> None:
    target = EditedTable.with_rows([0, 50], {5: [9, 11], 40: [7]}, dtype)
    r = run(claim_id, target, PASS)
    assert r.status == "illustrated", (r.detail, r.counterexample)
    what = "columns of U" if claim_id == "OUT-6" else "rows of E"
    kind = what.split()[0]
    assert {topic: list(seen) for topic, seen in r.notes.items()} == {
        f"zero {what} (excluded)": ["[0, 50]"],
        f"repeated {what} (excluded)": [f"5 {kind} in 2 groups: {{5, 9, 11}}, {{7, 40}}"]}


@pytest.mark.parametrize("claim_id", ["OUT-4", "OUT-5"])
def test_mostly_zero_table_checks_the_rest(claim_id: str) -> None:
    """89 of 97 rows zero: any draw over all rows would land on one, so only setting them aside first can pass; the
    long list is truncated with a count."""
    target = EditedTable.with_rows(list(range(8, 97)), {})
    r = run(claim_id, target, PASS)
    assert r.status == "illustrated", (r.detail, r.counterexample)
    assert list(r.notes["zero rows of E (excluded)"]) == ["[8, 9, 10, 11, 12, 13, 14, 15, … +81 more]"]


# each overrides what it exposes so that no row (column) is left that is neither zero nor repeated, or one only
class AllZero(ReferenceTarget):
    def embedding_matrix(self) -> Tensor:
        return torch.zeros_like(self.model.E)

    def unembedding(self) -> tuple[Tensor, Tensor | None]:
        return torch.zeros_like(self.model.W_U), None


class AllPaired(PairedRows):
    def unembedding(self) -> tuple[Tensor, Tensor | None]:
        return self.embedding_matrix().T, None


class OneRowLeft(ReferenceTarget):
    """Every row but row 3 is zero."""

    def embedding_matrix(self) -> Tensor:
        E = torch.zeros_like(self.model.E)
        E[3] = self.model.E[3]
        return E

    def unembedding(self) -> tuple[Tensor, Tensor | None]:
        return self.embedding_matrix().T, None


@pytest.mark.parametrize("cls", [AllZero, AllPaired, OneRowLeft], ids=lambda c: c.__name__)
@pytest.mark.parametrize("claim_id", GEOMETRY)
def test_geometry_never_passes_on_nothing(claim_id: str, cls: type[ReferenceTarget]) -> None:
    r = run(claim_id, cls.from_preset("gpt2-tiny"), FAIL)
    assert r.status == "failed", (r.status, r.detail)
    assert SET_ASIDE in r.detail, r.detail
    assert r.notes, "what was set aside is still reported"


class PaddedTiledColumns(TiledColumns):
    def embedding_matrix(self) -> Tensor:
        E = super().embedding_matrix().clone()
        E[0] = 0
        return E


class PaddedScaledPairs(ScaledPairs):
    def embedding_matrix(self) -> Tensor:
        E = super().embedding_matrix().clone()
        E[[0, 1]] = 0
        return E


class PaddedTransposedU(TransposedU):
    def unembedding(self) -> tuple[Tensor, Tensor | None]:
        U = self.model.W_U.detach().clone()
        U[:, 0] = 0
        return U.T.contiguous(), None


@pytest.mark.parametrize(("claim_id", "cls"), [("OUT-4", PaddedTiledColumns), ("OUT-5", PaddedScaledPairs),
                                               ("OUT-6", PaddedTransposedU)], ids=lambda x: getattr(x, "__name__", x))
def test_setting_rows_aside_hides_no_bug(claim_id: str, cls: type[ReferenceTarget]) -> None:
    """The mutants above with a zero row added: the row is set aside and the bug is still caught."""
    r = run(claim_id, cls.from_preset("llama-tiny" if claim_id == "OUT-6" else "gpt2-tiny"), FAIL)
    assert r.status == "failed", (r.status, r.detail)
    assert SET_ASIDE not in r.detail and not r.detail.startswith(BROKEN_MUTANT), r.detail


def test_toy_example_numbers() -> None:
    """The published 4-decimal softmax of the toy logits is the exact one (the spec's record, OUT-2)."""
    z = torch.tensor([5.0, 6.0, 4.0, 2.0, 7.0, 4.0], dtype=torch.float64)
    p = torch.exp(z) / torch.exp(z).sum()
    assert [round(float(x), 4) for x in p] == [0.0841, 0.2286, 0.0309, 0.0042, 0.6213, 0.0309]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.data())
def test_repeated_rows_are_exact_groups_found_without_sorting_the_table(data: st.DataObject) -> None:
    """repeated_rows keys rows by a hash and compares only rows sharing a key; its groups equal a brute-force
    bit-for-bit grouping (0.0 and -0.0 differ; a NaN row repeats itself bit for bit), in every width of float."""
    from spec.claims.out import repeated_rows

    dtype = data.draw(st.sampled_from([torch.float64, torch.float32, torch.float16, torch.bfloat16]), label="dtype")
    v, d = data.draw(st.integers(1, 40), label="v"), data.draw(st.integers(1, 6), label="d")
    pool = data.draw(st.lists(st.sampled_from([0.0, -0.0, 1.0, -1.5, 2.0 ** -20, float("nan"), float("inf")]),
                              min_size=v * d, max_size=v * d), label="entries")
    table = torch.tensor(pool, dtype=torch.float64).reshape(v, d).to(dtype)
    bits = [table[i].view(torch.uint8).tolist() for i in range(v)]
    brute: dict[tuple[int, ...], list[int]] = {}
    for i, b in enumerate(bits):
        brute.setdefault(tuple(b), []).append(i)
    assert repeated_rows(table) == sorted(g for g in brute.values() if len(g) > 1)


@given(st.data())
@settings(max_examples=200, deadline=None, database=None)
def test_the_bound_covers_a_large_perturbation_of_the_logits(data: st.DataObject) -> None:
    """softmax_error_bound's input_err: logits moved by up to d each (any size, as bfloat16 rounding 1030 to 1032 moves
    one by 2) must leave the exact softmax of the moved logits within the bound of the exact softmax of the others.
    The first-order term alone failed here (p moves by e^2, not 1 + 2 * 2: SOFT-3 failed the bfloat16 reference)."""
    from spec.oracles import exact_softmax, softmax_error_bound

    v = data.draw(st.integers(2, 12), label="V")
    z = torch.tensor(data.draw(st.lists(st.floats(-30, 30), min_size=v, max_size=v), label="z"), dtype=torch.float64)
    d = torch.tensor(data.draw(st.lists(st.floats(-3, 3), min_size=v, max_size=v), label="d"), dtype=torch.float64)
    moved = exact_softmax((z + d)[None], 1.0)
    bound = softmax_error_bound((z + d)[None], 1.0, 2.0**-53, 0.0, input_err=d[None], reference_z=z[None])
    assert bool(((moved - exact_softmax(z[None], 1.0)).abs() <= bound).all())


def test_soft_3_passes_on_the_bfloat16_reference() -> None:
    r = run("SOFT-3", ReferenceTarget.from_preset("llama-tiny", dtype=torch.bfloat16), PASS)
    assert r.status == "passed", (r.detail, r.counterexample)
