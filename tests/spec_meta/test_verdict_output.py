"""Issue #13: what `check` (and the plugin) print while it runs and when a claim fails.

One line per claim as it finishes and a progress indicator while one runs; a wall-clock budget on shrinking; every
failure's counterexample as values (each draw by its label); a reproducer that keeps every option of the run.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import settings
from hypothesis import strategies as st

from reference.config import ModelConfig
from spec import report, strategies
from spec.catalog import Claim, ordered
from spec.cli import Stream, main
from spec.runner import (
    CUT_SHORT,
    FAILED,
    NOT_SHRUNK,
    PASSED,
    SHRUNK,
    Invocation,
    Progress,
    Result,
    format_value,
    run_claim,
)
from spec.target import Target

DERANDOMIZED = settings(max_examples=50, derandomize=True, database=None)
# the check line of one claim: ID, status, examples, seconds
CLAIM_LINE = re.compile(r"^(\S+)\s+(passed|failed|not exposed|expected deviation|needs a trained model)\s+(\d+) "
                        r"examples\s+[\d.]+ s")


class LogitsOnly(Target):
    name = "logits-only"
    vocab_size = 11

    def logits(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.zeros(*ids.shape, 11)


def _claim(check: object, cid: str = "ZZZ-7") -> Claim:
    return Claim(cid, "a claim for testing", "nowhere §0", (), "exact", check)  # type: ignore[arg-type]


# -- streaming ---------------------------------------------------------------------------------------------
def _claim_lines(out: str) -> list[tuple[str, str, int]]:
    """(claim, status, examples) of each streamed claim line, before the table."""
    head = out.split("\nclaim ")[0]
    return [(m[1], m[2], int(m[3])) for line in head.splitlines() if (m := CLAIM_LINE.match(line))]


def test_check_streams_one_line_per_claim_in_catalog_order(capsys: pytest.CaptureFixture[str]) -> None:
    # in this process (-j 1): claims finish in catalog order; with workers they stream as they finish (test_jobs.py)
    assert main(["check", "reference:gpt2-tiny", "--claim", "EMB-5", "--claim", "EMB-1", "--profile", "ci",
                 "-j", "1"]) == 0
    out = capsys.readouterr().out
    lines = _claim_lines(out)
    order = [c.id for c in ordered() if c.id in ("EMB-1", "EMB-5")]
    assert [c for c, _, _ in lines] == order, out
    assert all(status == "passed" and n > 0 for _, status, n in lines), out
    assert out.index("EMB-1 ") < out.index("\nclaim "), "the claim lines come before the table"


def test_check_quiet_prints_the_table_and_no_claim_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "reference:gpt2-tiny", "--claim", "EMB-5", "--profile", "ci", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert _claim_lines(out) == [] and not out.startswith("target ")
    assert out.startswith("claim ") and re.search(r"^EMB-5 .* passed", out, re.M), out


def _result(claim: str = "EMB-1", status: str = PASSED) -> Result:
    return Result(claim, "s", "t", status, examples=25, seconds=1.5)


def test_stream_on_a_terminal_rewrites_one_progress_line_then_clears_it() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    s = Stream(out)
    s.progress(Progress("EMB-1", 3, 25, 0.5))
    s.done(_result())
    text = out.getvalue()
    assert text.startswith("\r\033[K") and "EMB-1: 3/25 examples" in text
    last = text.split("\r\033[K")[-1]
    assert CLAIM_LINE.match(last) and last.endswith("\n") and last.count("\n") == 1, repr(text)


def test_stream_into_a_pipe_writes_whole_lines_and_only_for_long_claims() -> None:
    out = io.StringIO()  # not a terminal
    s = Stream(out, every=10.0)
    s.progress(Progress("EMB-1", 3, 25, 0.5))
    assert out.getvalue() == "", "a short claim prints no progress into a pipe"
    s.progress(Progress("EMB-1", 20, 25, 12.0))
    s.progress(Progress("EMB-1", 21, 25, 12.5))  # within 10 s of the last: nothing
    s.progress(Progress("EMB-1", 1, 25, 13.0, shrinking=True, shrink_tries=4))
    s.done(_result())
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 2, lines
    assert "EMB-1: 20/25 examples, 12 s" in lines[0] and CLAIM_LINE.match(lines[1])


# -- the shrink budget ----------------------------------------------------------------------------------------
def _slow_failing_check(target: Target, data: st.DataObject) -> None:
    """Fails for x >= 3 whatever the list; every example sleeps, so shrinking the list takes many slow calls."""
    x = data.draw(st.integers(0, 1000), label="x")
    data.draw(st.lists(st.integers(0, 1000), min_size=5, max_size=20), label="padding")
    time.sleep(0.2)
    assert x < 3, f"x={x} is too big"


def test_shrinking_stops_at_its_budget_and_reports_the_smallest_example_so_far() -> None:
    """A behaviour test with a wide margin, not a benchmark: unbounded, this shrink takes well over a minute."""
    started = time.perf_counter()
    r = run_claim(_claim(_slow_failing_check), LogitsOnly(), profile=DERANDOMIZED,
                  invocation=Invocation(shrink_seconds=1.0))
    elapsed = time.perf_counter() - started
    assert r.status == FAILED and r.shrink == CUT_SHORT, (r.shrink, r.detail)
    assert elapsed < 15, f"shrinking ran {elapsed:.1f} s past a 1 s budget"
    drawn = dict(r.draws)
    assert int(drawn["x"]) >= 3 and f"x={drawn['x']} is too big" in r.detail, "the reported example is a failing one"
    assert "cut short by the 1 s budget" in report.failures([r]) and "--shrink-seconds 1" in r.reproduce


def test_zero_seconds_skips_shrinking_and_no_budget_shrinks_fully() -> None:
    def check(target: Target, data: st.DataObject) -> None:
        x = data.draw(st.integers(0, 1000), label="x")
        assert x < 3, f"x={x} is too big"

    raw = run_claim(_claim(check), LogitsOnly(), profile=DERANDOMIZED, invocation=Invocation(shrink_seconds=0))
    assert raw.status == FAILED and raw.shrink == NOT_SHRUNK and "(not shrunk)" in report.failures([raw])
    full = run_claim(_claim(check), LogitsOnly(), profile=DERANDOMIZED, invocation=Invocation(shrink_seconds=None))
    assert full.shrink == SHRUNK and dict(full.draws) == {"x": "3"}, full.draws
    assert "--shrink-seconds inf" in full.reproduce


# -- the counterexample as values --------------------------------------------------------------------------------
def _tensor_claim(target: Target, data: st.DataObject) -> None:
    """Fails on every example, with a small tensor, a large one, a config and a number drawn."""
    data.draw(st.just(torch.tensor([[3, 1, 4]])), label="ids")
    data.draw(st.just(torch.arange(600, dtype=torch.float32).reshape(2, 300) / 8), label="hidden")
    data.draw(strategies.configs(), label="config")
    data.draw(st.floats(0.5, 2.0), label="temperature")
    raise AssertionError("the logits are wrong")


def test_a_failure_shows_every_draw_by_label_as_values_not_a_traceback(tmp_path: Path) -> None:
    r = run_claim(_claim(_tensor_claim), LogitsOnly(), profile=DERANDOMIZED)
    assert r.status == FAILED
    assert [label for label, _ in r.draws] == ["ids", "hidden", "config", "temperature"]
    drawn = dict(r.draws)
    assert drawn["ids"] == "tensor [1, 3] int64 [[3, 1, 4]]"
    assert drawn["hidden"].startswith("tensor [2, 300] float32: first entries [0, 0.125, 0.25,")
    assert "max 74.875" in drawn["hidden"] and "74.75" not in drawn["hidden"], "large tensors are summarised"
    assert drawn["config"].startswith("ModelConfig(") and "unembed_bias=" in drawn["config"], "a config in full"
    story = report.failures([r])
    for part in ("source: nowhere §0", "tolerance: exact", "the logits are wrong", "  ids: tensor [1, 3]",
                 "  temperature: ", "reproduce: next-token-spec check logits-only --claim ZZZ-7"):
        assert part in story, part
    assert "Traceback" not in story and "File \"" not in story
    for ext in ("json", "md", "xml"):
        report.write(tmp_path / f"r.{ext}", [r], suite="s")
    assert json.loads((tmp_path / "r.json").read_text())[0]["draws"][0] == ["ids", drawn["ids"]]
    md = (tmp_path / "r.md").read_text()
    assert "## Failures" in md and md.index("## Failures") > md.index("| ZZZ-7 |") and drawn["ids"] in md
    assert drawn["ids"] in (tmp_path / "r.xml").read_text() and "Traceback" not in md


def test_format_value_prints_configs_whole_and_lists_of_tensors_item_by_item() -> None:
    cfg = ModelConfig(vocab_size=13, d_model=8, n_layers=2, n_heads=2)
    text = format_value(cfg)
    assert all(f"{f.name}=" in text for f in dataclasses.fields(cfg)) and len(text.splitlines()) > 1
    pair = format_value([torch.tensor([1.5]), torch.tensor([True])])
    assert pair == "[tensor [1] float32 [1.5],\n tensor [1] bool [True]]"
    assert "2 non-finite" in format_value(torch.tensor([float("nan"), float("inf")] + [1.0] * 100))


# -- the reproducer ---------------------------------------------------------------------------------------------
def _stale_expectation(tmp_path: Path) -> Path:
    """An expectations file listing EMB-5, which passes on the reference: a stale entry fails the run."""
    f = tmp_path / "stale.toml"
    f.write_text('[[deviation]]\nclaim = "EMB-5"\nreason = "not really"\n', encoding="utf-8")
    return f


def test_the_reproducer_keeps_every_option_and_reproduces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _stale_expectation(tmp_path)
    args = ["check", "reference:gpt2-tiny", "--claim", "EMB-5", "--profile", "ci", "--device", "cpu", "--dtype",
            "float64", "--expectations", str(f), "--seed", "7", "--shrink-seconds", "2"]
    assert main(args) == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("reproduce: "))
    words = shlex.split(line.removeprefix("reproduce: "))
    assert words[:2] == ["next-token-spec", "check"]
    for option, value in (("--expectations", str(f)), ("--profile", "ci"), ("--device", "cpu"),
                          ("--dtype", "float64"), ("--seed", "7"), ("--shrink-seconds", "2"),
                          ("--claim", "EMB-5")):
        assert words[words.index(option) + 1] == value, (option, line)
    assert main(words[1:]) == 1, "the reproducer reproduces the failure"
    assert "remove the entry" in capsys.readouterr().out


def test_the_reproducer_says_no_expectations_when_they_were_off() -> None:
    how = Invocation(target_spec="hf:gpt2", profile="dev", device="cuda", dtype="bfloat16", no_expectations=True)
    words = shlex.split(how.command("ATT-2", LogitsOnly()))
    assert "--no-expectations" in words and "--expectations" not in words
    assert words[words.index("--device") + 1] == "cuda" and words[words.index("--dtype") + 1] == "bfloat16"
    assert words[words.index("--shrink-seconds") + 1] == "5" and "--seed" not in words


def test_the_plugin_reports_examples_seconds_and_the_full_failure(tmp_path: Path) -> None:
    """-v shows each claim with its examples and seconds; a failure shows the check command that reproduces it."""
    folder = tmp_path / "expect"
    folder.mkdir()
    _stale_expectation(tmp_path).rename(folder / "reference-gpt2-tiny.toml")
    cmd = [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", "-v", "--hypothesis-profile",
           "ci", "--target", "reference:gpt2-tiny", "-k", "EMB-5 or EMB-1]", "--expectations", str(folder),
           "--shrink-seconds", "3", "--dtype", "float64"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert re.search(r"EMB-1\] PASSED \(25 examples, [\d.]+ s\)", out), out
    assert re.search(r"EMB-5\] FAILED \(\d+ examples, [\d.]+ s\)", out), out
    line = next(x for x in out.splitlines() if x.startswith("reproduce: "))
    for part in (f"--expectations {folder}", "--profile ci", "--dtype float64", "--shrink-seconds 3"):
        assert part in line, (part, line)
