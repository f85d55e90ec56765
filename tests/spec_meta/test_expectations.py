"""Expected deviations: the committed spec/targets/expectations/ folder, strictness, and the plugin's use of them.

A listed deviation whose claim fails is reported as an expected deviation (xfail in
pytest); one whose claim passes is a failure, so a stale entry cannot hide a later
regression. The built-in targets' files live in spec/targets/expectations/ and every entry there must
name a claim of the catalog and give a reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import settings
from torch import Tensor

from spec.catalog import CATALOG, load_all
from spec.conformance import PEER_TARGETS
from spec.expectations import BUILTIN, Deviation, file_name, for_target, load
from spec.expectations import entries as expectation_entries
from spec.runner import DEVIATION, FAILED, PASSED, examples_for, run_claim
from spec.target import Target
from spec.targets.reference_target import ReferenceTarget
from spec.targets.registry import BUILTIN_TARGETS

ROOT = Path(__file__).resolve().parents[2]
FAST = settings(max_examples=3, derandomize=True, database=None)
load_all()


class Jittery(Target):
    """Fresh random logits on every call: violates GEN-4 (same input, same logits)."""

    name = "jittery"
    vocab_size = 11

    def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return torch.randn(*ids.shape, self.vocab_size)


def test_file_name_replaces_colons_and_slashes() -> None:
    assert file_name("hf:falcon-new") == "hf-falcon-new.toml"
    assert file_name("pkg.mod:build/x") == "pkg.mod-build-x.toml"


def test_for_target_reads_a_file_or_a_folder(tmp_path: Path) -> None:
    (tmp_path / "hf-gpt2.toml").write_text('[[deviation]]\nclaim = "GEN-4"\nreason = "r"\n')
    assert for_target(tmp_path, "hf:gpt2", {"GEN-4"}) == {"GEN-4": Deviation("GEN-4", "r")}
    assert for_target(tmp_path / "hf-gpt2.toml", "anything", {"GEN-4"}) == {"GEN-4": Deviation("GEN-4", "r")}
    assert for_target(tmp_path, "hf:llama", {"GEN-4"}) == {}  # no file: nothing expected
    with pytest.raises(FileNotFoundError, match="does not exist"):
        for_target(tmp_path / "typo", "hf:gpt2", {"GEN-4"})


def test_expectations_refuse_an_empty_catalog(tmp_path: Path) -> None:
    """Read before the claims are registered, every entry would be dropped as unknown: loud, not silent."""
    (tmp_path / "llamacpp-smollm2.toml").write_text('[[deviation]]\nclaim = "TOK-1"\nreason = "r"\n')
    with pytest.raises(ValueError, match="load the catalog first"):
        for_target(tmp_path, "llamacpp:smollm2", set())


def test_listed_deviation_that_fails_is_expected_and_one_that_passes_is_a_failure() -> None:
    dev = Deviation("GEN-4", "known")
    failing = run_claim(CATALOG["GEN-4"], Jittery(), profile=FAST, deviation=dev)
    assert failing.status == DEVIATION and failing.detail.startswith("known |")
    passing = run_claim(CATALOG["GEN-4"], ReferenceTarget.from_preset("gpt2-tiny"), profile=FAST, deviation=dev)
    assert passing.status == FAILED and "remove the entry" in passing.detail
    assert run_claim(CATALOG["GEN-4"], ReferenceTarget.from_preset("gpt2-tiny"), profile=FAST).status == PASSED


def test_committed_expectations_name_real_claims_and_builtin_targets() -> None:
    folder = BUILTIN
    files = sorted(folder.glob("*.toml"))
    assert files, "expectations/ holds the built-in targets' deviations"
    known_files = {file_name(t) for t in (*BUILTIN_TARGETS, *PEER_TARGETS)}
    for f in files:
        if f.name.startswith("_"):  # a shared file, adopted through `include`
            continue
        assert f.name in known_files, f"{f.name} belongs to no built-in or peer target"
        entries = expectation_entries(f)
        assert entries, f"{f.name} lists no deviation"
        for e in entries:
            assert e["claim"] in CATALOG, f"{f.name}: {e['claim']} is not a claim"
            assert len(str(e["reason"]).split()) >= 8, f"{f.name}: {e['claim']} needs a reason that says what differs"
        assert len({e["claim"] for e in entries}) == len(entries), f"{f.name} lists a claim twice"


def test_a_target_cap_limits_model_claims_only() -> None:
    """Target.max_examples (SmolLM2) caps claims that run the model, not TR claims or tokenizer/sampler claims."""
    capped = ReferenceTarget.from_preset("gpt2-tiny")
    capped.max_examples = 2
    assert examples_for(CATALOG["ATT-4"], capped, 25) == 2  # logits only: runs the model
    assert examples_for(CATALOG["ATT-4"], ReferenceTarget.from_preset("gpt2-tiny"), 25) == 25
    assert examples_for(CATALOG["TOK-1"], capped, 25) == 25  # tokenizer only
    assert examples_for(CATALOG["TR-1"], capped, 25) == CATALOG["TR-1"].max_examples  # its own count
    assert examples_for(CATALOG["EMB-8"], capped, 25) == 2  # min of the claim's 5 and the cap


def test_ini_option_names_the_folder_and_command_line_overrides_it(tmp_path: Path) -> None:
    """A real pytest run: GEN-4 listed for a target that passes it fails, for one that violates it xfails."""
    (tmp_path / "pytest.ini").write_text("[pytest]\nnext_token_spec_expectations = exp\n")
    (tmp_path / "jittery_target.py").write_text(  # the same target as Jittery above, importable by the run
        "import torch\nfrom spec.target import Target\n\n\nclass Jittery(Target):\n    vocab_size = 11\n\n"
        "    def logits(self, ids, attention_mask=None):\n        return torch.randn(*ids.shape, 11)\n\n\n"
        "def build():\n    return Jittery()\n")
    (tmp_path / "exp").mkdir()
    listing = '[[deviation]]\nclaim = "GEN-4"\nreason = "listed for the test"\n'
    (tmp_path / "exp" / "reference-gpt2-tiny.toml").write_text(listing)
    (tmp_path / "exp" / "jittery_target-build.toml").write_text(listing)
    (tmp_path / "empty").mkdir()
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]), "OMP_NUM_THREADS": "1"}

    def run(*extra: str) -> str:
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q", "-rA", "-k", "GEN-4",
               "--target", "reference:gpt2-tiny", "--target", "jittery_target:build", "--hypothesis-profile", "ci",
               *extra]
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
        return done.stdout + done.stderr

    def outcome(out: str, target: str) -> str:
        """The short-summary word (PASSED, FAILED, XFAIL) of the target's GEN-4 item."""
        item = f"claim[{target}|cpu|GEN-4]"
        return next((line.split()[0] for line in out.splitlines() if item in line and line.split()[0].isupper()),
                    f"no summary line for {item}")

    out = run()
    assert outcome(out, "reference:gpt2-tiny") == "FAILED" and "remove the entry" in out, out
    assert outcome(out, "jittery_target:build") == "XFAIL", out
    out = run("--expectations", str(tmp_path / "empty"))
    assert outcome(out, "reference:gpt2-tiny") == "PASSED", out
    assert outcome(out, "jittery_target:build") == "FAILED", out


def test_include_adopts_shared_entries_and_rejects_cycles_and_repeats(tmp_path: Path) -> None:
    shared = '[[deviation]]\nclaim = "DEC-3"\nreason = "ties at the k-th place survive"\n'
    (tmp_path / "_shared.toml").write_text(shared)
    (tmp_path / "t.toml").write_text('include = ["_shared.toml"]\n[[deviation]]\nclaim = "TOK-1"\nreason = "r"\n')
    assert sorted(load(tmp_path / "t.toml", set(CATALOG))) == ["DEC-3", "TOK-1"]
    (tmp_path / "twice.toml").write_text('include = ["_shared.toml"]\n' + shared)
    with pytest.raises(ValueError, match="DEC-3 is listed twice"):
        load(tmp_path / "twice.toml", set(CATALOG))
    (tmp_path / "a.toml").write_text('include = ["b.toml"]\n')
    (tmp_path / "b.toml").write_text('include = ["a.toml"]\n')
    with pytest.raises(ValueError, match="include cycle"):
        load(tmp_path / "a.toml", set(CATALOG))
    (tmp_path / "bad.toml").write_text('include = "_shared.toml"\n')
    with pytest.raises(ValueError, match="include must be a list"):
        load(tmp_path / "bad.toml", set(CATALOG))


def test_check_applies_the_committed_expectations_by_default_as_pytest_does(
        smollm2_available: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`check smollm2` reads spec/targets/expectations/ like the plugin; --expectations replaces, --no-expectations
    disables; both together is a usage error (exit 2)."""
    from spec.cli import main

    assert "TOK-1" in for_target(BUILTIN, "smollm2", set(CATALOG))
    assert main(["check", "smollm2", "--claim", "TOK-1"]) == 0
    assert "expected deviation" in capsys.readouterr().out
    assert main(["check", "smollm2", "--claim", "TOK-1", "--no-expectations"]) == 1
    out = capsys.readouterr().out
    assert "failed" in out and "expected deviation" not in out
    (tmp_path / "none").mkdir()
    assert main(["check", "smollm2", "--claim", "TOK-1", "--expectations", str(tmp_path / "none")]) == 1
    capsys.readouterr()
    assert main(["check", "smollm2", "--claim", "TOK-1", "--no-expectations", "--expectations", "x"]) == 2
